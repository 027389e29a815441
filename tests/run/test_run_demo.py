"""plans/demo.plan end to end on the local backend (in a temp dir), and the journal's resume story."""

from __future__ import annotations

import json
import os
import stat

import pytest

from run_helpers import app_running, apply, demo_rows, edit, tree_digest
from mdsl.run import journal as J
from mdsl.run.commands import status_command


def test_demo_plan_is_check_clean():
    from mdsl.check import check_plan
    from mdsl.syntax.parser import parse_file

    from run_helpers import REPO

    res = check_plan(parse_file(str(REPO / "plans" / "demo.plan")))
    assert [f"{f.code} {f.message}" for f in res.findings] == []


def test_demo_moves_everything_and_a_rerun_is_a_no_op(demo):
    plan, root = demo
    code, out, err = apply(plan)
    assert code == 0, out + err
    old, new = root / "old", root / "new"
    # the service runs at the new place only
    assert app_running(new) and not app_running(old)
    # the database: every row the old app held when it stopped (the new app has added more since)
    source = demo_rows(old / "notes.db")
    assert len(source) > 200  # the seed, and what the app wrote while it ran
    assert demo_rows(new / "inbox" / "notes.db.backup") == source
    assert demo_rows(new / "notes.db")[:len(source)] == source
    # the files, cache included, byte for byte (the new app may have added files since it started)
    before = tree_digest(old / "files")
    after = tree_digest(new / "files")
    assert any(k.startswith("cache/") for k in before)
    assert {k: after.get(k) for k in before} == before
    # the secrets: same content, 0600
    assert (new / "app.env").read_bytes() == (old / "app.env").read_bytes()
    assert stat.S_IMODE((new / "app.env").stat().st_mode) == 0o600
    # the narrative and the summary
    assert "[8/8] verify run" in out and "moved between hosts" in out
    assert "done: ran 8 of 8 steps (11 of 11 counting each parallel member);" in out
    # secrets appear nowhere: not in output, logs or journal (not even their hash)
    secret = (old / "app.env").read_text().split("SECRET_KEY=")[1].split()[0]
    jtext = open(J.journal_path(str(plan))).read()
    import hashlib

    for blob in (out, err, jtext):
        assert secret not in blob
        assert hashlib.sha256((old / "app.env").read_bytes()).hexdigest() not in blob
    assert stat.S_IMODE(os.stat(J.journal_path(str(plan))).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(J.state_dir(str(plan))).st_mode) == 0o700
    # again: nothing to do, nothing touched
    code, out, err = apply(plan)
    assert code == 0 and "nothing to do" in out
    assert app_running(new)


def test_a_failure_resumes_at_the_failed_step_and_an_edit_invalidates_from_there(demo, capsys):
    plan, root = demo
    gate = root / "go"
    edit(plan, "  extract new:", f'  gate: verify run new "test -e {gate}"\n  extract new:')
    code, out, err = apply(plan)
    assert code == 1
    assert "error: step 6 `gate: verify run new" in err and "on host new" in err
    assert "command: test -e" in err and "exit status 1" in err
    assert f"run `mdsl apply {plan}` again to resume at step 6" in err
    state = J.read_journal(J.journal_path(str(plan)))
    assert [state.steps[s].status for s in ("1", "2", "3.1", "3.2", "4.1", "4.2", "4.3", "5", "6")] == \
        ["done"] * 8 + ["failed"]
    assert status_command(type("A", (), {"plan": str(plan)})) == 1  # scripts rely on it
    status = capsys.readouterr().out
    assert "[6] failed" in status and "[7] pending" in status
    # counted as the progress counts ([6/9]), and counting each parallel member
    assert status.endswith("5 done, 1 failed, 3 pending of 9 steps "
                           "(8 done, 1 failed, 3 pending of 12 steps, counting each parallel member)\n")

    (old_marker := root / "old" / "marker").write_text("setup must not run again")
    gate.touch()
    code, out, err = apply(plan)
    assert code == 0, out + err
    assert "resuming: 5 of 9 steps (8 of 12 counting each parallel member) are done" in out
    assert "starting at step 6" in out
    assert "setup" not in out and "[6/9]" in out and "[9/9]" in out
    assert old_marker.exists()
    assert app_running(root / "new")

    # editing a step invalidates the journal from that step on: only it runs again
    edit(plan, '"python3 demo/app.py check', '"true && python3 demo/app.py check')
    code, out, err = apply(plan)
    assert code == 0, out + err
    assert "[9/9]" in out and "[8/9]" not in out and "done: ran 1 of 9 steps (1 of 12 counting" in out


