"""`sync DIR to DIR live`: a bare flag on sync. It parses to a Sync with a `live` option (in any
order with `exclude`), the hand-written lexer agrees with Lark's, `mdsl fmt` keeps it, and `live`
stays usable as a name everywhere else."""

from __future__ import annotations

import attrs
import pytest

from mdsl.findings import PlanError
from mdsl.syntax import ast as A
from mdsl.syntax import parser as P
from mdsl.syntax.format import format_text
from syntax_helpers import parse

LIVE = A.Option(A.Ident("live"), None)


def one_step(text):
    plan = parse("steps {\n  " + text + "\n}\n")
    assert len(plan.steps) == 1, plan.steps
    return plan.steps[0]


def test_live_flag():
    s = one_step("sync old_files to new_files live")
    assert s == A.Sync(source=A.Ident("old_files"), dest=A.Ident("new_files"), options=(LIVE,))
    assert s.live
    assert not one_step("sync old_files to new_files").live


def test_live_with_exclude_in_either_order_and_a_label():
    s = one_step('presync: sync a to b live exclude "cache", "tmp" timeout = 60')
    assert s.live and s.label == A.Ident("presync")
    assert s.option("exclude").value == A.ListValue((A.Str("cache"), A.Str("tmp")))
    t = one_step('sync a to b exclude "cache" live')
    assert t.live and t.option("exclude").value == A.ListValue((A.Str("cache"),))
    span = t.option("live").span
    assert (span.line, span.col, span.end_col) == (2, 31, 35)


def test_live_is_still_a_name_elsewhere():
    plan = parse('host live { local = true }\ndir live_dir on live { path = "/x" }\n'
                 "steps {\n  sync live to live live\n  live: stop live\n}\n")
    sync, stop = plan.steps
    assert (sync.source.name, sync.dest.name, sync.live) == ("live", "live", True)
    assert stop.label == A.Ident("live") and stop.services == (A.Ident("live"),)


def test_the_next_step_is_not_swallowed():
    plan = parse("steps {\n  sync a to b live stop app\n  sync a to b\n}\n")
    assert [type(s).__name__ for s in plan.steps] == ["Sync", "Stop", "Sync"]
    assert [getattr(s, "live", None) for s in plan.steps] == [True, None, False]


@pytest.mark.parametrize("text", [
    "steps { sync a to b live }", 'steps { sync a to b live exclude "c" }', 'steps { sync a to b exclude "c" live }',
    "steps { sync a to b live live }", "steps { sync a to b live = true }", "steps { sync a to live }",
    "steps { sync live to b live\nlive: stop live }", "steps { live }", "steps { sync a to b\nlive }",
    "steps { parallel { sync a to b live } }", "steps { sync a to b live: stop x }",
])
def test_hand_written_lexer_matches_lark(text):
    def outcome(parser):
        try:
            return ("plan", attrs.asdict(P._parse_with(parser, text, "d.plan"), recurse=True))
        except PlanError as exc:
            return ("error", [attrs.asdict(f) for f in exc.findings])

    assert outcome(P._parser()) == outcome(P._reference_parser())


def test_format_keeps_live_in_place():
    messy = 'steps {\n   presync:sync   a to b   exclude "c"   live   # first pass\n  stop app\nsync a to b\n}\n'
    out = format_text(messy)
    assert out == ('steps {\n  presync: sync a to b exclude "c" live  # first pass\n  stop app\n'
                   "  sync a to b\n}\n")
    assert format_text(out) == out
    assert parse(out) == parse(messy)
