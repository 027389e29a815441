"""Typed command parts: quoting by type, masking of secrets, sudo wrapping."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdsl.compile.parts import Arg, Command, Lit, SecretArg, SecretText, Sub, sh
from mdsl.syntax import ast as A

PW = A.Secret("env", "DB_PASSWORD")


@given(st.text(min_size=0, max_size=40))
@settings(max_examples=200, deadline=None)
def test_an_arg_is_always_exactly_one_shell_word(value):
    cmd = Command("h", sh("echo", Arg(value), "end"))
    assert shlex.split(cmd.render()) == ["echo", value, "end"]


@given(st.text(min_size=0, max_size=30))
@settings(max_examples=100, deadline=None)
def test_a_prefixed_arg_keeps_prefix_and_value_in_one_word(value):
    assert shlex.split(Command("h", (Lit("x"), Arg(value, "--dbname="))).render()) == ["x", "--dbname=" + value]


def test_a_secret_cannot_be_a_command_word():
    with pytest.raises(TypeError):
        Command("h", (Lit("echo"), SecretArg(PW)))


def test_secret_text_masks_and_reveals():
    text = SecretText([Lit("*:*:*:*:"), SecretArg(PW, escape="pgpass"), Lit("\n")])
    assert text.masked() == "*:*:*:*:***\n"
    assert text.reveal(lambda s: "p:w\\d") == b"*:*:*:*:p\\:w\\\\d\n"
    assert text.secrets == (PW,)


def test_secret_file_shows_masked_and_runs_with_the_real_path():
    cmd = Command("h", sh("pg_dump", Arg("db")), secret_files=[("PGPASSFILE", SecretText([SecretArg(PW)]))])
    assert cmd.render() == "PGPASSFILE=<0600 temp file: ***> pg_dump db"
    assert cmd.render(masked=False, secret_paths={"PGPASSFILE": "/tmp/x y"}) == "PGPASSFILE='/tmp/x y' pg_dump db"
    assert cmd.secrets == (PW,)


def test_run_as_wraps_in_sudo_with_a_quoted_user():
    cmd = Command("h", sh("touch", Arg("/a b")), run_as="we'ird")
    words = shlex.split(cmd.render())
    assert words[:5] == ["sudo", "-n", "-u", "we'ird", "--"]
    assert words[5:7] == ["sh", "-c"]
    assert shlex.split(words[7]) == ["touch", "/a b"]


def test_argv_commands_skip_the_inner_shell_and_pass_env_after_sudo():
    cmd = Command("h", sh("pg_dump", Arg("x")), run_as="pg", argv=True,
                  secret_files=[("PGPASSFILE", SecretText([SecretArg(PW)]))])
    text = cmd.render(masked=False, secret_paths={"PGPASSFILE": "/tmp/f"})
    assert shlex.split(text) == ["sudo", "-n", "-u", "pg", "--", "env", "PGPASSFILE=/tmp/f", "pg_dump", "x"]


def test_sudo_password_goes_to_stdin_and_nested_sudo_under_root_needs_none():
    host_pw = A.Secret("env", "SUDO_PW")
    inner = Command("h", sh("id"), run_as="app", sudo=True, sudo_password=host_pw, argv=True)
    outer = Command("h", sh("cd /tmp &&", Sub(inner)), sudo=True, sudo_password=host_pw)
    text = outer.render()
    assert text.startswith("sudo -S -p '' -- sh -c ")
    inner_text = shlex.split(text)[-1]
    assert "sudo -n -u app -- id" in inner_text  # root needs no password: only the outer sudo reads stdin
    assert outer.stdin_text().reveal(lambda s: "hunter2") == b"hunter2\n"
    assert "hunter2" not in text


def test_host_sudo_without_user_is_not_repeated_inside():
    inner = Command("h", sh("ls"), sudo=True)
    outer = Command("h", sh("true &&", Sub(inner)), sudo=True)
    assert outer.render() == "sudo -n -- sh -c 'true && ls'"


def test_tools_and_secret_files_are_collected_from_nested_commands():
    inner = Command("h", sh("pg_dump"), run_as="pg", tools=("pg_dump",), argv=True,
                    secret_files=[("PGPASSFILE", SecretText([SecretArg(PW)]))])
    outer = Command("h", sh("x >", Arg("/f"), "&&", Sub(inner)), tools=("mv",))
    assert set(outer.all_tools()) == {"mv", "pg_dump", "sudo"}
    assert [f.var for f in outer.all_secret_files()] == ["PGPASSFILE"]
    assert outer.secrets == (PW,)
