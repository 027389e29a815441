"""`mdsl explain`, `mdsl fmt`, and the lazy dispatch of `plan`, `apply` and `status`."""

from __future__ import annotations

import sys
import types

import pytest

from cli_helpers import run
from mdsl.findings import Severity

# ---------------------------------------------------------------- explain


class _Rule:
    def __init__(self, code, title, severity):
        self.code, self.title, self.severity = code, title, severity


@pytest.fixture
def stand_in_catalogue(monkeypatch):
    cat = types.ModuleType("mdsl.check.catalog")
    cat.RULES = (_Rule("E101", "syntax error", Severity.ERROR),
                 _Rule("H101", "data destroyed with no other copy", Severity.ERROR),
                 _Rule("H102", "subpath never copied", Severity.WARNING))
    cat.page = lambda code: f"# {code}: {cat.get(code).title}\n\nWhat goes wrong.\n"
    cat.get = lambda code: {r.code: r for r in cat.RULES}[code]
    monkeypatch.setitem(sys.modules, "mdsl.check.catalog", cat)
    import mdsl.check

    monkeypatch.setattr(mdsl.check, "catalog", cat, raising=False)
    return cat


def test_explain_prints_the_page(stand_in_catalogue):
    r = run(["explain", "H101"])
    assert r.code == 0 and r.out == "# H101: data destroyed with no other copy\n\nWhat goes wrong.\n"


def test_explain_accepts_lowercase(stand_in_catalogue):
    assert run(["explain", "h102"]).out.startswith("# H102")


def test_explain_unknown_code_suggests(stand_in_catalogue):
    r = run(["explain", "H110"])
    assert r.code == 2 and r.out == ""
    assert "mdsl: unknown finding code `H110`" in r.err
    assert "help: did you mean `H102`, `H101` or `E101`?" in r.err and "`mdsl explain` lists every code" in r.err


def test_explain_garbage_code(stand_in_catalogue):
    r = run(["explain", "\x1b[31m;rm -rf /"])
    assert r.code == 2 and "\x1b" not in r.err


def test_explain_without_a_code_lists_the_catalogue(stand_in_catalogue):
    r = run(["explain"])
    assert r.code == 0
    assert r.out.splitlines()[:3] == ["E101  error    syntax error",
                                      "H101  error    data destroyed with no other copy",
                                      "H102  warning  subpath never copied"]


def test_explain_every_code_of_the_real_catalogue():
    from mdsl.check import catalog

    codes = [r.code for r in catalog.RULES]
    assert "H101" in codes and "E101" in codes
    for code in codes:
        r = run(["explain", code])
        assert r.code == 0 and r.out.strip(), code
    assert run(["explain", "Z999"]).code == 2


# ---------------------------------------------------------------- fmt

MESSY = 'host a{local=true}\nsteps{stop   s  # why\n}\n'
TIDY = "host a { local = true }\n\nsteps {\n  stop s  # why\n}\n"


def test_fmt_rewrites_in_place_and_keeps_the_mode(write_plan):
    import os

    path = write_plan(MESSY)
    os.chmod(path, 0o640)
    r = run(["fmt", path])
    assert r.code == 0 and r.out == f"reformatted {path}\n"
    assert open(path, encoding="utf-8").read() == TIDY
    assert os.stat(path).st_mode & 0o777 == 0o640
    r = run(["fmt", path])
    assert r.code == 0 and r.out == ""


def test_fmt_check_and_diff_change_nothing(write_plan):
    path = write_plan(MESSY)
    r = run(["fmt", "--check", path])
    assert r.code == 1 and r.out == f"would reformat {path}\n"
    r = run(["fmt", "--diff", path])
    assert r.code == 1 and "-host a{local=true}\n-steps{stop   s  # why\n+host a { local = true }\n" in r.out
    assert open(path, encoding="utf-8").read() == MESSY
    tidy = write_plan(TIDY, "tidy.plan")
    assert run(["fmt", "--check", tidy]).code == 0


