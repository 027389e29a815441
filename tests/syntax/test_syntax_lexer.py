"""The hand-written lexer (mdsl.syntax.lexer.PlanLexer) makes exactly the tokens of Lark's
contextual lexer: same trees, same spans, same comments, same syntax errors, on any input."""

from __future__ import annotations

import os

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsl.findings import PlanError
from mdsl.syntax import parser as P
from mutations import EXTRA_TOKENS, mutated
from syntax_helpers import ROOT, language_example

SEEDS = [language_example()] + [p.read_bytes().decode("utf-8", "replace")
                                 for d in ("plans", "tests/fixtures") for p in sorted((ROOT / d).rglob("*.plan"))]
SETTINGS = settings(max_examples=300, deadline=None, derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow])


def outcome(parser, text):
    """Everything a parse yields, spans included (AST equality ignores them)."""
    try:
        plan = P._parse_with(parser, text, "d.plan")
    except PlanError as exc:
        return ("error", [attrs.asdict(f) for f in exc.findings])
    return ("plan", attrs.asdict(plan, recurse=True))


def assert_same(text):
    assert outcome(P._parser(), text) == outcome(P._reference_parser(), text), text


@pytest.mark.parametrize("text", SEEDS, ids=range(len(SEEDS)))
def test_real_plans(text):
    assert_same(text)


@pytest.mark.parametrize("text", [
    "", "   \n\n", "# c", "host a { }", "hostx a { }", "stopold", "steps { stopold_app }", "steps { stop a b c }",
    "steps { backup: dump db to h:\"/x\" }", 'steps { backup : dump db to h : "/x" }', 'steps { a:"x" }',
    "host a { stop = 1 verify=false file = 2 }", "steps { verify = 1 }", "x = 1", "steps { x: y: stop a }",
    'host a { ssh = "unterminated', "host a { ssh = 'x' }", "host Abc", "host a { port = -1 }", "1abc",
    "steps {\n  parallel {\n    stop a\n", "host a {\x00}", "host a {\x0b}", "plan plan",
    "steps { run a \"x\" reads = [a, b] }",
    "host a { x = [[1], [2, [3]]] }", "steps { transfer a:\"/x\" to b:\"/y\" verify = false via = rsync }",
    'host a { ssh = "\\q" }', 'host a { ssh = "a\x1bb" }', "steps{stop a,b,c start d}", "steps { dns }",
    "host a { env = env(\"X\") file = file(\"/y\") }", "steps { exclude }",
    "steps { dump a to b exclude \"c\", \"d\" }",
    "mysql db on a { x = 1 }", "file file on on { }", "on on on on { }", "steps on a { }", "host a { }\nstop a",
    "hostt a { }", 'plann "x"', "dir x on a dir", "postgres db a { }", "host on { }", "sequence { }",
    'steps {\n  restore x into db\n  dupm db to h:"/x"\n}', "steps {\n  restore x into db\n  stpo a, b\n}",
    "steps { x: strat a }", "steps {\n  strat app\n}", "steps {\n  restore x into db\n  strat new_app\n}",
])
def test_corner_cases(text):
    assert_same(text)


@SETTINGS
@given(st.sampled_from(SEEDS).flatmap(lambda text: mutated(text, 4)))
def test_mutated_plans(text):
    assert_same(text)


@SETTINGS
@given(st.lists(st.sampled_from(EXTRA_TOKENS + ["stop", "a", "b", "1", "=", ":", "  ", "\n", "steps {", "}", "x:",
                                                "replace", "jobs", "dumpx", "verify", "http", "transfer", "sync",
                                                "live", "mysql", "on", "dir"]),
                max_size=30))
def test_token_soup(pieces):
    assert_same("".join(pieces))


@SETTINGS
@given(st.lists(st.sampled_from(["steps", "{", "}", "stop", "start", "dump", "to", "into", "parallel", "a", "b",
                                 "x", ":", "=", ",", '"/p"', "1", "host", "on", "exclude", "verify", "file"]),
                max_size=25),
       st.lists(st.sampled_from([" ", "", "\n", "\t"]), min_size=25, max_size=25))
def test_keyword_soup_with_and_without_blanks(words, blanks):
    assert_same("".join(w + b for w, b in zip(words, blanks, strict=False)))
