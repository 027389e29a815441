"""Every finding code has fixtures: `bad*.plan` fires it where its `# expect:` markers say,
and `good*.plan` does not fire it at warning or above (an info reminder, such as H102's
for a `derived` subpath, is allowed where marked). Every warning and error in a
fixture, and every info of a marked code, must be marked."""

from __future__ import annotations

import pytest

from mdsl.check import catalog
from mdsl.findings import Severity
from check_helpers import FIXTURES, expectations, findings_of, observed

FILES = sorted(FIXTURES.glob("[EHA][0-9][0-9][0-9]/*.plan"))


def _id(p):
    return f"{p.parent.name}/{p.name}"


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_fixture_fires_where_marked(path):
    text = path.read_text(encoding="utf-8")
    code = path.parent.name
    findings = findings_of(text, str(path))
    expected = expectations(text)
    got = observed(findings, expected)
    if path.name.startswith("bad"):
        assert any(c == code for c, _ in expected), f"{_id(path)} has no `# expect: {code}` marker"
    else:
        assert not any(f.code == code and f.severity >= Severity.WARNING for f in findings), \
            f"{_id(path)} fires {code}"
    shown = "\n".join(f"  {f.code} {f.span.line}:{f.span.col} {f.message}" for f in findings)
    assert got == expected, f"{_id(path)}: expected {sorted(expected)}, got\n{shown}"


def test_every_code_has_bad_and_good_fixtures():
    for rule in catalog.RULES:
        if rule.family == "P":
            continue  # preflight findings need real hosts: tests/e2e covers them
        d = FIXTURES / rule.code
        assert sorted(d.glob("bad*.plan")), f"no bad fixture for {rule.code}"
        assert sorted(d.glob("good*.plan")), f"no good fixture for {rule.code}"


def test_no_fixture_for_an_unknown_code():
    codes = {r.code for r in catalog.RULES}
    for d in FIXTURES.iterdir():
        if d.is_dir() and d.name[:1] in "EHPA" and d.name[1:].isdigit():
            assert d.name in codes, f"tests/fixtures/{d.name} names no catalogued code"
