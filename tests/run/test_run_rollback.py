"""Rollback before the point of no return, on the demo (local backend): after a failure, a no and a Ctrl-C
the old app serves again with its data, the journal resumes from the stop; `mdsl rollback` later, from the
journal (after a kill too); refused after the point of no return; the `state now:` block of a failure."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

from run_helpers import REPO, app_running, apply, demo_rows, edit
from mdsl.run import journal as J
from mdsl.run.apply import ApplyOptions
from mdsl.run.rollback_command import rollback_plan


def _gate_before_restore(plan, root):
    gate = root / "go"
    edit(plan, "  restore new:", f'  gate: verify run new "test -e {gate}"\n  restore new:')
    return gate


def _statuses(plan):
    return {sid: s.status for sid, s in J.read_journal(J.journal_path(str(plan))).steps.items()}


def rollback(plan, yes=True):
    out, err = io.StringIO(), io.StringIO()
    code = rollback_plan(ApplyOptions(plan=str(plan), yes=yes, log_format="json"), out=out, err=err,
                         progress=False)
    return code, out.getvalue(), err.getvalue()


def test_a_failure_after_the_stop_rolls_back_and_the_journal_resumes_once_fixed(demo):
    plan, root = demo
    gate = _gate_before_restore(plan, root)
    code, out, err = apply(plan, rollback=True)
    assert code == 1, out + err
    assert "error: step 5 `gate: verify run new" in err
    old = root / "old"
    # the old app serves again, on the data it had: every row the dump took is still there, in order
    assert app_running(old) and not app_running(root / "new")
    dumped = demo_rows(old / "outbox" / "notes.db.backup")
    assert len(dumped) > 200 and demo_rows(old / "notes.db")[:len(dumped)] == dumped
    assert "rollback: start old_app ... ok  (undid step 2)" in out
    assert "state now: the source runs as before the plan" in err
    assert "the journal resumes at step 2 `stop old_app`" in err
    assert _statuses(plan)["2"] == "rolled-back"
    # the cause fixed, the journal resumes at the stop (what ran before the rollback is stale now)
    gate.touch()
    code, out, err = apply(plan, rollback=True)
    assert code == 0, out + err
    assert "starting at step 2" in out
    assert app_running(root / "new") and not app_running(old)


def test_without_rollback_the_failure_says_what_is_stopped_and_mdsl_rollback_brings_it_back(demo):
    plan, root = demo
    _gate_before_restore(plan, root)
    code, out, err = apply(plan, rollback=False)
    assert code == 1
    assert not app_running(root / "old")
    assert "state now:\n  old_app on old is stopped (step 2 `stop old_app`)" in err
    assert f"bring it back: `mdsl rollback {plan}` (start old_app)" in err
    assert "or by hand:\n    [old] $ python3 demo/app.py start " in err
    assert "the journal resumes at step 5 `gate: verify run new" in err
    code, out, err = rollback(plan)
    assert code == 0, out + err
    assert app_running(root / "old")
    assert "rolled back: the old app serves again" in out
    # once done, there is nothing more to undo
    code, out, err = rollback(plan)
    assert code == 0 and "nothing to roll back" in out


def test_on_a_terminal_the_rollback_is_offered(demo):
    plan, root = demo
    _gate_before_restore(plan, root)
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return True

    code, out, err = apply(plan, yes=False, ask=ask)
    assert code == 1
    assert asked[-1].startswith("Roll back now? It runs: start old_app  (undoes step 2 `stop old_app`)")
    assert app_running(root / "old")


def test_an_operator_no_and_a_ctrl_c_roll_back_too(demo):
    plan, root = demo
    edit(plan, "  restore new:", '  confirm "the dump looks right"\n  restore new:')

    def no(prompt):
        return "dump looks right" not in prompt

    code, out, err = apply(plan, yes=False, ask=no, rollback=True)
    assert code == 1 and "not confirmed" in err
    assert app_running(root / "old") and "rollback: start old_app ... ok" in out

    def ctrl_c(prompt):
        if "dump looks right" in prompt:
            raise KeyboardInterrupt
        return True

    code, out, err = apply(plan, yes=False, ask=ctrl_c, rollback=True)
    assert code == 130 and "interrupted" in err
    assert app_running(root / "old") and "rollback: start old_app ... ok" in out


def test_kill_then_mdsl_rollback(demo):
    """A killed apply rolls nothing back; `mdsl rollback` does, from the journal."""
    plan, root = demo
    marker = root / "sleeping"
    edit(plan, "  restore new:", f'  run new "touch {marker} && sleep 60"\n  restore new:')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", "--log-format", "json", str(plan)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not app_running(root / "old")
    res = subprocess.run([sys.executable, "-m", "mdsl", "rollback", "--yes", str(plan)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "start old_app  (undoes step 2 `stop old_app`)" in res.stdout
    assert app_running(root / "old")


def test_after_the_point_of_no_return_a_rollback_is_refused_saying_what_would_be_lost(demo):
    plan, root = demo
    edit(plan, '  verify run new "python3', f'  verify run new "test -e {root / "never"}"\n  verify run new "python3')
    code, out, err = apply(plan, rollback=True)
    assert code == 1
    assert app_running(root / "new") and not app_running(root / "old")
    assert "no rollback: step 7 `start new_app` is the point of no return, and it has run" in err
    code, out, err = rollback(plan)
    assert code == 1
    assert "refused: no rollback" in err
    assert "new_app has been writing new_db, new_files on new since" in err
    assert not app_running(root / "old")