def test_fmt_refuses_a_plan_that_does_not_parse(write_plan):
    path = write_plan("host a {")
    r = run(["fmt", path])
    assert r.code == 2
    assert "error[E101]" in r.err
    assert open(path, encoding="utf-8").read() == "host a {"
    r = run(["fmt", path + ".missing"])
    assert r.code == 2 and "cannot read" in r.err


def test_fmt_invalid_utf8(write_plan):
    path = write_plan(b"host a { ssh = \"\xff\" }")
    r = run(["fmt", "--check", path])
    assert r.code == 2 and "not valid UTF-8" in r.err


# ---------------------------------------------------------------- plan / apply / status


@pytest.fixture
def stand_in_runner(monkeypatch):
    calls = []
    mod = types.ModuleType("mdsl.run.commands")
    for name in ("plan", "apply", "status"):
        def command(args, _name=name):
            calls.append((_name, args))
            return 0
        setattr(mod, f"{name}_command", command)
    monkeypatch.setitem(sys.modules, "mdsl.run.commands", mod)
    import mdsl.run

    monkeypatch.setattr(mdsl.run, "commands", mod, raising=False)
    return calls


def test_apply_arguments_reach_the_runner(stand_in_runner):
    assert run(["apply", "x.plan", "--dry-run", "--yes", "--from", "cutover", "--log-format", "json",
                "--accept-new-host-keys", "--restart"]).code == 0
    (name, args), = stand_in_runner
    assert name == "apply"
    assert (args.plan, args.dry_run, args.yes, args.from_label, args.log_format, args.accept_new_host_keys,
            args.restart) == ("x.plan", True, True, "cutover", "json", True, True)


def test_apply_defaults(stand_in_runner):
    run(["apply", "x.plan"])
    args = stand_in_runner[0][1]
    assert (args.dry_run, args.yes, args.from_label, args.log_format, args.accept_new_host_keys, args.restart) == (
        False, False, None, None, False, False)
    run(["apply", "x.plan", "-y"])
    assert stand_in_runner[1][1].yes is True


def test_plan_and_status_dispatch(stand_in_runner):
    assert run(["plan", "p.plan"]).code == 0
    assert run(["status", "p.plan"]).code == 0
    assert [(n, a.plan) for n, a in stand_in_runner] == [("plan", "p.plan"), ("status", "p.plan")]


def test_runner_exit_status_is_passed_through(monkeypatch, stand_in_runner):
    monkeypatch.setattr(sys.modules["mdsl.run.commands"], "apply_command", lambda args: 3)
    assert run(["apply", "x.plan"]).code == 3


def test_runner_missing_a_dependency(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "mdsl.run" and fromlist and "commands" in fromlist:
            raise ModuleNotFoundError("No module named 'fabric'", name="fabric")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    r = run(["apply", "x.plan"])
    assert r.code == 2 and "needs the Python package `fabric`" in r.err


def test_fmt_as_a_filter_on_standard_input():
    r = run(["fmt", "-"], stdin=MESSY.encode())
    assert (r.code, r.out) == (0, TIDY)
    r = run(["fmt", "--check", "-"], stdin=MESSY.encode())
    assert r.code == 1 and r.out == "would reformat <stdin>\n"
    assert run(["fmt", "--check", "-"], stdin=TIDY.encode()).code == 0
    r = run(["fmt", "-"], stdin=b"host {")
    assert r.code == 2 and " --> <stdin>:1:6" in r.err and "1 | host {" in r.err


def test_fmt_drops_a_byte_order_mark(write_plan):
    path = write_plan(b"\xef\xbb\xbf" + TIDY.encode())
    assert run(["fmt", "--check", path]).code == 1
    assert run(["fmt", path]).code == 0
    assert open(path, "rb").read() == TIDY.encode()
