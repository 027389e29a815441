"""A finding is data: code, severity, span, message, help; renderers show it."""

from __future__ import annotations

import enum
from typing import Optional, Tuple

from attrs import field, frozen

from mdsl.syntax.ast import Span


class Severity(enum.IntEnum):
    """How bad a finding is; apply refuses errors and asks about warnings."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        """The lowercase word used in output (`error`, `warning`, `info`)."""
        return self.name.lower()

    @classmethod
    def parse(cls, word: str) -> "Severity":
        """`error`/`warning`/`info` -> Severity."""
        return cls[word.upper()]


@frozen
class Finding:
    """One problem found in a plan, at a place in its source."""

    code: str
    severity: Severity
    message: str
    span: Span
    label: str = ""  # text under the caret
    notes: Tuple[str, ...] = field(default=(), converter=tuple)
    help: Optional[str] = None

    def sort_key(self):
        """Findings are shown by file, then position, then code."""
        return (self.span.file, self.span.line, self.span.col, self.code)


class PlanError(Exception):
    """Input that cannot be used at all (unreadable file, syntax error); carries findings."""

    def __init__(self, findings):
        super().__init__("; ".join(f.message for f in findings))
        self.findings = list(findings)
