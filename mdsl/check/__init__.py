"""`mdsl check`: resolve names (E1xx), walk the steps symbolically (H1xx-H3xx),
apply suppressions (E107). Pure: no I/O beyond what the caller passed in, and
never imports fabric or paramiko."""

from __future__ import annotations

import gc
from typing import List

from attrs import frozen

from mdsl.check.resolve import resolve
from mdsl.check.suppress import apply_suppressions
from mdsl.check.walk import Walk
from mdsl.model import BoundPlan
from mdsl.findings import Finding
from mdsl.syntax import ast as A


@frozen
class CheckResult:
    """The bound plan and every finding about it, sorted by position."""

    bound: BoundPlan
    findings: List[Finding]


def check_plan(plan: A.Plan, rollback: bool = False) -> CheckResult:
    """All findings for one parsed plan; `rollback`: the plan runs with rollback (H310 too)."""
    # Resolve and the walk make no reference cycles; with the collector on, its generation-2
    # passes rescan the growing state and make big plans superlinear (the parser pauses it too).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _check(plan, rollback)
    finally:
        if enabled:
            gc.enable()


def _check(plan: A.Plan, rollback: bool) -> CheckResult:
    bound = resolve(plan)
    findings = list(bound.findings)
    if bound.ok:
        findings.extend(Walk(bound, rollback).run())
    findings = apply_suppressions(plan, findings)
    findings.sort(key=Finding.sort_key)
    return CheckResult(bound, findings)
