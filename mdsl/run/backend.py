"""The connector interface every host backend implements (local, Fabric SSH).

Small on purpose (pyinfra's connectors: run, put, get): the apply loop, the
transfer engine and preflight only ever talk to a host through these methods.
Secrets never appear in a command line: they reach a host as stdin or as a
0600 file written through stdin (mdsl.run.executor).
"""

from __future__ import annotations

import abc
import contextvars
import os
import re
from typing import Callable, Iterable, Iterator, Optional, Tuple

from attrs import frozen

# True while a copy on `route = agent` runs (mdsl.run.routes): the SSH backend forwards this machine's
# ssh-agent to the commands it starts then, and only then.
forward_agent: contextvars.ContextVar[bool] = contextvars.ContextVar("mdsl_forward_agent", default=False)


@frozen
class Result:
    """What a command did: exit status and its (decoded) output.

    A command killed by a signal has exit 128 + the signal's number, as a shell reports it,
    and `signal` names it ("SIGKILL").
    """

    exit: int
    stdout: str
    stderr: str
    signal: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit == 0


class BackendError(Exception):
    """A host could not be reached or a command could not be started (not a non-zero exit)."""

    def __init__(self, host: str, message: str, hint: Optional[str] = None):
        super().__init__(f"{host}: {message}")
        self.host, self.message, self.hint = host, message, hint


class CommandTimeout(BackendError):
    """A command ran longer than its timeout and was stopped."""


def new_run_token() -> str:
    """A random token for one backend in one run, written into every command it starts."""
    return os.urandom(8).hex()


def run_marker(token: str) -> str:
    """The text every wrapped command carries in its command line (`/proc/PID/cmdline`).

    A re-run checks a recorded pid still shows the marker of the run that started it
    before stopping it: a pid the host has since given to another process is never hit.
    """
    return "mdsl-run=" + token


# What a wrapped command prints on stderr first: its process group (sshd makes each session one).
PID_MARKER_RE = re.compile(rb"mdsl:pid=(\d+)\n")

RUN_ENV = "MDSL_RUN"  # in the environment of everything a wrapped command starts: the run's token


def marker_line(token: str) -> str:
    """The first line of every wrapped command: the token in the environment, the marker as a comment.

    The EXIT trap keeps the shell from exec()ing the last command in its place (bash does), which
    would replace the command line that shows the marker. The environment variable is inherited by
    the command's children, so what the command left running after its shell ended can still be
    told apart from other processes (mdsl.run.leftovers).
    """
    return f"{RUN_ENV}={token}; export {RUN_ENV}; trap : EXIT # {run_marker(token)}"


@frozen
class BulkClient:
    """An OpenSSH client's command line running one wrapped command on a host, for bulk bytes (mdsl.run.pipe)."""

    argv: Tuple[str, ...]
    release: Callable[[], None]  # the client has ended, or will not run: its session slot is free again
    kill: Callable[[Iterable[int]], None]  # stop the command's process groups through the control channel
    first_stdin: Optional[bytes] = None  # written before the stream (sudo's password line)


class Backend(abc.ABC):
    """One host. Commands are complete shell strings whose user values are already quoted.

    `token` is written into every command's text (a comment: see `run_marker`), and
    `on_started(command, pid, inner_pid)`, when set, is called as soon as a command's
    process group is known, so apply can journal it and a later run can stop what an
    interrupted run left running.
    """

    name: str
    token: str = ""
    on_started: Optional[Callable[[str, int, Optional[int]], None]] = None

    def _started(self, command: str, pid: int, inner_pid: Optional[int] = None) -> None:
        hook = self.on_started
        if hook is not None:
            try:
                hook(command, pid, inner_pid)
            except Exception:  # noqa: BLE001 - bookkeeping must never stop the command
                pass

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection (or check the local machine); raises BackendError."""

    @abc.abstractmethod
    def run(self, command: str, *, stdin: Optional[bytes] = None, timeout: Optional[float] = None) -> Result:
        """Run `command` with `sh -c` semantics; never raises on a non-zero exit."""

    @abc.abstractmethod
    def read_stream(self, command: str, sink: Callable[[bytes], None], *, timeout: Optional[float] = None) -> Result:
        """Run `command` and feed its stdout to `sink` chunk by chunk (bounded memory)."""

    @abc.abstractmethod
    def write_stream(self, command: str, chunks: Iterator[bytes], *, timeout: Optional[float] = None) -> Result:
        """Run `command` with `chunks` as its stdin (bounded memory)."""

    def bulk_client(self, command: str) -> Optional[BulkClient]:
        """An OpenSSH client that runs `command` here, for bulk bytes; None when this backend has none."""
        return None

    def close(self) -> None:  # noqa: B027 - a backend without a connection has nothing to release
        """Release the connection."""
