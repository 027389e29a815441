"""What every rule is: a code, a title, a default severity, and its documentation
(what goes wrong, a bad plan, the fixed plan, where the lesson comes from)."""

from __future__ import annotations

from typing import Optional, Sequence

from attrs import field, frozen

from mdsl.findings import Finding, Severity
from mdsl.syntax.ast import Span


@frozen
class Rule:
    """One finding code and its documentation page."""

    code: str
    title: str
    severity: Severity
    summary: str  # what goes wrong, a paragraph
    bad: str = ""  # a whole plan that fires the code (descriptive text for P4xx)
    fixed: str = ""  # the same plan with the hazard removed
    source: str = ""  # where the lesson comes from
    # severities the rule may also report with (H102: info when a rebuild step exists)
    also: Sequence[Severity] = field(default=(), converter=tuple)

    @property
    def family(self) -> str:
        """`E`, `H1`, `H2`, `H3` or `P`."""
        return self.code[0] if self.code[0] in "EP" else self.code[:2]

    def finding(self, span: Span, message: str, label: str = "", notes=(), help: Optional[str] = None,
                severity: Optional[Severity] = None) -> Finding:
        """A finding of this code (at the rule's default severity unless given)."""
        return Finding(self.code, severity or self.severity, message, span, label=label, notes=notes, help=help)


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO
