"""`derived "SUB" rebuild "CMD"` on the local backend: apply runs CMD itself after the service writing
the target has started, journals it as step `N+1`, and a resume does not run it again."""

from __future__ import annotations

from mdsl.run import journal as J
from run_helpers import apply


def plan_text(d) -> str:
    return f"""plan "rebuild"
host here {{ local = true }}
dir old_files on here {{
  path = "{d}/old"
  derived "cache" rebuild "test -e {d}/running && mkdir -p {d}/new/cache && echo rebuilt >> {d}/log"
}}
dir new_files on here {{
  path  = "{d}/new"
  fresh = true
}}
service new_app on here {{
  start     = "touch {d}/running"
  stop      = "rm -f {d}/running"
  status    = "test -e {d}/running"
  writes    = [new_files]
  initially = stopped
}}
steps {{
  sync old_files to new_files exclude "cache"
  start new_app
  run here "echo after >> {d}/log"
}}
"""


def test_apply_runs_the_rebuild_after_the_start_and_journals_it(tmp_path):
    (tmp_path / "old" / "cache").mkdir(parents=True)
    (tmp_path / "old" / "cache" / "avatar").write_text("x")
    (tmp_path / "old" / "notes").write_text("keep")
    plan = tmp_path / "rebuild.plan"
    plan.write_text(plan_text(tmp_path))
    code, out, err = apply(plan)
    assert code == 0, out + err
    assert (tmp_path / "new" / "notes").read_text() == "keep"
    assert not (tmp_path / "new" / "cache" / "avatar").exists()  # left behind, as the exclude says
    assert (tmp_path / "new" / "cache").is_dir()  # ... and rebuilt, once the app ran (the `test -e`)
    assert (tmp_path / "log").read_text().split() == ["rebuilt", "after"]
    assert "(step 2+1, not in the plan's steps: rebuilds old_files/cache)" in out
    state = J.read_journal(J.journal_path(str(plan)))
    assert state.steps["2+1"].status == "done"

    code, out, err = apply(plan)  # resume: everything is done, the rebuild does not run again
    assert code == 0, out + err
    assert (tmp_path / "log").read_text().split() == ["rebuilt", "after"]
