"""The local backend: a host with `local = true` is this machine, commands run with `bash -c`.

Each command gets its own session (process group), so a timeout kills the
command and everything it spawned, and a daemon a start command leaves behind
is not tied to our terminal. Output goes to temp files rather than pipes for
`run`: a daemon that keeps an inherited stdout open cannot make us wait.
Commands run in `cwd` (the plan's directory), so a plan may call helper
scripts beside it by a relative path.

A session outlives a SIGKILL of mdsl, so each command's pid (its session and
process group) goes to `on_started`, and its shell's command line carries this
run's marker (`# mdsl-run=TOKEN`, kept in place by an EXIT trap that stops bash
from exec()ing the last command): apply journals the pid, and the next run
stops the group only while the marker is still there. A shell killed by a
signal reports exit 128 + N and the signal's name, as the SSH backend does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from typing import Callable, Iterable, Iterator, Optional

from mdsl.model import Host
from mdsl.run.backend import Backend, BackendError, CommandTimeout, Result, marker_line, new_run_token

CHUNK = 1 << 20
_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(_GRACE)
            return
        except subprocess.TimeoutExpired:
            continue


def _status(code: int) -> tuple:
    """(exit status, signal name): a shell killed by signal N exits 128 + N, as shells report it."""
    if code >= 0:
        return code, None
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return 128 - code, name


def _read_all(f) -> str:
    f.seek(0)
    return f.read().decode("utf-8", "replace")


class _Watchdog:
    """Kills a process group when a timeout passes."""

    def __init__(self, proc: subprocess.Popen, timeout: Optional[float]):
        self.fired = False
        self._timer = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire, (proc,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, proc):
        self.fired = True
        _kill_group(proc)

    def cancel(self):
        if self._timer is not None:
            self._timer.cancel()


class LocalBackend(Backend):
    """This machine, for hosts declared `local = true`."""

    def __init__(self, host: Host, *, cwd: Optional[str] = None, shell: str = "/bin/bash"):
        self.host = host
        self.name = host.name
        self.cwd = cwd
        self.shell = shell if os.path.exists(shell) else "/bin/sh"
        self.token = new_run_token()

    def connect(self) -> None:
        """Nothing to open; checks the working directory exists."""
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise BackendError(self.name, f"working directory {self.cwd} does not exist")

    def wrap(self, command: str) -> str:
        """The script given to `bash -c`: this run's marker, the EXIT trap, the command."""
        return f"{marker_line(self.token)}\n{command}"

    def _popen(self, command: str, stdin, stdout, stderr) -> subprocess.Popen:
        try:
            proc = subprocess.Popen([self.shell, "-c", self.wrap(command)], stdin=stdin, stdout=stdout,
                                    stderr=stderr, cwd=self.cwd, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise BackendError(self.name, f"cannot start {self.shell}: {exc.strerror}") from None
        self._started(command, proc.pid)
        return proc

    def _timeout(self, command: str, timeout: Optional[float]) -> CommandTimeout:
        return CommandTimeout(self.name, f"command timed out after {timeout:g}s",
                              hint="raise the step's `timeout = SECONDS` option")

    def run(self, command: str, *, stdin: Optional[bytes] = None, timeout: Optional[float] = None) -> Result:
        """Run with `bash -c` in a new session; output collected through temp files."""
        return self._feed(command, None if stdin is None else (stdin,), timeout)

    def read_stream(self, command: str, sink: Callable[[bytes], None], *,
                    timeout: Optional[float] = None) -> Result:
        """Feed the command's stdout to `sink` chunk by chunk; if `sink` raises, the command is killed."""
        with tempfile.TemporaryFile() as err:
            proc = self._popen(command, subprocess.DEVNULL, subprocess.PIPE, err)

            def drain() -> None:
                while True:
                    chunk = proc.stdout.read1(CHUNK) if hasattr(proc.stdout, "read1") else proc.stdout.read(CHUNK)
                    if not chunk:
                        return
                    sink(chunk)

            try:
                code, sig = self._wait(proc, command, timeout, drain)
            finally:
                proc.stdout.close()
            return Result(code, "", _read_all(err), sig)

    def write_stream(self, command: str, chunks: Iterator[bytes], *, timeout: Optional[float] = None) -> Result:
        """Write `chunks` to the command's stdin; stops early if the command exits."""
        return self._feed(command, chunks, timeout)

    def _feed(self, command: str, chunks: Optional[Iterable[bytes]], timeout: Optional[float]) -> Result:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = self._popen(command, subprocess.DEVNULL if chunks is None else subprocess.PIPE, out, err)

            def write() -> None:
                if chunks is None:
                    return
                try:
                    for chunk in chunks:
                        proc.stdin.write(chunk)
                except BrokenPipeError:
                    pass  # the command exited without reading everything: its status tells
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass

            code, sig = self._wait(proc, command, timeout, write)
            return Result(code, _read_all(out), _read_all(err), sig)

    def _wait(self, proc: subprocess.Popen, command: str, timeout: Optional[float], talk) -> tuple:
        """`talk()` (what feeds or drains the command), then its (exit code, signal). Its process group is
        killed when anything raises, or when `timeout` passes first (then CommandTimeout)."""
        dog = _Watchdog(proc, timeout)
        try:
            talk()
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            dog.cancel()
        if dog.fired:
            raise self._timeout(command, timeout)
        return _status(code)

    def close(self) -> None:
        """Nothing to release."""