def test_a_changed_artifact_is_made_again(demo):
    plan, root = demo
    gate = root / "go"
    edit(plan, "  start new_app", f'  gate: verify run new "test -e {gate}"\n  start new_app')
    assert apply(plan)[0] == 1
    # someone (or a disk) changed the dump after the journal recorded it
    dump = root / "old" / "outbox" / "notes.db.backup"
    dump.write_bytes(dump.read_bytes() + b"garbage")
    gate.touch()
    code, out, err = apply(plan)
    assert code == 0, out + err
    assert "step 3.1 (dump old_db" in out and "changed (sha256" in out and "running again from step 3" in out
    assert "[3/9]" in out and "[2/9]" not in out
    source = demo_rows(root / "old" / "notes.db")
    assert demo_rows(root / "new" / "notes.db")[:len(source)] == source


def test_dry_run_changes_nothing(demo):
    plan, root = demo
    code, out, err = apply(plan, dry_run=True)
    assert code == 0, err
    assert "dry run" in out and "would run" in out and "python3 demo/setup.py" in out
    assert not root.exists()
    assert not os.path.exists(J.journal_path(str(plan)))
    assert not os.path.exists(J.lock_path(str(plan)))


def test_the_lock_refuses_a_second_apply_and_a_dead_apply_leaves_none(demo):
    plan, root = demo
    lock = J.PlanLock(J.lock_path(str(plan)))
    lock.acquire()
    try:
        code, out, err = apply(plan)
        assert code == 1 and "another apply of this plan is running" in err and not root.exists()
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600
    finally:
        lock.release()
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(J.lock_path(str(plan)), "w") as f:  # what an apply killed with SIGKILL leaves: no flock on it
        json.dump({"pid": int(dead.stdout), "hostname": __import__("socket").gethostname(),
                   "started": "2026-01-01T00:00:00+00:00"}, f)
    code, out, err = apply(plan)
    assert code == 0 and root.exists(), err
    assert f"previous apply of this plan (pid {int(dead.stdout)}" in err
    assert not os.path.exists(J.lock_path(str(plan)))  # taken, then released


def test_destructive_steps_without_a_terminal_or_yes_are_refused_before_anything_runs(demo):
    plan, root = demo
    code, out, err = apply(plan, yes=False, ask=lambda prompt: None)
    assert code == 1 and "no terminal" in err and "--yes" in err
    assert not root.exists()


def test_a_no_answer_stops_before_the_destructive_step(demo):
    plan, root = demo
    asked = []
    code, out, err = apply(plan, yes=False, ask=lambda prompt: asked.append(prompt) or False)
    assert code == 1 and "not confirmed" in err
    assert asked and "destroys data" in asked[0]
    assert not root.exists()


def test_from_label_skips_earlier_steps(demo):
    plan, root = demo
    assert apply(plan)[0] == 0
    code, out, err = apply(plan, from_label="nope")
    assert code == 2 and "no step is labelled `nope`" in err and "setup" in err
    edit(plan, "  start new_app", "  again: start new_app")
    code, out, err = apply(plan, from_label="again")
    assert code == 0, out + err
    assert "[7/8] again: start new_app" in out and "[1/8]" not in out


@pytest.mark.parametrize("restart", [True])
def test_restart_runs_everything_again(demo, restart):
    plan, root = demo
    assert apply(plan)[0] == 0
    code, out, err = apply(plan, restart=restart)
    assert code == 0, out + err
    assert "[1/8] setup" in out and app_running(root / "new") and not app_running(root / "old")
    assert J.read_journal(J.journal_path(str(plan))).steps["8"].status == "done"


def test_check_warnings_ask_and_a_no_refuses(demo):
    plan, root = demo
    edit(plan, "    transfer old_env to new_env\n", "    transfer old_env to new_env verify = false\n")
    asked = []
    code, out, err = apply(plan, yes=False, ask=lambda prompt: asked.append(prompt) or False)
    assert code == 1 and "H303" in err and "warning" in asked[0] and not root.exists()


def test_the_cutover_is_marked_once_at_the_first_start_on_copied_data(demo):
    from mdsl.check.resolve import resolve
    from mdsl.compile import compile_plan
    from mdsl.syntax.parser import parse_file

    plan, _ = demo
    compiled = compile_plan(resolve(parse_file(str(plan))))
    marked = [leaf.summary for top in compiled.steps for leaf in top.leaves() if leaf.cutover]
    assert marked == ["start new_app"]  # not `stop old_app`, not the setup's writes


def test_declining_the_point_of_no_return_stops_before_the_new_app_starts(demo):
    plan, root = demo
    asked = []

    def answer(prompt):
        asked.append(prompt)
        return "takes writes that the old source never sees" not in prompt and "Roll back now?" not in prompt

    code, out, err = apply(plan, yes=False, ask=answer)
    assert code == 1
    assert any("start new_app" in p and "going back to the source would lose them" in p for p in asked)
    # a no before the point of no return offers the rollback (declined here): the state it left is said
    assert asked[-1].startswith("Roll back now? It runs: start old_app")
    assert "state now:\n  old_app on old is stopped (step 2 `stop old_app`)" in err
    assert not app_running(root / "new") and not app_running(root / "old")
    assert (root / "new" / "notes.db").exists()  # everything before the cutover ran
