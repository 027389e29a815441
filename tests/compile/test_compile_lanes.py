"""Compiling lanes: step ids `block.lane.step`, leaves in order, the threads a block runs in,
labels inside lanes, the point of no return inside a lane, and `mdsl plan`'s output."""

from __future__ import annotations

from pathlib import Path

from mdsl.check import check_plan
from mdsl.compile import compile_plan
from mdsl.run.commands import format_plan
from mdsl.syntax.parser import parse_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HEAD = (FIXTURES / "H201" / "good_lanes.plan").read_text(encoding="utf-8").split("\nsteps {")[0]

STEPS = """
steps {
  parallel {
    sequence {
      stop old_app1
      sync old_files1 to new_files1
      start new_app1
    }
    stop old_app2
    sequence {
      backup: dump old_db1 to old1:"/root/app.db"
      transfer old1:"/root/app.db" to new1:"/root/app.db"
    }
  }
  restore new1:"/root/app.db" into new_db1 replace
}
"""


def compiled(steps: str = STEPS):
    res = check_plan(parse_text(HEAD + steps, "lanes.plan"))
    return compile_plan(res.bound)


def test_ids_and_leaves_in_order():
    c = compiled()
    block, restore = c.steps
    assert block.is_parallel and [m.kind for m in block.members] == ["sequence", "stop", "sequence"]
    assert [m.id for m in block.members] == ["1.1", "1.2", "1.3"]
    assert block.members[0].is_sequence and block.members[0].summary == "sequence (3 steps)"
    assert [x.id for x in c.leaves()] == ["1.1.1", "1.1.2", "1.1.3", "1.2", "1.3.1", "1.3.2", "2"]
    assert [x.kind for x in block.leaves()] == ["stop", "sync", "start", "stop", "dump", "transfer"]
    assert restore.id == "2" and restore.path == (1,)
    assert block.members[2].members[1].path == (0, 2, 1)


def test_a_block_runs_one_thread_per_lane_and_member():
    block = compiled().steps[0]
    assert [[x.id for x in lane] for lane in block.lanes()] == [["1.1.1", "1.1.2", "1.1.3"], ["1.2"],
                                                               ["1.3.1", "1.3.2"]]
    assert [[x.id for x in lane] for lane in compiled().steps[1].lanes()] == [["2"]]


def test_a_label_inside_a_lane_is_found():
    c = compiled()
    assert c.by_label("backup").id == "1.3.1"
    assert c.by_label("nope") is None


def test_the_fingerprint_of_a_lane_follows_its_steps():
    a = compiled().steps[0].members[2]
    b = compiled(STEPS.replace('old1:"/root/app.db"\n      transfer', 'old1:"/root/other.db"\n      transfer')
                 .replace('transfer old1:"/root/app.db"', 'transfer old1:"/root/other.db"')).steps[0].members[2]
    assert a.fingerprint != b.fingerprint
    assert compiled().steps[0].members[0].fingerprint == compiled().steps[0].members[0].fingerprint


def test_a_start_after_its_data_in_the_same_lane_is_the_point_of_no_return():
    block = compiled().steps[0]
    start = block.members[0].members[2]
    assert start.kind == "start" and start.cutover
    assert block.cutover and block.members[0].cutover
    assert not block.members[0].members[1].cutover and not block.members[2].cutover


def test_mdsl_plan_shows_the_lanes_nested():
    text = format_plan(compiled())
    lines = text.splitlines()
    i = lines.index(next(x for x in lines if x.startswith("  [1.1] sequence (3 steps)")))
    assert lines[i + 1].startswith("    [1.1.1] stop old_app1    (stop, line ")
    assert lines[i + 2].startswith("        [old1] $ systemctl stop -- app")
    assert any(x.startswith("  [1.2] stop old_app2") for x in lines)
    assert any(x.startswith("    [1.3.1] backup: dump old_db1") for x in lines)
    assert "POINT OF NO RETURN" in next(x for x in lines if x.startswith("    [1.1.3] start new_app1"))
    assert any(x.startswith("[2] restore ") for x in lines)
