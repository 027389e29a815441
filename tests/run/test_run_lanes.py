"""`mdsl apply` of lanes on the local backend: a lane's steps in order, lanes at the same time,
a failure stops its lane only, and the journal resumes the lane at the step that failed."""

from __future__ import annotations

import json

from mdsl.compile import compile_plan
from mdsl.check import check_plan
from mdsl.run import journal as J
from mdsl.run.schedule import make_schedule
from mdsl.syntax.parser import parse_text
from run_helpers import apply

# Lane a waits for a file lane b makes, and b for one a makes: it can only finish if the two
# lanes run at the same time (each wait gives up after 60 s, so a wrong runner fails, not hangs).
WAIT = 'i=0; while [ ! -e {f} ]; do i=$((i+1)); [ $i -lt 6000 ] || exit 1; sleep 0.01; done'


def plan_text(d) -> str:
    log = d / "log"
    return f"""plan "lanes"
host here {{ local = true }}
steps {{
  parallel {{
    sequence {{
      run here "echo a1 >> {log}; touch {d}/a1"
      run here "{WAIT.format(f=f'{d}/b1')}; echo a2 >> {log}"
      run here "test -e {d}/go && echo a3 >> {log}"
    }}
    sequence {{
      run here "{WAIT.format(f=f'{d}/a1')}; echo b1 >> {log}; touch {d}/b1"
      run here "echo b2 >> {log}"
    }}
    run here "echo c >> {log}"
  }}
  run here "echo end >> {log}"
}}
"""


def lines(d):
    return (d / "log").read_text().split()


def test_lanes_run_in_order_and_at_the_same_time(tmp_path):
    (tmp_path / "go").touch()
    plan = tmp_path / "lanes.plan"
    plan.write_text(plan_text(tmp_path))
    code, out, err = apply(plan)
    assert code == 0, out + err
    got = lines(tmp_path)
    assert sorted(got) == ["a1", "a2", "a3", "b1", "b2", "c", "end"]
    assert got.index("a1") < got.index("b1") < got.index("a2") < got.index("a3")
    assert got.index("b1") < got.index("b2") and got[-1] == "end"
    assert "[1.1.3]" in out and "[1.2.2]" in out and "[1.3]" in out


def test_a_failure_stops_its_lane_and_resume_runs_the_rest_of_it(tmp_path):
    plan = tmp_path / "lanes.plan"
    plan.write_text(plan_text(tmp_path))
    code, out, err = apply(plan)
    assert code == 1
    assert "step 1.1.3" in err
    assert sorted(lines(tmp_path)) == ["a1", "a2", "b1", "b2", "c"]  # the other lane and member finished
    state = J.read_journal(J.journal_path(str(plan)))
    assert state.steps["1.1.3"].status == "failed" and state.steps["1.2.2"].status == "done"

    (tmp_path / "go").touch()
    code, out, err = apply(plan)
    assert code == 0, out + err
    assert lines(tmp_path)[5:] == ["a3", "end"]  # nothing done ran again


def test_in_a_lane_nothing_after_a_step_to_redo_counts_as_done(tmp_path):
    plan = tmp_path / "lanes.plan"
    plan.write_text(plan_text(tmp_path))
    compiled = compile_plan(check_plan(parse_text(plan.read_text(), str(plan))).bound)
    state = J.JournalState()
    for leaf in compiled.leaves():
        if leaf.id != "1.1.1":  # the first step of lane 1.1 changed; the journal has all the others
            state.steps[leaf.id] = J.StepState(leaf.id, leaf.fingerprint, "done")
    sched = make_schedule(compiled, state)
    # the rest of that lane runs again; the other lane and member stay done; what follows the block runs
    assert {k: v for k, v in sched.status.items() if v != "done"} == {"1.1.1": "pending", "1.1.2": "pending",
                                                                     "1.1.3": "pending", "2": "pending"}
    assert sched.start == 0


def test_the_json_log_names_each_lane_step(tmp_path, capsys):
    (tmp_path / "go").touch()
    plan = tmp_path / "lanes.plan"
    plan.write_text(plan_text(tmp_path))
    code, out, err = apply(plan)
    assert code == 0
    log = capsys.readouterr().err  # the JSON log goes to the process's stderr
    done = [json.loads(x)["step"] for x in log.splitlines() if x.startswith("{") and '"step.done"' in x]
    assert sorted(done) == ["1.1.1", "1.1.2", "1.1.3", "1.2.1", "1.2.2", "1.3", "2"]


def test_a_block_inside_a_lane_runs_its_members_at_once_then_the_lane_goes_on(tmp_path):
    d, log = tmp_path, tmp_path / "log"
    plan = tmp_path / "nested.plan"
    plan.write_text(f"""plan "nested"
host here {{ local = true }}
steps {{
  parallel {{
    sequence {{
      run here "echo first >> {log}"
      parallel {{
        run here "{WAIT.format(f=f'{d}/y')}; echo x >> {log}; touch {d}/x"
        sequence {{
          run here "echo y >> {log}; touch {d}/y"
          run here "{WAIT.format(f=f'{d}/x')}; echo y2 >> {log}"
        }}
      }}
      run here "echo last >> {log}"
    }}
    run here "echo other >> {log}"
  }}
}}
""")
    code, out, err = apply(plan)
    assert code == 0, out + err
    got = lines(d)
    assert sorted(got) == ["first", "last", "other", "x", "y", "y2"]
    assert got.index("first") < got.index("y") < got.index("x") < got.index("y2") < got.index("last")
    assert "[1.1.2.2.2]" in out
