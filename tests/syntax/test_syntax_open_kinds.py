"""A resource kind is any name to the parser; an unknown kind is the resolver's E106 with a did-you-mean."""

from __future__ import annotations

import subprocess
import sys

from mdsl.check import check_plan
from syntax_helpers import ROOT, parse

PLAN = '''host a { local = true }
postgress db on a { database = "x" }
dir files on a { path = "/srv" }
steps {
  archive files to a:"/tmp/files.tar"
}
'''


def test_an_unknown_kind_parses_and_the_check_names_it_with_a_suggestion():
    plan = parse(PLAN, "k.plan")
    assert plan.decls[1].kind == "postgress"
    errors = [f for f in check_plan(plan).findings if f.code == "E106"]
    assert [(f.message, f.help) for f in errors] == [("unknown kind `postgress`", "did you mean `postgres`?")]
    span = errors[0].span
    assert (span.file, span.line, span.col, span.end_line, span.end_col) == ("k.plan", 2, 1, 2, 10)


def test_a_kind_far_from_any_lists_the_known_kinds():
    plan = parse('host a { local = true }\nzzz q on a { }\n', "k.plan")
    (f,) = [f for f in check_plan(plan).findings if f.code == "E106"]
    assert f.message == "unknown kind `zzz`"
    assert f.help.startswith("known kinds: ") and "postgres" in f.help and "host" not in f.help


def test_mdsl_check_reports_an_unknown_kind_at_file_line_col_without_a_traceback(tmp_path):
    path = tmp_path / "k.plan"
    path.write_text(PLAN)
    p = subprocess.run([sys.executable, "-m", "mdsl", "check", str(path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "error[E106]: unknown kind `postgress`" in out
    assert f"{path}:2:1" in out
    assert "did you mean `postgres`?" in out
    assert "Traceback" not in out
