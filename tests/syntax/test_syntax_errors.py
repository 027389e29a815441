"""Syntax errors are one E101 finding at the exact line:col of the problem, with a useful message."""

from __future__ import annotations

import pytest

from mdsl.findings import PlanError, Severity
from mdsl.syntax.parser import MAX_NESTING, parse_bytes, parse_file
from syntax_helpers import parse, syntax_error, where


def bytes_error(data: bytes, file: str = "t.plan"):
    with pytest.raises(PlanError) as info:
        parse_bytes(data, file)
    (f,) = info.value.findings
    assert f.code == "E101" and f.severity == Severity.ERROR
    return f


# ---------------------------------------------------------------- unexpected token


def test_unexpected_token_in_a_body():
    f = syntax_error('host a { ssh "x" }')
    assert where(f) == (1, 10, 1, 13)
    assert f.message == "syntax error: unexpected name `ssh`, expected one of `derived`, `key = value`, `}`"
    assert f.label == "unexpected name `ssh`"
    assert f.span.file == "t.plan"


def test_unexpected_token_on_a_later_line():
    f = syntax_error("steps {\n  stop a\n  dump\n}")
    assert where(f) == (4, 1, 4, 2)
    assert "unexpected `}`, expected a name" in f.message


def test_stray_closing_brace():
    f = syntax_error('host a { ssh = "x" } }')
    assert where(f) == (1, 22, 1, 23)
    assert f.message == ("syntax error: unexpected `}`, expected one of `host`, `plan`, `steps`, "
                         "a resource (`KIND NAME on HOST { }`), end of file")


def test_step_outside_the_steps_block():
    f = syntax_error("host a { local = true }\n\nstop a\n")
    assert where(f) == (3, 1, 3, 5)
    assert f.message == "syntax error: unexpected `stop`: a step outside `steps { }`"
    assert f.help == "write the steps inside the `steps { }` block"


@pytest.mark.parametrize("text, at", [
    ('dump db to h:"/x"', (1, 1, 1, 5)), ("host a { }\nparallel {\n}", (2, 1, 2, 9)),
    ('host a { }\nverify http "x"', (2, 1, 2, 7)), ("sequence { }", (1, 1, 1, 9)),
])
def test_any_step_outside_the_steps_block_is_named_at_its_keyword(text, at):
    f = syntax_error(text)
    assert where(f) == at
    assert "a step outside `steps { }`" in f.message


@pytest.mark.parametrize("text, meant, at", [
    ("hostt a { }", "host", (1, 9, 1, 10)), ('plann "x"', "plan", (1, 7, 1, 10)), ("step {\n}", "steps", (1, 6, 1, 7)),
])
def test_a_misspelled_top_level_keyword_gets_a_did_you_mean(text, meant, at):
    f = syntax_error(text)
    assert where(f) == at
    assert f.help.endswith(f"did you mean `{meant}`?")


def test_a_resource_header_without_on_has_no_guess():
    f = syntax_error("postgres db a { }")
    assert where(f) == (1, 13, 1, 14)
    assert f.message == "syntax error: unexpected name `a`, expected `on`"
    assert f.help is None


def test_key_value_at_top_level_gets_a_help():
    f = syntax_error("x = 1")
    assert where(f) == (1, 1, 1, 2)
    assert "belongs inside a declaration" in f.help


def test_label_without_a_step():
    f = syntax_error("steps { x: }")
    assert where(f) == (1, 12, 1, 13)
    assert "expected a step (`stop`, `dump`, `transfer`, ...)" in f.message


def test_trailing_comma_in_a_name_list():
    assert where(syntax_error("steps { stop a, }")) == (1, 17, 1, 18)


def test_trailing_comma_in_a_list_value():
    assert where(syntax_error("host a { a = [1,] }")) == (1, 17, 1, 18)


def test_keyword_where_a_string_belongs():
    f = syntax_error("plan plan")
    assert where(f) == (1, 6, 1, 10)
    assert f.message == "syntax error: unexpected `plan`, expected a string"


def test_two_labels_on_one_step():
    f = syntax_error("steps { x: y: stop a }")
    assert where(f) == (1, 12, 1, 14)


# ---------------------------------------------------------------- unexpected character


def test_unexpected_character():
    f = syntax_error('host a { ssh = "x" }\nsteps {\n  stop a ;\n}\n')
    assert where(f) == (3, 10, 3, 11)
    assert f.message.startswith("syntax error: unexpected character ';'")
    assert f.label == "unexpected character"


def test_uppercase_name_gets_a_help():
    f = syntax_error("host Abc { }")
    assert where(f) == (1, 6, 1, 7)
    assert "lowercase" in f.help


def test_single_quotes_get_a_help():
    f = syntax_error("host a { ssh = 'x' }")
    assert where(f) == (1, 16, 1, 17)
    assert "double quotes" in f.help


def test_negative_number():
    f = syntax_error("host a { port = -1 }")
    assert where(f) == (1, 17, 1, 18)
    assert "not negative" in f.help


def test_unexpected_character_after_wide_characters_counts_characters():
    f = syntax_error('host a { x = "日本語" ; }')
    assert where(f) == (1, 20, 1, 21)


