"""Helpers for the syntax tests: the language reference example and parse shortcuts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mdsl.findings import PlanError
from mdsl.syntax.parser import parse_text

ROOT = Path(__file__).resolve().parents[2]


def language_example() -> str:
    """The big example of the language reference (docs/language.md, else shared/LANGUAGE.md)."""
    for doc in (ROOT / "docs" / "language.md", ROOT.parent / "shared" / "LANGUAGE.md"):
        if doc.exists():
            m = re.search(r"```(?:plan)?\n(# comments run.*?)```", doc.read_text(encoding="utf-8"), re.S)
            if m:
                return m.group(1)
    raise AssertionError("docs/language.md lost its main example")


def parse(text: str, file: str = "t.plan"):
    """Parse plan text (a helper, so tests read as `parse(...)`)."""
    return parse_text(text, file)


def syntax_error(text: str, file: str = "t.plan"):
    """The single E101 finding `text` produces."""
    with pytest.raises(PlanError) as info:
        parse_text(text, file)
    findings = info.value.findings
    assert len(findings) == 1
    f = findings[0]
    assert f.code == "E101"
    return f


def where(f):
    """(line, col, end_line, end_col) of a finding."""
    return (f.span.line, f.span.col, f.span.end_line, f.span.end_col)
