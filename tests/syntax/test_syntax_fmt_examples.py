"""Every plan the project ships is in `mdsl fmt` layout (issue 17, item 9): the plans under plans/
and every code block tagged `plan` in the docs. A block tagged `plan fragment` is a piece of a
plan and is left out; an untagged block that is a whole plan is an error (tag it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mdsl.findings import PlanError
from mdsl.syntax.format import format_text
from mdsl.syntax.parser import parse_text
from syntax_helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLANS = sorted((ROOT / "plans").rglob("*.plan"))
# A fenced block: its info string (what follows the opening ```) and its text.
_FENCE_RE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def code_blocks(doc: Path):
    """(info string, text, line of the opening fence) of every fenced block in `doc`."""
    source = doc.read_text(encoding="utf-8")
    return [(m.group(1).strip(), m.group(2), source.count("\n", 0, m.start()) + 1)
            for m in _FENCE_RE.finditer(source)]


def blocks_tagged(info: str):
    return [(doc, text, line) for doc in DOCS for tag, text, line in code_blocks(doc) if tag == info]


PLAN_BLOCKS = blocks_tagged("plan")


def _is_whole_plan(text: str) -> bool:
    try:
        plan = parse_text(text, "block.plan")
    except PlanError:
        return False
    return bool(plan.decls or plan.steps or plan.title)


def test_the_docs_show_plans():
    # The language reference's examples are tagged: a docs rewrite that drops the tags would empty this test.
    assert len([b for b in PLAN_BLOCKS if b[0].name == "language.md"]) >= 2


@pytest.mark.parametrize("path", PLANS, ids=[str(p.relative_to(ROOT)) for p in PLANS])
def test_every_plan_is_in_fmt_layout(path):
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text, f"run `mdsl fmt {path.relative_to(ROOT)}`"


@pytest.mark.parametrize("doc, text, line", PLAN_BLOCKS,
                         ids=[f"{doc.relative_to(ROOT)}:{line}" for doc, text, line in PLAN_BLOCKS])
def test_every_plan_block_in_the_docs_is_in_fmt_layout(doc, text, line):
    assert format_text(text, f"{doc.name}:{line}") == text


def test_a_whole_plan_in_the_docs_is_tagged_plan():
    untagged = [f"{doc.relative_to(ROOT)}:{line}" for doc in DOCS for tag, text, line in code_blocks(doc)
                if tag not in ("plan", "plan fragment") and _is_whole_plan(text)]
    assert untagged == [], "tag these blocks ```plan (or ```plan fragment for a piece of a plan)"


def test_mdsl_fmt_check_accepts_every_plan_and_docs_example(tmp_path):
    paths = [str(p) for p in PLANS]
    for i, (_doc, text, _line) in enumerate(PLAN_BLOCKS):
        block = tmp_path / f"block{i}.plan"
        block.write_text(text, encoding="utf-8")
        paths.append(str(block))
    p = subprocess.run([sys.executable, "-m", "mdsl", "fmt", "--check", *paths], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_fmt_check_rejects_a_plan_out_of_layout(tmp_path):
    # The test above could pass with a --check that accepts anything.
    plan = tmp_path / "p.plan"
    plan.write_text("host a { local = true }\nsteps {\n  stop    a\n}\n", encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "mdsl", "fmt", "--check", str(plan)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert p.returncode == 1 and str(plan) in p.stdout + p.stderr
