"""The connector interface every host backend implements (local, Fabric SSH).

Small on purpose (pyinfra's connectors: run, put, get): the apply loop, the
transfer engine and preflight only ever talk to a host through these methods.
Secrets never appear in a command line: they reach a host as stdin or as a
0600 file written through stdin (`write_secret_file`).
"""

from __future__ import annotations

import abc
from typing import Callable, Iterator, Optional

from attrs import frozen


@frozen
class Result:
    """What a command did: exit status and its (decoded) output."""

    exit: int
    stdout: str
    stderr: str

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


class Backend(abc.ABC):
    """One host. Commands are complete shell strings whose user values are already quoted."""

    name: str

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

    def write_secret_file(self, content: bytes) -> str:
        """Create a 0600 temp file holding `content` (sent via stdin) and return its path."""
        res = self.run('umask 077 && f=$(mktemp "${TMPDIR:-/tmp}/mdsl-secret.XXXXXXXX") && cat > "$f" && printf %s "$f"',
                       stdin=content)
        if not res.ok or not res.stdout.strip():
            raise BackendError(self.name, f"cannot create a private temp file: {res.stderr.strip()}")
        return res.stdout.strip()

    def close(self) -> None:
        """Release the connection."""
