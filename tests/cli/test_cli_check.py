"""`mdsl check`: exit codes, every output format, several plans, standard input, usage errors."""

from __future__ import annotations

import json

import jsonschema
import pytest

from cli_helpers import ROOT, SCHEMAS, run
from mdsl.findings import Finding, Severity
from mdsl.syntax.ast import Span

SARIF_SCHEMA = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
JSON_SCHEMA = json.loads((SCHEMAS / "mdsl-findings.schema.json").read_text(encoding="utf-8"))


def fake_check(monkeypatch, findings_for):
    """Make `check_plan` return findings_for(plan) (the exit-code logic, whatever the rules say)."""
    import mdsl.check

    class Result:
        def __init__(self, findings):
            self.findings = findings

    monkeypatch.setattr(mdsl.check, "check_plan", lambda plan, rollback=False: Result(findings_for(plan)))


def finding(plan, sev, code="H201", line=1, col=1):
    return Finding(code, sev, f"{sev.label} finding", Span(plan.path, line, col, line, col + 4), label="here")


# ---------------------------------------------------------------- exit codes


def test_clean_plan_exits_0(clean_plan):
    r = run(["check", clean_plan])
    assert r.code == 0, r
    assert r.out == "no findings\n" and r.err == ""


def test_syntax_error_exits_2_with_a_rendered_finding(write_plan):
    path = write_plan('host a {\n  ssh = "root@x\n}\n')
    r = run(["check", path])
    assert r.code == 2, r
    assert r.out.startswith("error[E101]: syntax error: unterminated string\n")
    assert f" --> {path}:2:9\n" in r.out
    assert '2 |   ssh = "root@x\n' in r.out
    assert r.out.endswith("\n1 error\n")
    assert r.err == ""


def test_unreadable_file_exits_2(tmp_path):
    r = run(["check", str(tmp_path / "missing.plan")])
    assert r.code == 2
    assert "error[E101]: cannot read the plan: No such file or directory" in r.out
    r = run(["check", str(tmp_path)])
    assert r.code == 2 and "Is a directory" in r.out


def test_unresolved_names_exit_2(unresolved_plan):
    r = run(["check", unresolved_plan])
    assert r.code == 2, r
    assert "error[E102]: unknown name `nothing_here`" in r.out
    assert "error[E102]: unknown name `no_db`" in r.out


@pytest.mark.parametrize("fail_on, severities, expected", [
    ("warning", [Severity.WARNING], 1),
    ("warning", [Severity.ERROR], 1),
    ("warning", [Severity.INFO], 0),
    ("error", [Severity.WARNING, Severity.INFO], 0),
    ("error", [Severity.ERROR], 1),
    ("info", [Severity.INFO], 1),
    ("info", [], 0),
])
def test_fail_on_threshold(monkeypatch, clean_plan, fail_on, severities, expected):
    fake_check(monkeypatch, lambda plan: [finding(plan, s, line=i + 1) for i, s in enumerate(severities)])
    r = run(["check", clean_plan, "--fail-on", fail_on])
    assert r.code == expected, r


def test_default_fail_on_is_warning(monkeypatch, clean_plan):
    fake_check(monkeypatch, lambda plan: [finding(plan, Severity.WARNING)])
    assert run(["check", clean_plan]).code == 1
    fake_check(monkeypatch, lambda plan: [finding(plan, Severity.INFO)])
    assert run(["check", clean_plan]).code == 0


def test_an_e1xx_error_means_2_even_with_fail_on_error(monkeypatch, clean_plan):
    fake_check(monkeypatch, lambda plan: [finding(plan, Severity.ERROR, code="E106")])
    assert run(["check", clean_plan, "--fail-on", "error"]).code == 2


def test_seed_as_it_went_fires_h101():
    path = ROOT / "plans" / "examples" / "seed-as-it-went.plan"
    r = run(["check", str(path)])
    assert r.code == 1, r
    assert "error[H101]" in r.out


# ---------------------------------------------------------------- several plans, stdin


def test_several_plans_in_one_run_are_reported_in_order(write_plan, clean_plan):
    bad1 = write_plan("steps { stop a }\n", "b.plan")
    bad2 = write_plan("host x { local = true }\nsteps { stop q\n stop r }\n", "a.plan")
    r = run(["check", "--format", "json", bad1, clean_plan, bad2])
    assert r.code == 2
    got = [(f["file"], f["line"], f["column"]) for f in json.loads(r.out)]
    assert got == [(bad1, 1, 14), (bad2, 2, 14), (bad2, 3, 7)]


def test_findings_within_a_plan_are_sorted_by_position(monkeypatch, clean_plan):
    fake_check(monkeypatch, lambda plan: [finding(plan, Severity.WARNING, line=9, col=1, code="H301"),
                                          finding(plan, Severity.ERROR, line=2, col=5, code="H101"),
                                          finding(plan, Severity.ERROR, line=2, col=1, code="H203")])
    data = json.loads(run(["check", clean_plan, "--format", "json"]).out)
    assert [(f["line"], f["column"], f["code"]) for f in data] == [(2, 1, "H203"), (2, 5, "H101"), (9, 1, "H301")]


