"""The journal (append-only, fsynced, torn last line ignored) and the lock; `mdsl plan` masking."""

from __future__ import annotations

import os
import stat
import types

from mdsl.run import journal as J
from mdsl.run.commands import plan_command


def test_journal_replays_the_latest_state_and_ignores_a_torn_line(tmp_path):
    path = str(tmp_path / ".mdsl" / "p.journal")
    j = J.Journal(path)
    j.started_run("p.plan")
    j.step_started("1", "fp1")
    j.step_done("1", "fp1", 1.5, [J.ArtifactRecord("h", "/x", "ab" * 32, 10)])
    j.step_started("2", "fp2")
    j.step_failed("2", "fp2", 0.1, "boom", host="h", command="false")
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"event": "done", "step": "2", "fp')  # a crash mid-write
    st = J.read_journal(path)
    assert st.steps["1"].status == "done" and st.steps["1"].artifacts[0].size == 10
    assert st.steps["2"].status == "failed" and st.steps["2"].error == "boom"
    assert st.torn_lines == 1 and st.runs == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_reset_forgets_earlier_records(tmp_path):
    path = str(tmp_path / "p.journal")
    j = J.Journal(path)
    j.step_done("1", "fp", 1, [])
    j.reset()
    j.close()
    assert J.read_journal(path).steps == {}


def test_lock_is_exclusive_and_released_only_by_its_owner(tmp_path):
    path = str(tmp_path / "p.lock")
    a, b = J.PlanLock(path), J.PlanLock(path)
    a.acquire()
    try:
        b.acquire()
        raise AssertionError("second lock taken")
    except J.LockError as exc:
        assert "another apply" in exc.message
    b.release()  # not held: must not remove a's lock
    assert os.path.exists(path)
    a.release()
    assert not os.path.exists(path)


def test_journal_path_is_beside_the_plan(tmp_path):
    plan = str(tmp_path / "x" / "move.plan")
    assert J.journal_path(plan) == str(tmp_path / "x" / ".mdsl" / "move.journal")
    assert J.lock_path(plan) == str(tmp_path / "x" / ".mdsl" / "move.lock")


PLAN = '''
plan "masking"
host db { ssh = "root@192.0.2.10" sudo = true sudo_password = env("SUDO_PW") }
postgres main on db {
  database = "app"
  user     = "app"
  tcp      = "127.0.0.1:5432"
  password = env("MDSL_TEST_DB_PW")
}
steps {
  dump main to db:"/root/app.dump"
}
'''


def test_plan_command_prints_commands_with_secrets_masked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MDSL_TEST_DB_PW", "s3cr3t-value")
    monkeypatch.setenv("SUDO_PW", "sudo-s3cr3t")
    p = tmp_path / "m.plan"
    p.write_text(PLAN)
    assert plan_command(types.SimpleNamespace(plan=str(p))) == 0
    out = capsys.readouterr().out
    assert "pg_dump" in out and "PGPASSFILE=<0600 temp file: *:*:*:*:***>" in out
    assert "s3cr3t" not in out
    assert "[1] dump main to db:\"/root/app.dump\"" in out and "line 11" in out
    assert "sudo -S -p ''" in out  # the password goes to stdin, never argv


def test_plan_command_refuses_a_plan_with_errors(tmp_path, capsys):
    p = tmp_path / "bad.plan"
    p.write_text('host h { local = true }\nsteps { stop nothing }\n')
    assert plan_command(types.SimpleNamespace(plan=str(p))) == 2
    assert "E102" in capsys.readouterr().err


def test_plan_command_imports_no_ssh_logging_or_progress_library(tmp_path):
    import subprocess
    import sys

    from run_helpers import REPO

    code = ("import sys, types; from mdsl.run.commands import plan_command; "
            f"plan_command(types.SimpleNamespace(plan={str(REPO / 'plans' / 'demo.plan')!r})); "
            "print(sorted(m for m in ('fabric', 'paramiko', 'invoke', 'rich', 'structlog') if m in sys.modules), "
            "file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path))
    assert res.returncode == 0 and res.stderr.strip().splitlines()[-1] == "[]", res.stderr


def test_a_lock_held_by_a_killed_apply_is_free_at_once(tmp_path):
    """The lock is a flock: SIGKILL its holder and the kernel drops it; the file it leaves says who died."""
    import signal
    import subprocess
    import sys

    path = str(tmp_path / ".mdsl" / "p.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mdsl.run import journal as J\n"
         f"l = J.PlanLock({path!r}); l.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        b = J.PlanLock(path)
        try:
            b.acquire()
            raise AssertionError("took a lock another process holds")
        except J.LockError as exc:
            assert f"pid {holder.pid}" in exc.message and "another apply" in exc.message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert os.path.exists(path)  # SIGKILL: no release ran
    c = J.PlanLock(path)
    c.acquire()
    assert c.previous.get("pid") == holder.pid
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    c.release()
    assert not os.path.exists(path)
