"""The registry of checks: every H rule has checks, each declares what it looks at, and
each yields findings of its own rule only; E and P codes make findings through their rules."""

from __future__ import annotations

import pytest

from mdsl.check import catalog
from mdsl.check import walk as walk_module
from mdsl.check.rules.base import Check, PlanEnd, PlanText
from mdsl.check.rules.e_plan import E106
from mdsl.check.rules.p_preflight import P402
from mdsl.findings import Finding, Severity
from mdsl.syntax import ast as A
from check_helpers import FIXTURES, findings_of

STEP_KINDS = {c for c in vars(A).values() if isinstance(c, type) and issubclass(c, A.Step) and c is not A.Step}


def test_every_h_rule_has_a_check_and_no_other_does():
    checked = {c.rule.code for c in catalog.CHECKS}
    assert checked == {r.code for r in catalog.RULES if r.family.startswith("H")}


@pytest.mark.parametrize("check", catalog.CHECKS, ids=lambda c: f"{c.rule.code}-{c.judge.__name__}")
def test_each_check_declares_what_it_looks_at(check):
    assert isinstance(check, Check) and check.steps and check.judge.__doc__
    assert set(check.steps) <= STEP_KINDS | {PlanText, PlanEnd}
    assert check.steps in ((PlanText,), (PlanEnd,)) or PlanText not in check.steps and PlanEnd not in check.steps


def test_a_check_yields_findings_of_its_own_code_only(monkeypatch):
    seen = set()

    def own(check):
        def judge(*args):
            for f in check.judge(*args):
                assert f.code == check.rule.code, (check.judge.__name__, f)
                seen.add(f.code)
                yield f
        return Check(check.rule, check.steps, judge)

    monkeypatch.setattr(walk_module, "_JUDGES_BY_STEP", walk_module._by_step([own(c) for c in catalog.CHECKS]))
    for path in sorted(FIXTURES.glob("H*/bad*.plan")):
        findings_of(path.read_text(encoding="utf-8"), path.name)
    assert seen == {r.code for r in catalog.RULES if r.family.startswith("H")}


def test_e_and_p_findings_come_from_their_rules():
    span = A.Span("x.plan", 3, 5, 3, 9)
    f = E106.finding("`port` must be 1-65535", span, label="here", help="fix it", notes=("a note",))
    assert f == Finding("E106", Severity.ERROR, "`port` must be 1-65535", span, label="here", notes=("a note",),
                        help="fix it")
    assert P402.finding("no zstd", span).severity == Severity.ERROR
    # a rule's own severity, unless one is given (H102 reports infos too)
    assert catalog.get("H102").finding("m", span).severity == Severity.WARNING
    assert catalog.get("H102").finding("m", span, severity=Severity.INFO).severity == Severity.INFO