def test_the_same_plan_twice_is_checked_once(unresolved_plan):
    data = json.loads(run(["check", "--format", "json", unresolved_plan, unresolved_plan]).out)
    assert len(data) == 2


def test_standard_input():
    from cli_helpers import CLEAN_PLAN, UNRESOLVED_PLAN

    assert run(["check", "-"], stdin=CLEAN_PLAN.encode()).code == 0
    r = run(["check", "-"], stdin=UNRESOLVED_PLAN.encode())
    assert r.code == 2
    assert " --> <stdin>:3:8\n" in r.out and "3 |   stop nothing_here" in r.out


# ---------------------------------------------------------------- formats


def test_json_format(unresolved_plan):
    r = run(["check", unresolved_plan, "--format", "json"])
    assert r.code == 2
    data = json.loads(r.out)
    jsonschema.validate(data, JSON_SCHEMA)
    assert data[0]["code"] == "E102" and data[0]["file"] == unresolved_plan
    assert (data[0]["line"], data[0]["column"], data[0]["end_line"], data[0]["end_column"]) == (3, 8, 3, 20)
    assert data[0]["help"]


def test_json_format_of_a_clean_plan(clean_plan):
    r = run(["check", clean_plan, "--format", "json"])
    assert (r.code, json.loads(r.out)) == (0, [])


def test_sarif_format_validates_against_the_official_schema(unresolved_plan, write_plan):
    syntax = write_plan("host {", "syntax.plan")
    r = run(["check", unresolved_plan, syntax, "--format", "sarif"])
    assert r.code == 2
    doc = json.loads(r.out)
    jsonschema.Draft4Validator(SARIF_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(doc)
    results = doc["runs"][0]["results"]
    assert [x["ruleId"] for x in results] == ["E102", "E102", "E101"]
    region = results[0]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 3, "startColumn": 8, "endLine": 3, "endColumn": 20}
    assert results[0]["level"] == "error"


def test_sarif_of_a_clean_plan_validates(clean_plan):
    doc = json.loads(run(["check", clean_plan, "--format", "sarif"]).out)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(doc)
    assert doc["runs"][0]["results"] == []


def test_github_format(unresolved_plan):
    r = run(["check", unresolved_plan, "--format", "github"])
    assert r.code == 2
    lines = r.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"::error file={unresolved_plan},line=3,col=8,endLine=3,endColumn=19,title=E102::"
                               "unknown name `nothing_here`%0A")


def test_text_format_has_no_color_when_not_a_terminal(unresolved_plan):
    assert "\x1b[" not in run(["check", unresolved_plan]).out


def test_color_flag(unresolved_plan, monkeypatch):
    assert "\x1b[1;31merror[E102]\x1b[0m" in run(["check", unresolved_plan, "--color", "always"]).out
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" not in run(["check", unresolved_plan, "--color", "never"]).out
    assert "\x1b[" in run(["check", unresolved_plan]).out
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in run(["check", unresolved_plan]).out


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize("argv", [
    [], ["check"], ["check", "x.plan", "--format", "xml"], ["check", "x.plan", "--fail-on", "never"],
    ["nonsense"], ["apply"], ["check", "--bogus", "x.plan"],
])
def test_usage_errors_exit_2(argv):
    r = run(argv)
    assert r.code == 2, r
    assert r.err and "Traceback" not in r.err


def test_help_exits_0():
    r = run(["--help"])
    assert r.code == 0 and "check" in r.out and "explain" in r.out and "apply" in r.out
    r = run(["check", "--help"])
    assert r.code == 0
    for word in ("--format", "--fail-on", "end_column", "exit status"):
        assert word in r.out


def test_version():
    r = run(["--version"])
    assert r.code == 0 and r.out.startswith("mdsl ")


# ---------------------------------------------------------------- internal errors


def test_an_internal_error_is_reported_without_a_traceback(monkeypatch, clean_plan):
    import mdsl.check

    def boom(plan, rollback=False):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(mdsl.check, "check_plan", boom)
    r = run(["check", clean_plan])
    assert r.code == 2
    assert "mdsl: internal error during `mdsl check`: RuntimeError: kaboom" in r.err
    assert "Traceback" not in r.err and "MDSL_DEBUG=1" in r.err
    monkeypatch.setenv("MDSL_DEBUG", "1")
    r = run(["check", clean_plan])
    assert "Traceback" in r.err and "kaboom" in r.err


def test_keyboard_interrupt_exits_130(monkeypatch, clean_plan):
    import mdsl.check

    def interrupted(plan, rollback=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(mdsl.check, "check_plan", interrupted)
    r = run(["check", clean_plan])
    assert r.code == 130 and r.err == "mdsl: interrupted\n"
