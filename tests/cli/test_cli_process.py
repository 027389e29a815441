"""`mdsl` as a real process: what `check` imports, and no traceback for any file."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from cli_helpers import CLEAN_PLAN, MAIN, ROOT, UNRESOLVED_PLAN, run_subprocess

HEAVY = ("fabric", "paramiko", "invoke", "rich", "structlog", "cryptography", "nacl", "mdsl.run", "mdsl.compile")


def modules_loaded_by(argv, cwd):
    code = (
        "import sys\nfrom mdsl.cli import main\n"
        "import io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main({list(argv)!r})\n"
        "print(rc)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=60)
    assert p.returncode == 0, p.stderr
    rc, *mods = p.stdout.split("\n")
    return int(rc), set(mods)


@pytest.mark.parametrize("fmt", ["text", "sarif"])
def test_check_imports_no_runner_and_no_ssh(tmp_path, fmt):
    plan = tmp_path / "p.plan"
    plan.write_text(UNRESOLVED_PLAN)
    rc, mods = modules_loaded_by(["check", str(plan), "--format", fmt], tmp_path)
    assert rc == 2
    assert "mdsl.syntax.parser" in mods and "mdsl.check" in mods
    loaded = sorted(m for m in mods for h in HEAVY if m == h or m.startswith(h + "."))
    assert loaded == []


def test_check_of_a_real_plan_imports_no_runner(tmp_path):
    path = ROOT / "plans" / "mastodon-ubuntu-to-nixos.plan"
    _, mods = modules_loaded_by(["check", str(path)], tmp_path)
    assert not [m for m in mods for h in HEAVY if m == h or m.startswith(h + ".")]


def test_python_dash_m_mdsl(tmp_path):
    plan = tmp_path / "p.plan"
    plan.write_text("host {")
    p = subprocess.run([sys.executable, "-m", "mdsl", "check", str(plan)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "error[E101]" in p.stdout and p.stderr == ""


def _garbage_files(tmp_path):
    rnd = random.Random(20240601)
    files = {
        "random.bin": bytes(rnd.randrange(256) for _ in range(4000)),
        "empty.plan": b"",
        "nul.plan": b"\x00" * 100,
        "newlines.plan": b"\n" * 5000,
        "one_long_line.plan": b"host a { ssh = \"" + b"x" * 200_000 + b"\" } }",
        "deep_parallel.plan": b"steps {" + b"parallel {" * 5000 + b"}" * 5001,
        "deep_list.plan": b"host a { x = " + b"[" * 5000 + b"]" * 5000 + b" }",
        "escape.plan": 'host a { ssh = "\x1b]0;pwned\x07" }\n\u202e'.encode(),
        "utf16.plan": CLEAN_PLAN.encode("utf-16"),
        "braces.plan": b"{" * 10000,
        "strings.plan": b'"' * 9999,
        "elf.plan": b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8,
    }
    paths = []
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
def test_no_traceback_on_garbage_files(tmp_path, fmt):
    paths = _garbage_files(tmp_path) + [str(tmp_path), str(tmp_path / "missing.plan")]
    r = run_subprocess(["check", "--format", fmt, *paths], env={"MDSL_DEBUG": "1"})
    assert r.code == 2, r
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err[-3000:]
    assert r.err == ""
    if fmt == "text":
        assert r.out.count("error[E101]") == len(paths) - 2  # empty.plan and newlines.plan are valid, empty plans
        assert "\x1b" not in r.out and "\u202e" not in r.out and "\x07" not in r.out


def test_a_closed_pipe_is_not_an_error(tmp_path):
    plan = tmp_path / "many.plan"
    plan.write_text("host h { local = true }\nsteps {\n" + "".join(f"  stop s{i}\n" for i in range(3000)) + "}\n")
    code = MAIN
    p = subprocess.Popen([sys.executable, "-c", code, "check", str(plan)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.read(100)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert p.returncode in (1, 2)


@pytest.mark.parametrize("command", ["plan", "status"])
def test_a_closed_pipe_ends_plan_and_status_quietly(tmp_path, command):
    """`mdsl plan P | head -2`: the reader going away is a normal end, not an internal error."""
    plan = tmp_path / "many.plan"
    steps = "".join(f'  run h "true {i}"\n' for i in range(3000))
    plan.write_text('host h { local = true }\nsteps {\n' + steps + "}\n")
    for _ in range(3):  # the write that meets the closed pipe comes at a different point each time
        mdsl = subprocess.Popen([sys.executable, "-c", MAIN, command, str(plan)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        head = subprocess.Popen(["head", "-2"], stdin=mdsl.stdout, stdout=subprocess.PIPE)
        mdsl.stdout.close()  # head alone reads it
        shown = head.communicate(timeout=60)[0].decode()
        err = mdsl.stderr.read().decode()
        mdsl.wait(timeout=60)
        assert len(shown.splitlines()) == 2
        assert err == "", err
        assert mdsl.returncode in (0, 1)


def test_output_to_an_ascii_terminal_does_not_crash(tmp_path):
    plan = tmp_path / "p.plan"
    plan.write_text('host a { ssh = "日本" ; }\n', encoding="utf-8")
    r = run_subprocess(["check", str(plan)], env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert r.code == 2 and "error[E101]" in r.out and "Traceback" not in r.err


def test_unreadable_permissions(tmp_path):
    plan = tmp_path / "secret.plan"
    plan.write_text(CLEAN_PLAN)
    plan.chmod(0)
    if os.geteuid() == 0:  # root reads any file: give it a path no one can read a plan from
        r = run_subprocess(["check", str(tmp_path)])
        assert r.code == 2 and "error[E101]" in r.out and "Is a directory" in r.out, r
        return
    r = run_subprocess(["check", str(plan)])
    assert r.code == 2 and "Permission denied" in r.out
