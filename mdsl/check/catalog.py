"""The catalogue of finding codes, read top to bottom: every code mdsl reports,
its title, default severity and documentation page (`mdsl explain CODE`); and
every check of the symbolic walk, in the order the walk runs them."""

from __future__ import annotations

import textwrap
from typing import Callable, Dict, Iterable, Optional, Tuple

from mdsl.check.rules import (
    a_apps, e_plan, h1_loss, h2_order, h2_replication, h3_docker, h3_logins, h3_operations, h3_rollback,
    p_preflight,
)
from mdsl.check.rules.base import Check, Rule
from mdsl.findings import Finding

RULES: Tuple[Rule, ...] = (
    # E: the plan cannot be understood (parser, resolver, suppressions)
    e_plan.E101, e_plan.E102, e_plan.E103, e_plan.E104, e_plan.E105, e_plan.E106, e_plan.E107,
    # H1: data loss
    h1_loss.H101, h1_loss.H102, h1_loss.H103, h1_loss.H104,
    # H2: consistency and order
    h2_order.H201, h2_order.H202, h2_order.H203, h2_order.H204, h2_order.H205, h2_replication.H206,
    # H3: operations
    h3_operations.H301, h3_operations.H302, h3_operations.H303, h3_operations.H304,
    h3_operations.H305, h3_operations.H306, h3_operations.H307, h3_docker.H308, h3_logins.H309,
    h3_rollback.H310,
    h3_docker.H311,
    # A1: the app's own hazards, from its profile
    *a_apps.RULES,
    # P: preflight at apply time
    p_preflight.P401, p_preflight.P402, p_preflight.P403, p_preflight.P404, p_preflight.P405,
    p_preflight.P406, p_preflight.P407, p_preflight.P408, p_preflight.P409, p_preflight.P410,
    p_preflight.P411, p_preflight.P412, p_preflight.P413, p_preflight.P414,
)

# What the walk runs: each check declares the steps it looks at (`@H201.on(A.Dump, ...)`); the walk
# hands every step to the checks that declared its kind, in this order.
CHECKS: Tuple[Check, ...] = (h1_loss.CHECKS + h2_order.CHECKS + h2_replication.CHECKS + h3_operations.CHECKS
                             + h3_docker.CHECKS + h3_logins.CHECKS + h3_rollback.CHECKS)

# What runs after the walk, on its results: an app's hazards judge the whole move (several A1xx codes
# per app), not one step or one rule at a time.
AFTER_WALK: Tuple[Callable[..., Iterable[Finding]], ...] = (a_apps.at_end,)

_BY_CODE: Dict[str, Rule] = {r.code: r for r in RULES}

_FAMILIES = {
    "E": "the plan cannot be understood",
    "H1": "data loss",
    "H2": "consistency and order",
    "H3": "operations",
    "A1": "the app's own hazards (its profile)",
    "P": "preflight, checked at apply time before the first step changes anything",
}


def get(code: str) -> Optional[Rule]:
    """The rule for `code` (case-insensitive), or None."""
    return _BY_CODE.get(code.strip().upper())


def _indent(text: str) -> str:
    return textwrap.indent(text.rstrip("\n"), "    ") + "\n"


def page(code: str) -> str:
    """The documentation page of a code: what goes wrong, a bad plan, the fixed plan, the lesson's source."""
    r = get(code)
    if r is None:
        raise KeyError(code)
    sev = r.severity.label + "".join(f" (or {s.label})" for s in r.also)
    out = [f"{r.code}: {r.title}", "",
           f"Severity: {sev}. Family: {r.family}, {_FAMILIES[r.family]}.", "",
           "## What goes wrong", "", textwrap.fill(r.summary, 88), ""]
    plans = r.family != "P"
    out += ["## A plan that has it" if plans else "## Example", "",
            _indent(r.bad) if plans else textwrap.fill(r.bad, 88) + "\n"]
    out += ["## Fixed" if plans else "## Fix", "",
            _indent(r.fixed) if plans else textwrap.fill(r.fixed, 88) + "\n"]
    if r.source:
        out += ["## Where the lesson comes from", "", textwrap.fill(r.source, 88), ""]
    if plans and r.family != "E":
        out += ["Silence it on one step, with a reason, by writing on the step's line or the line above:",
                f'    # mdsl: allow {r.code} "why this is acceptable here"', ""]
    return "\n".join(out)
