"""Why a run stops: a step that failed, or an operator (or the lack of one) who said no."""

from __future__ import annotations

from typing import Optional

from mdsl.compile.plan import CompiledStep


class Refused(Exception):
    """The operator (or the lack of one) said no, or a check before the steps failed; nothing further runs."""


class StepFailed(Exception):
    """A step did not complete: which step, on which host, which command, and what it said."""

    def __init__(self, message: str, *, host: Optional[str] = None, command: Optional[str] = None,
                 exit: Optional[int] = None, stderr: str = "", hint: Optional[str] = None):
        super().__init__(message)
        self.message, self.host, self.command, self.exit = message, host, command, exit
        self.stderr, self.hint = stderr, hint
        self.step: Optional[CompiledStep] = None


class TransferError(Exception):
    """A copy, or a question the copy protocol asked a host, failed or was answered in an untrusted shape."""

    def __init__(self, message: str, host: Optional[str] = None, command: Optional[str] = None,
                 stderr: str = "", exit: Optional[int] = None):
        super().__init__(message)
        self.message, self.host, self.command, self.stderr, self.exit = message, host, command, stderr, exit
