"""A plan file to compiled steps for `mdsl plan`, `apply` and `status`: parse, check, compile.

Every finding is printed through the one renderer (mdsl.render); a plan that
does not parse, has check errors or cannot be compiled is refused (`Unusable`,
exit status 2). Warnings are returned: `apply` asks about them, `plan` shows them.
"""

from __future__ import annotations

import sys
from typing import Callable, List, Tuple

from mdsl import render
from mdsl.model import BoundPlan
from mdsl.check import check_plan
from mdsl.compile.parts import CompileError
from mdsl.compile.plan import CompiledPlan, compile_plan
from mdsl.findings import Finding, PlanError, Severity
from mdsl.syntax import ast as A
from mdsl.syntax.parser import parse_file


class Unusable(Exception):
    """The plan cannot be run (syntax, check errors, a step that cannot be compiled); already reported."""

    code = 2


def render_findings(findings: List[Finding]) -> str:
    """Findings as rustc-style text, the source lines read from the plan files."""
    return render.render_text(findings, render.Sources(), color=render.use_color(sys.stderr)).rstrip("\n")


def check_findings(plan: A.Plan, rollback: bool = False) -> Tuple[BoundPlan, List[Finding]]:
    """`mdsl check`'s findings (`--rollback`: H310 too), and the bound plan they were found on."""
    res = check_plan(plan, rollback=rollback)
    return res.bound, list(res.findings)


def load_plan(path: str, warn: Callable[[str], None], command: str,
              rollback: bool = False) -> Tuple[CompiledPlan, List[Finding]]:
    """(compiled plan, its warnings and infos); `warn` prints the reasons before `Unusable` is raised;
    `rollback`: checked as `mdsl check --rollback` (the run rolls back on failure)."""
    try:
        plan = parse_file(path)
    except PlanError as exc:
        warn(render_findings(exc.findings))
        raise Unusable() from None
    bound, findings = check_findings(plan, rollback)
    errors = [f for f in findings if f.severity == Severity.ERROR]
    if errors:
        warn(render_findings(errors + [f for f in findings if f.severity == Severity.WARNING]))
        warn(f"refusing to {command}: `mdsl check` found {len(errors)} error(s)")
        raise Unusable()
    try:
        return compile_plan(bound), findings
    except CompileError as exc:
        warn(render_findings([Finding("E106", Severity.ERROR, exc.message, exc.span, help=exc.help)]))
        warn(f"refusing to {command}: a step cannot be compiled safely")
        raise Unusable() from None
