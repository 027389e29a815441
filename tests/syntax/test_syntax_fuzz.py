"""Hostile input never crashes the parser: it yields a plan or exactly one clean E101 finding."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsl.findings import PlanError, Severity
from mdsl.syntax import ast as A
from mdsl.syntax.parser import parse_bytes, parse_text
from mutations import mutated
from syntax_helpers import language_example

FUZZ = settings(max_examples=300, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow])


def assert_clean(outcome, text_lines: int):
    """A parse result is a Plan, or a PlanError with one E101 pointing inside the file."""
    if isinstance(outcome, A.Plan):
        return
    assert isinstance(outcome, PlanError), outcome
    (f,) = outcome.findings
    assert f.code == "E101" and f.severity == Severity.ERROR
    assert f.message.startswith(("syntax error: ", "cannot read the plan: "))
    sp = f.span
    assert 1 <= sp.line <= text_lines
    assert sp.col >= 1 and sp.end_col >= 1
    assert (sp.end_line, sp.end_col) >= (sp.line, sp.col)


def outcome_of(fn, *args):
    try:
        return fn(*args)
    except PlanError as exc:
        return exc


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data):
    assert_clean(outcome_of(parse_bytes, data, "fuzz.plan"), data.count(b"\n") + 1)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list('{}[]()=,:"\\# \n\tabehlnoprstv019_-')), max_size=200))
def test_random_plan_alphabet_text(text):
    assert_clean(outcome_of(parse_text, text, "fuzz.plan"), text.count("\n") + 1)


@FUZZ
@given(mutated(language_example()))
def test_mutated_language_example(text):
    assert_clean(outcome_of(parse_text, text, "fuzz.plan"), text.count("\n") + 1)
