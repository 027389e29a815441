"""`# mdsl: allow CODE "reason"`: silence one code on one step, with a reason.

The comment stands on the step's (or declaration's, or attribute's) first line
or on the line above. It silences the findings of that code whose span starts inside that
step. E107 reports an allow without a reason, a malformed `# mdsl:` comment, an
E-code (a plan that cannot be understood cannot be excused), an unknown code,
and a code that does not fire there (a stale allow would hide the next real
finding).
"""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional

from mdsl.check import catalog
from mdsl.check.rules.e_plan import E107
from mdsl.findings import Finding, Severity
from mdsl.syntax import ast as A


def _starts(plan: A.Plan) -> Dict[int, A.Span]:
    """First line of every step, declaration and attribute -> its span (the outermost when several
    start there): an H304 points at an attribute, so its allow may stand beside that attribute."""
    starts: Dict[int, A.Span] = {}
    for d in plan.decls:
        starts.setdefault(d.span.line, d.span)
        for a in d.attrs:
            starts.setdefault(a.span.line, a.span)
    for s in A.walk_steps(plan.steps):
        starts.setdefault(s.span.line, s.span)
    return starts


def _inside(outer: A.Span, inner: A.Span) -> bool:
    start = (inner.line, inner.col)
    return (outer.line, outer.col) <= start < (outer.end_line, outer.end_col)


def _e107(sup: A.Suppression, message: str, label: str, help: Optional[str]) -> Finding:
    return E107.finding(message, sup.span, label=label, help=help)


def apply_suppressions(plan: A.Plan, findings: List[Finding]) -> List[Finding]:
    """The findings minus those allowed with a reason, plus E107 for every bad allow."""
    if not plan.suppressions:
        return findings
    starts = _starts(plan)
    # When names did not resolve the walk did not run, so "did not fire" cannot be judged.
    walked = not any(f.severity == Severity.ERROR and f.code.startswith("E") for f in findings)
    by_code: Dict[str, List[Finding]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    silenced = set()
    problems: List[Finding] = []
    for sup in plan.suppressions:
        code = sup.code
        if not code:
            problems.append(_e107(sup, "a malformed `# mdsl:` comment", "not `allow CODE \"reason\"`",
                                  'write `# mdsl: allow CODE "why this is acceptable here"`'))
            continue
        if sup.reason is None:
            problems.append(_e107(sup, f"`allow {code}` gives no reason", "no reason",
                                  f'say why the hazard is acceptable: `# mdsl: allow {code} "..."`'))
            continue
        if code.startswith("E"):
            problems.append(_e107(sup, f"{code} cannot be allowed: the plan must be fixed", "not allowed",
                                  "E-codes mean the plan cannot be understood; fix the plan instead"))
            continue
        if catalog.get(code) is None:
            close = difflib.get_close_matches(code, [r.code for r in catalog.RULES], n=1)
            problems.append(_e107(sup, f"`allow {code}`: there is no finding code {code}", "unknown code",
                                  f"did you mean {close[0]}?" if close else "`mdsl explain` lists every code"))
            continue
        target = starts.get(sup.span.line) or starts.get(sup.span.line + 1)
        if target is None:
            problems.append(_e107(sup, f"`allow {code}` is not on or above a step or declaration",
                                  "allows nothing", "put it on the step's line or the line above it"))
            continue
        hits = [f for f in by_code.get(code, ()) if f.span.file == target.file and _inside(target, f.span)]
        if hits:
            silenced.update(id(f) for f in hits)
        elif walked:
            problems.append(_e107(sup, f"`allow {code}`, but {code} does not fire on this step",
                                  "nothing to allow here", "remove the comment (the hazard is gone)"))
    return [f for f in findings if id(f) not in silenced] + problems
