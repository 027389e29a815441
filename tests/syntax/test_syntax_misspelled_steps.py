"""A misspelled step keyword is named as one, once, with a did-you-mean (issue 17, item 8):
by the parser when the line cannot be read otherwise, by the resolver when it reads as options."""

from __future__ import annotations

import pytest

from mdsl.check import check_plan
from mdsl.syntax import ast as A
from mdsl.syntax.spelling import STEP_KEYWORDS
from syntax_helpers import parse, syntax_error, where

DECLS = '''host a { local = true }
host b { local = true }
postgres old_db on a { database = "x" }
postgres new_db on b { database = "x" }
service new_app on b { systemd = ["x"] writes = [new_db] }
'''


def e106(steps: str):
    """(message, (line, col, end_line, end_col)) of each E106 of the plan DECLS + steps; steps start on line 7."""
    plan = parse(DECLS + "steps {\n" + steps + "}\n")
    return [(f.message, where(f)) for f in check_plan(plan).findings if f.code == "E106"]


def test_a_misspelled_step_under_a_restore_is_named_once():
    found = e106('  dump old_db to a:"/tmp/x"\n  restore a:"/tmp/x" into new_db\n  strat new_app\n')
    assert found == [("unknown step `strat`: did you mean `start`?", (9, 3, 9, 8))]


def test_every_word_of_the_misspelled_line_is_covered_by_the_one_finding():
    found = e106('  restore a:"/tmp/x" into new_db\n  sycn old_db to new_db\n')
    assert found == [("unknown step `sycn`: did you mean `sync`?", (8, 3, 8, 7))]


def test_the_next_line_is_the_step_above_s_again():
    found = e106('  restore a:"/tmp/x" into new_db\n  strat new_app\n  jobs = 2 nope\n')
    assert found == [("unknown step `strat`: did you mean `start`?", (8, 3, 8, 8)),
                     ("`restore` has no option `nope`", (9, 12, 9, 16))]


def test_a_real_flag_on_its_own_line_is_an_option():
    assert e106('  restore a:"/tmp/x" into new_db\n    replace\n') == []


def test_a_word_on_the_step_s_own_line_stays_an_unknown_option():
    found = e106('  restore a:"/tmp/x" into new_db strat\n')
    assert [m for m, _ in found] == ["`restore` has no option `strat`"]


def test_a_word_like_no_step_stays_an_unknown_option():
    found = e106('  restore a:"/tmp/x" into new_db\n  frobnicate new_app\n')
    assert [m for m, _ in found] == ["`restore` has no option `frobnicate`", "`restore` has no option `new_app`"]


def test_a_head_over_several_lines_is_not_a_line_start():
    found = e106('  restore\n    a:"/tmp/x"\n    into\n    new_db strat\n')
    assert [m for m, _ in found] == ["`restore` has no option `strat`"]


@pytest.mark.parametrize("steps, message, at", [
    ('  restore x into db\n  dupm db to h:"/x"\n', "unknown step `dupm`: did you mean `dump`?", (3, 3, 3, 7)),
    ("  restore x into db\n  stpo a, b\n", "unknown step `stpo`: did you mean `stop`?", (3, 3, 3, 7)),
    ('  restore x into db replace\n  verfy http "x"\n', "unknown step `verfy`: did you mean `verify`?", (3, 3, 3, 8)),
    ("  strat app\n", "unknown step `strat`: did you mean `start`?", (2, 3, 2, 8)),
    ("  x: strat app\n", "unknown step `strat`: did you mean `start`?", (2, 6, 2, 11)),
    ("  parallel {\n    strat app\n  }\n", "unknown step `strat`: did you mean `start`?", (3, 5, 3, 10)),
])
def test_a_misspelled_step_the_parser_cannot_read_is_a_syntax_error_at_the_word(steps, message, at):
    f = syntax_error("steps {\n" + steps + "}\n")
    assert f.message == "syntax error: " + message
    assert where(f) == at


def test_a_misspelled_word_after_the_line_start_keeps_the_plain_syntax_error():
    f = syntax_error("steps {\n  restore x into db strat a, b\n}\n")
    assert f.message.startswith("syntax error: unexpected `,`")


def test_the_step_keywords_are_the_first_words_of_the_step_nodes():
    steps = {cls.keyword.split()[0] for cls in vars(A).values()
             if isinstance(cls, type) and issubclass(cls, A.Step) and cls is not A.Step}
    assert steps - {"sequence"} == STEP_KEYWORDS
