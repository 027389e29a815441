"""`mdsl fmt`: idempotent, meaning-preserving (equal AST), and no comment is lost or moved away."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from mdsl.findings import PlanError
from mdsl.syntax.format import format_text
from mdsl.syntax.parser import parse_text
from mutations import mutated
from syntax_helpers import ROOT, language_example

PLANS = sorted(str(p) for d in ("plans", "tests/fixtures") for p in (ROOT / d).rglob("*.plan"))


def comments(text):
    return [c.text.rstrip() for c in parse_text(text, "c.plan").comments]


def assert_good_format(text):
    out = format_text(text, "f.plan")
    assert parse_text(out, "f.plan") == parse_text(text, "f.plan")
    assert format_text(out, "f.plan") == out
    assert sorted(comments(out)) == sorted(comments(text))
    assert out.endswith("\n") or out == ""
    assert all(line == line.rstrip() for line in out.split("\n"))
    return out


def test_language_example(example_text):
    assert_good_format(example_text)


def _parses(path) -> bool:
    try:
        parse_text(Path(path).read_bytes().decode("utf-8", "replace"), path)
    except PlanError:
        return False  # a fixture that does not parse, on purpose (E101)
    return True


PARSEABLE = [p for p in PLANS if _parses(p)]


def test_only_syntax_fixtures_fail_to_parse():
    assert {os.path.basename(os.path.dirname(p)) for p in PLANS if p not in PARSEABLE} <= {"E101"}


@pytest.mark.parametrize("path", PARSEABLE, ids=[os.path.relpath(p, ROOT) for p in PARSEABLE])
def test_real_plans_and_fixtures(path):
    text = Path(path).read_bytes().decode("utf-8", "replace")
    assert_good_format(text)


def test_canonical_layout():
    messy = (
        'plan   "t"\n'
        'host a{ssh="r@x" port=22}\n'
        'host b { local = true }\n'
        'dir d on a { path = "/d"\n owner = "m:m" derived "cache" rebuild "x \\"y\\"" }\n'
        'steps{stop   s,t  lbl :dump db to a : "/x"  format=custom\n'
        'parallel{ archive d to a:"/y" exclude "c","e\\\\f" }}\n'
    )
    assert format_text(messy) == (
        'plan "t"\n'
        "\n"
        'host a { ssh = "r@x"  port = 22 }\n'
        "host b { local = true }\n"
        "\n"
        "dir d on a {\n"
        '  path  = "/d"\n'
        '  owner = "m:m"\n'
        '  derived "cache" rebuild "x \\"y\\""\n'
        "}\n"
        "\n"
        "steps {\n"
        "  stop s, t\n"
        '  lbl: dump db to a:"/x" format = custom\n'
        "  parallel {\n"
        '    archive d to a:"/y" exclude "c", "e\\\\f"\n'
        "  }\n"
        "}\n"
    )


def test_comments_stay_with_their_items():
    text = (
        "# header\n"
        "host a { local = true }   # trailing on a one-line decl\n"
        "\n"
        "dir d on a {  # after the brace\n"
        "  # above path\n"
        '  path = "/d"     # after path\n'
        "  # before the closing brace\n"
        "}\n"
        "steps {\n"
        '  # mdsl: allow H102 "rebuilt after start"\n'
        '  archive d to a:"/x" exclude "cache"\n'
        "  stop s  # mdsl: allow H301 \"retired\"\n"
        "  # end of steps\n"
        "}\n"
        "# the end\n"
    )
    out = assert_good_format(text)
    assert out == (
        "# header\n"
        "host a { local = true }  # trailing on a one-line decl\n"
        "\n"
        "dir d on a {  # after the brace\n"
        "  # above path\n"
        '  path = "/d"  # after path\n'
        "  # before the closing brace\n"
        "}\n"
        "\n"
        "steps {\n"
        '  # mdsl: allow H102 "rebuilt after start"\n'
        '  archive d to a:"/x" exclude "cache"\n'
        '  stop s  # mdsl: allow H301 "retired"\n'
        "  # end of steps\n"
        "}\n"
        "# the end\n"
    )
    # A suppression stays on the line above its step (or on the step's line).
    lines = out.split("\n")
    i = lines.index('  # mdsl: allow H102 "rebuilt after start"')
    assert lines[i + 1].lstrip().startswith("archive")


def test_a_body_with_comments_inside_is_never_folded_onto_one_line():
    out = assert_good_format("host a {\n  # why local\n  local = true\n}\n")
    assert out == "host a {\n  # why local\n  local = true\n}\n"


def test_two_comments_on_one_multi_line_step_are_both_kept():
    out = assert_good_format('steps {\n  dump db to a:"/x"  # one\n    format = custom  # two\n}\n')
    assert out == 'steps {\n  # one\n  dump db to a:"/x" format = custom  # two\n}\n'


def test_blank_lines_are_kept_but_collapsed():
    out = assert_good_format("steps {\n\n  stop a\n\n\n\n  stop b\n  stop c\n\n}\n")
    assert out == "steps {\n  stop a\n\n  stop b\n  stop c\n}\n"


def test_no_blank_line_before_a_closing_brace():
    out = assert_good_format("steps {\n  stop a\n\n  # the end\n\n}\n")
    assert out == "steps {\n  stop a\n\n  # the end\n}\n"


def test_empty_and_comment_only_files():
    assert format_text("") == ""
    assert format_text("\n\n") == ""
    assert format_text("# just this\n") == "# just this\n"


def test_format_raises_plan_error_on_bad_syntax():
    with pytest.raises(PlanError):
        format_text("host {")


@settings(max_examples=200, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutated(language_example()))
def test_format_of_any_parsable_mutation(text):
    try:
        parse_text(text, "f.plan")
    except PlanError:
        return
    assert_good_format(text)


def test_one_line_declarations_on_consecutive_lines_line_up_their_braces():
    text = ('host ubuntu { ssh = "r@u" }\nhost beetroot { ssh = "r@b"  port = 22 }\n'
            "host here { local = true }  # this machine\n\n"
            'host far { ssh = "r@f" }\n# a comment line ends the run\nhost farther { ssh = "r@g" }\n')
    assert assert_good_format(text) == (
        'host ubuntu   { ssh = "r@u" }\n'
        'host beetroot { ssh = "r@b"  port = 22 }\n'
        "host here     { local = true }  # this machine\n"
        "\n"
        'host far { ssh = "r@f" }\n'
        "# a comment line ends the run\n"
        'host farther { ssh = "r@g" }\n'
    )


def test_a_body_stays_on_one_line_or_on_several_as_written():
    text = ('dir a on h { path = "/a"  owner = "x:x"  mode = "0750" }\n'
            'dir b on h {\n  path = "/b"\n}\n'
            "host e {\n}\n")
    assert assert_good_format(text) == (
        'dir a on h { path = "/a"  owner = "x:x"  mode = "0750" }\n'
        "\n"
        "dir b on h {\n"
        '  path = "/b"\n'
        "}\n"
        "\n"
        "host e { }\n"
    )


def test_a_one_line_body_too_long_for_a_line_is_spread():
    long = "/" + "x" * 90
    out = assert_good_format(f'dir a on h {{ path = "{long}"  owner = "x:x" }}\n')
    assert out == f'dir a on h {{\n  path  = "{long}"\n  owner = "x:x"\n}}\n'


def test_steps_are_not_aligned_in_columns():
    text = ('steps {\n  stop     app\n  parallel {\n    dump    db    to h:"/d"\n    archive files to h:"/f"\n  }\n'
            '  transfer h:"/d"      to g:"/d"\n  transfer h:"/longer" to g:"/f"\n}\n')
    assert assert_good_format(text) == (
        'steps {\n  stop app\n  parallel {\n    dump db to h:"/d"\n    archive files to h:"/f"\n  }\n'
        '  transfer h:"/d" to g:"/d"\n  transfer h:"/longer" to g:"/f"\n}\n')
