"""`mdsl status` while an apply runs, after one was killed, and how it counts steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdsl.run import journal as J

WAITING = 'echo $$ > {pid}; touch {started}; while [ ! -e {gate} ]; do sleep 0.1; done'


def _mdsl(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdsl", *args], capture_output=True, text=True, timeout=60, **kw)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)


@pytest.fixture
def waiting_apply(tmp_path):
    """An apply (a process of its own) of a plan whose second step waits for a file; yields what it needs."""
    paths = {name: tmp_path / name for name in ("pid", "started", "gate")}
    plan = tmp_path / "wait.plan"
    plan.write_text('host here { local = true }\nsteps {\n  run here "true"\n'
                    f'  parallel {{\n    run here "{WAITING.format(**paths)}"\n    run here "true"\n  }}\n'
                    '  run here "true"\n}\n')
    proc = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(paths["started"], proc)
        yield plan, proc, paths
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        try:  # the local backend's command has a session of its own: it outlives a killed apply
            os.killpg(int(paths["pid"].read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_a_step_of_the_apply_that_runs_is_running_and_the_counts_say_both(waiting_apply):
    plan, proc, paths = waiting_apply
    st = _mdsl("status", str(plan))
    assert st.returncode == 0, st.stderr
    assert f"an apply of this plan is running (pid {proc.pid}, started " in st.stdout, st.stdout
    assert "[2.1] running  run here" in st.stdout and "never finished" not in st.stdout, st.stdout
    # counted as the progress counts them ([2/3]), and counting each parallel member
    assert st.stdout.rstrip().endswith("1 done, 1 running, 0 failed, 1 pending of 3 steps "
                                       "(2 done, 1 running, 0 failed, 1 pending of 4 steps, counting each parallel "
                                       "member)"), st.stdout
    paths["gate"].touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "[2/3]" in out and "[3/3]" in out
    assert "done: ran 3 of 3 steps (4 of 4 counting each parallel member)" in out, out
    st = _mdsl("status", str(plan))
    assert "an apply of this plan is running" not in st.stdout and "running " not in st.stdout, st.stdout
    assert st.stdout.rstrip().endswith("3 done, 0 failed, 0 pending of 3 steps "
                                       "(4 done, 0 failed, 0 pending of 4 steps, counting each parallel member)")


def test_a_step_a_killed_apply_was_running_never_finished(waiting_apply):
    plan, proc, paths = waiting_apply
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert os.path.exists(J.lock_path(str(plan)))  # what it left: the file, but no flock on it
    st = _mdsl("status", str(plan))
    assert "an apply of this plan is running" not in st.stdout, st.stdout
    assert "[2.1] pending" in st.stdout and "and never finished (interrupted?)" in st.stdout, st.stdout


def test_a_status_check_does_not_stop_an_apply_from_starting(tmp_path):
    """`running_apply` holds a shared flock for an instant: an apply taking the lock then still gets it."""
    lock_path = str(tmp_path / ".mdsl" / "p.lock")
    holder = J.PlanLock(lock_path)
    holder.acquire()
    assert J.running_apply(lock_path)["pid"] == os.getpid()
    holder.release()
    assert J.running_apply(lock_path) is None
    import fcntl

    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a status check, caught in its instant

    def let_go():
        time.sleep(0.03)
        fcntl.flock(fd, fcntl.LOCK_UN)

    import threading

    t = threading.Thread(target=let_go)
    t.start()
    lock = J.PlanLock(lock_path)
    try:
        lock.acquire()
        assert lock.held
    finally:
        t.join()
        lock.release()
        os.close(fd)


def test_status_exits_non_zero_when_a_step_failed(tmp_path):
    # issue 17 item 5: scripts rely on the exit status
    plan = tmp_path / "fail.plan"
    plan.write_text('host here { local = true }\nsteps {\n  run here "true"\n  run here "exit 3"\n}\n')
    st = _mdsl("status", str(plan))
    assert st.returncode == 0, st.stderr  # nothing ran yet: nothing failed
    ap = _mdsl("apply", "--yes", str(plan))
    assert ap.returncode == 1
    st = _mdsl("status", str(plan))
    assert st.returncode == 1, st.stdout + st.stderr
    assert "failed" in st.stdout
