"""The catalogue: complete, ordered, and every page's bad plan fires its code while
the fixed plan does not."""

from __future__ import annotations

import pytest

from mdsl.check import catalog
from mdsl.findings import Severity
from check_helpers import findings_of

EXPECTED = (
    [f"E10{i}" for i in range(1, 8)] + [f"H10{i}" for i in range(1, 5)] + [f"H20{i}" for i in range(1, 6)]
    + [f"H30{i}" for i in range(1, 10)] + [f"A10{i}" for i in range(1, 7)] + [f"P40{i}" for i in range(1, 10)]
    + ["P410", "P411", "P412"]
)
PLAN_RULES = [r for r in catalog.RULES if r.family != "P"]


def test_catalogue_lists_every_code_once_in_order():
    assert [r.code for r in catalog.RULES] == EXPECTED


def test_get_is_case_insensitive_and_none_for_unknown():
    assert catalog.get("h101") is catalog.get("H101")
    assert catalog.get("H999") is None


def test_severities_follow_hazards_md():
    sev = {r.code: r.severity for r in catalog.RULES}
    errors = {"H101", "H103", "H104", "H201", "H202", "H203", "H204", "H205", "H304", "A101", "A102", "A105"}
    for code, s in sev.items():
        if code.startswith(("E", "P")) or code in errors:
            assert s == Severity.ERROR, code
        else:
            assert s == Severity.WARNING, code
    assert Severity.INFO in catalog.get("H102").also


@pytest.mark.parametrize("rule", catalog.RULES, ids=lambda r: r.code)
def test_page_has_every_section(rule):
    page = catalog.page(rule.code)
    assert page.startswith(f"{rule.code}: {rule.title}")
    assert rule.severity.label in page
    assert "## What goes wrong" in page
    assert rule.summary and rule.bad and rule.fixed
    flat = " ".join(page.split())
    for line in rule.bad.strip().splitlines()[:3]:
        assert " ".join(line.split()) in flat


def test_page_of_unknown_code_raises():
    with pytest.raises(KeyError):
        catalog.page("H999")


@pytest.mark.parametrize("rule", PLAN_RULES, ids=lambda r: r.code)
def test_bad_example_fires_and_fixed_example_is_clean(rule):
    bad = findings_of(rule.bad, f"{rule.code}-bad.plan")
    assert rule.code in {f.code for f in bad}, [(f.code, f.message) for f in bad]
    fixed = findings_of(rule.fixed, f"{rule.code}-fixed.plan")
    loud = [(f.code, f.span.line, f.message) for f in fixed if f.severity >= Severity.WARNING]
    assert loud == []
