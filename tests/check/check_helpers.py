"""Helpers for the checker's tests: parse and check text or files, read `# expect:` markers."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import List

from mdsl.check import check_plan
from mdsl.findings import Finding, PlanError, Severity
from mdsl.syntax.parser import parse_text

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

_EXPECT = re.compile(r"#\s*expect:\s*(.*)$")
_CODE = re.compile(r"\b[EHPA]\d{3}\b")
_LINE = re.compile(r"\bline\s+(\d+)\b")


ROLLBACK_MARKER = "# checked with: mdsl check --rollback"


def findings_of(text: str, name: str = "test.plan") -> List[Finding]:
    """Every finding for a plan text, syntax errors included; checked as `mdsl check --rollback` does when
    a line of it says `# checked with: mdsl check --rollback`."""
    try:
        plan = parse_text(text, name)
    except PlanError as exc:
        return exc.findings
    return check_plan(plan, rollback=ROLLBACK_MARKER in text).findings


def expectations(text: str) -> Counter:
    """(code, line) pairs from `# expect: CODE [, CODE]` (this line) or `# expect: CODE line N` markers."""
    out: Counter = Counter()
    for i, line in enumerate(text.split("\n"), start=1):
        m = _EXPECT.search(line)
        if not m:
            continue
        at = _LINE.search(m.group(1))
        for code in _CODE.findall(m.group(1)):
            out[(code, int(at.group(1)) if at else i)] += 1
    return out


def observed(findings: List[Finding], expected: Counter) -> Counter:
    """(code, line) of findings at warning or above, and of infos whose code is expected."""
    codes = {c for c, _ in expected}
    return Counter((f.code, f.span.line) for f in findings
                   if f.severity >= Severity.WARNING or f.code in codes)
