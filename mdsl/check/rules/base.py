"""What every rule is: a code, a title, a default severity, and its documentation
(what goes wrong, a bad plan, the fixed plan, where the lesson comes from); and
what a check is: the steps a rule looks at and the function judging them."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

from attrs import field, frozen

from mdsl.findings import Finding, Severity
from mdsl.syntax.ast import Span

ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO


class PlanEnd:
    """What an end-of-plan check looks at: the state after the last step (use `Rule.at_end`)."""


class PlanText:
    """What a check of the plan as written looks at, before the first step (use `Rule.on_text`)."""


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

    def finding(self, message: str, span: Span, label: str = "", notes: Iterable[str] = (),
                help: Optional[str] = None, severity: Optional[Severity] = None) -> Finding:
        """A finding of this code, at the rule's default severity unless given."""
        return Finding(self.code, severity or self.severity, message, span, label=label, notes=tuple(notes),
                       help=help)

    def on(self, *steps: type) -> Callable[[Callable], "Check"]:
        """Decorator: the function judges every step of these kinds (AST classes) for this rule."""
        return lambda judge: Check(self, steps, judge)

    def at_end(self, judge: Callable) -> "Check":
        """Decorator: the function judges the state after the last step; it takes the walk only."""
        return Check(self, (PlanEnd,), judge)

    def on_text(self, judge: Callable) -> "Check":
        """Decorator: the function judges the plan as written, before the walk; it takes the walk only."""
        return Check(self, (PlanText,), judge)


@frozen
class Check:
    """One way a rule judges a plan: the step kinds it looks at, and `judge(facts, walk)` yielding
    its findings for one of those steps (`judge(walk)` for `PlanText` and `PlanEnd`)."""

    rule: Rule
    steps: Tuple[type, ...]
    judge: Callable[..., Iterable[Finding]]
