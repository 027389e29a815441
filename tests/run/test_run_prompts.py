"""Questions on a real terminal (a pty is the child's controlling terminal, so /dev/tty is it): a `y` typed
before the question appeared is not its answer, `n` refuses, the question keeps its brackets and its
`[y/N]` while the live progress display runs (mdsl.run.console, mdsl.run.progress)."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

from run_helpers import REPO

PLAN = '''host a {{ local = true }}

steps {{
  run a "touch {started} && sleep 3"
  confirm "is [the backup] on the shelf?"
  run a "touch {done}"
}}
'''


class Terminal:
    """`mdsl apply` in a pty: what it printed so far, and keys typed into it."""

    def __init__(self, argv, cwd):
        env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", COLUMNS="200", LINES="50")
        env.pop("NO_COLOR", None)
        pid, fd = pty.fork()
        if pid == 0:  # the child: its controlling terminal is the pty
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, "-m", "mdsl", *argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd, self.text = pid, fd, ""

    def read(self, seconds: float) -> str:
        """Read what arrives within `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the child is gone
                break
            if not data:
                break
            self.text += data.decode("utf-8", "replace")
        return self.text

    def wait_for(self, needle: str, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if needle in self.read(0.2):
                return True
        return False

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_status(self, seconds: float) -> int:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("mdsl apply did not end:\n" + self.text)

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def test_a_y_typed_before_the_question_is_not_its_answer_and_n_refuses(tmp_path):
    done = tmp_path / "done"
    plan = tmp_path / "gate.plan"
    started = tmp_path / "started"
    plan.write_text(PLAN.format(done=done, started=started))
    term = Terminal(["apply", str(plan)], tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            term.read(0.1)
        time.sleep(0.5)
        assert "[y/N]" not in term.read(0.1)
        term.type("y\r")  # typed while `sleep 3` runs, before the question is shown
        assert term.wait_for("[y/N]", 30), term.text
        term.read(1.5)
        assert not done.exists(), "the `y` typed before the question answered it:\n" + term.text
        # the question is whole: its brackets, and the [y/N] after it
        assert "is [the backup] on the shelf? Continue? [y/N]" in term.text
        term.type("n\r")
        code = term.exit_status(60)
        assert code == 1, term.text
        assert "not confirmed" in term.text
        assert not done.exists()
    finally:
        term.close()


def test_y_typed_after_the_question_runs_on(tmp_path):
    done = tmp_path / "done"
    plan = tmp_path / "gate.plan"
    plan.write_text(PLAN.format(done=done, started=tmp_path / "started"))
    term = Terminal(["apply", str(plan)], tmp_path)
    try:
        assert term.wait_for("[y/N]", 60), term.text
        term.type("y\r")
        assert term.exit_status(60) == 0, term.text
        assert done.exists()
    finally:
        term.close()