# ---------------------------------------------------------------- strings


def test_unterminated_string():
    f = syntax_error('host a {\n  ssh = "root@x\n}\n')
    assert where(f) == (2, 9, 2, 16)
    assert f.message == "syntax error: unterminated string"
    assert "same line" in f.help


def test_unterminated_string_at_end_of_file():
    f = syntax_error('host a { ssh = "root')
    assert where(f) == (1, 16, 1, 21)


def test_string_ending_in_a_backslash_is_unterminated():
    assert where(syntax_error('host a { ssh = "x\\" }')) == (1, 16, 1, 22)


def test_bad_escape():
    f = syntax_error('host a { ssh = "a\\qb" }')
    assert where(f) == (1, 18, 1, 20)
    assert f.message == "syntax error: unknown escape `\\q` in a string"
    assert "\\\\" in f.help


def test_bad_escape_in_a_step_string():
    f = syntax_error('steps {\n  run h "echo \\$HOME"\n}')
    assert where(f) == (2, 15, 2, 17)


@pytest.mark.parametrize("ch, code", [("\x00", "U+0000"), ("\x1b", "U+001B"), ("\x7f", "U+007F"), ("\r", "U+000D")])
def test_control_character_in_a_string(ch, code):
    f = syntax_error(f'host a {{ ssh = "ab{ch}c" }}')
    assert where(f) == (1, 19, 1, 20)
    assert code in f.message


# ---------------------------------------------------------------- end of file


def test_end_of_file_inside_a_body():
    f = syntax_error('host a { ssh = "x" ')
    assert where(f) == (1, 20, 1, 20)
    assert f.message.startswith("syntax error: unexpected end of file")
    assert f.notes == ("the `{` at t.plan:1:8 is never closed",)
    assert f.help == "add the missing `}`"


def test_end_of_file_after_a_newline_names_the_innermost_open_brace():
    f = syntax_error('host a { local = true }\nsteps {\n  parallel {\n    stop x # {\n  }\n  run a "{"\n')
    assert where(f) == (7, 1, 7, 1)
    assert f.notes == ("the `{` at t.plan:2:7 is never closed",)


def test_end_of_file_where_a_value_belongs():
    f = syntax_error("host a { ssh =")
    assert where(f) == (1, 15, 1, 15)


# ---------------------------------------------------------------- bytes


def test_invalid_utf8_reports_the_character_column():
    f = bytes_error(b'host a { ssh = "\xc3\xa9\xff" }\n')
    assert where(f) == (1, 18, 1, 19)
    assert f.message == "syntax error: the file is not valid UTF-8 (byte 0xff)"
    assert f.help == "save the plan as UTF-8"


def test_invalid_utf8_on_a_later_line():
    assert where(bytes_error(b'host a {\n  ssh = "x" }\n\x80')) == (3, 1, 3, 2)


def test_latin1_file():
    f = bytes_error('host a { ssh = "café" }'.encode("latin-1"))
    assert where(f) == (1, 20, 1, 21)
    assert "0xe9" in f.message


def test_nul_byte_outside_a_string():
    f = bytes_error(b"host a {\x00 }")
    assert where(f) == (1, 9, 1, 10)
    assert f.message.startswith("syntax error: unexpected character '\\x00'")


def test_nul_byte_inside_a_string():
    f = bytes_error(b'host a {\n  ssh = "a\x00" }')
    assert where(f) == (2, 11, 2, 12)
    assert "U+0000" in f.message


def test_byte_order_mark_is_ignored():
    plan = parse_bytes(b"\xef\xbb\xbfhost a { local = true }", "t.plan")
    assert plan.decls[0].name.name == "a"
    assert plan.decls[0].span.col == 1


def test_unreadable_file(tmp_path):
    with pytest.raises(PlanError) as info:
        parse_file(str(tmp_path / "missing.plan"))
    (f,) = info.value.findings
    assert f.code == "E101" and f.message == "cannot read the plan: No such file or directory"
    with pytest.raises(PlanError) as info:
        parse_file(str(tmp_path))
    assert info.value.findings[0].message == "cannot read the plan: Is a directory"


# ---------------------------------------------------------------- nesting


def test_parallel_nesting_limit():
    ok = "steps {\n" + "parallel {\n" * MAX_NESTING + "}\n" * MAX_NESTING + "}"
    parse(ok)
    deep = "steps {\n" + "parallel {\n" * (MAX_NESTING + 1) + "}\n" * (MAX_NESTING + 1) + "}"
    f = syntax_error(deep)
    assert where(f) == (2, 1, 2, 9)
    assert f.message == f"syntax error: `parallel` blocks nested more than {MAX_NESTING} deep"


def test_list_nesting_limit():
    parse("host a { x = " + "[" * MAX_NESTING + "]" * MAX_NESTING + " }")
    f = syntax_error("host a { x = " + "[" * 1000 + "]" * 1000 + " }")
    assert f.message == f"syntax error: lists nested more than {MAX_NESTING} deep"


def test_errors_do_not_leak_between_parses():
    syntax_error('host a { ssh = "x" ')
    plan = parse("host b { local = true }", "second.plan")
    assert plan.decls[0].span.file == "second.plan"
