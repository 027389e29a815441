"""Lanes: `sequence { ... }` directly inside `parallel { }`, and nowhere else."""

from __future__ import annotations

from mdsl.findings import PlanError
from mdsl.syntax import ast as A
from mdsl.syntax import parser as P
from mdsl.syntax.format import format_text
from syntax_helpers import parse, syntax_error, where

LANES = """\
steps {
  stop a
  parallel {
    run h "x"  # a plain member
    sequence {
      stop b
      copy: transfer h:"/a" to k:"/a"
      start c
    }
    # the second lane
    sequence { stop d  start e }
  }
}
"""


def test_lanes_parse_into_sequences_inside_the_block():
    (stop, block) = parse(LANES).steps
    assert isinstance(stop, A.Stop) and isinstance(block, A.Parallel)
    run, lane1, lane2 = block.steps
    assert isinstance(run, A.Run)
    assert isinstance(lane1, A.Sequence) and isinstance(lane2, A.Sequence)
    assert [type(s) for s in lane1.steps] == [A.Stop, A.Transfer, A.Start]
    assert lane1.steps[1].label.name == "copy"
    assert [s.services[0].name for s in lane2.steps] == ["d", "e"]
    assert (lane1.span.line, lane1.span.col, lane1.span.end_line) == (5, 5, 9)
    assert lane2.keyword == "sequence"


def test_walk_steps_enters_lanes():
    kinds = [type(s).__name__ for s in A.walk_steps(parse(LANES).steps)]
    assert kinds == ["Stop", "Parallel", "Run", "Sequence", "Stop", "Transfer", "Start", "Sequence", "Stop", "Start"]


def test_the_hand_written_lexer_agrees_with_lark():
    for text in (LANES, LANES.replace("sequence {", "sequence{"), "steps { parallel { sequence { } } }",
                 "steps { sequence { stop a } }", "steps { parallel { sequence { parallel { sequence { } } } } }",
                 "steps { parallel { sequence { sequence { } } } }"):
        def outcome(parser, text=text):
            try:
                return P._parse_with(parser, text, "d.plan")
            except PlanError as exc:
                return [(f.message, where(f)) for f in exc.findings]
        assert outcome(P._parser()) == outcome(P._reference_parser()), text


def test_format_keeps_lanes_and_their_comments():
    out = format_text(LANES)
    assert parse(out) == parse(LANES)
    assert format_text(out) == out
    assert "    sequence {\n      stop d\n      start e\n    }\n" in out
    assert "    # the second lane\n    sequence {" in out
    assert '      copy: transfer h:"/a" to k:"/a"\n' in out


def test_a_lane_outside_a_parallel_block_is_an_error():
    f = syntax_error('steps {\n  sequence { stop a }\n}')
    assert where(f) == (2, 3, 2, 11)
    assert f.message.startswith("syntax error: unexpected `sequence`")
    assert "directly inside `parallel { }`" in f.help


def test_a_lane_has_no_label():
    f = syntax_error('steps { parallel {\n  l: sequence { stop a }\n} }')
    assert where(f) == (2, 6, 2, 14)
    assert f.message.startswith("syntax error: unexpected `sequence`")


def test_a_lane_may_hold_a_parallel_block_with_lanes_of_its_own():
    text = 'steps { parallel {\n  sequence {\n    stop a\n    parallel { stop b  sequence { stop c  stop d } }\n' \
           '    start e\n  }\n} }'
    (block,) = parse(text).steps
    (lane,) = block.steps
    stop, inner, start = lane.steps
    assert isinstance(inner, A.Parallel) and isinstance(inner.steps[1], A.Sequence)
    assert [s.services[0].name for s in inner.steps[1].steps] == ["c", "d"]
    out = format_text(text)
    assert parse(out) == parse(text) and format_text(out) == out
    assert "      parallel {\n        stop b\n        sequence {\n          stop c\n" in out


def test_lanes_count_toward_the_nesting_limit():
    deep = "steps { " + "parallel { sequence { " * 20 + "stop a" + " } }" * 20 + " }"
    f = syntax_error(deep)
    assert "nested more than" in f.message


def test_sequence_is_still_a_name_elsewhere():
    plan = parse('host sequence { ssh = "root@x" }\nsteps { run sequence "true" }')
    assert plan.decls[0].name.name == "sequence"
    assert plan.steps[0].host.name == "sequence"
