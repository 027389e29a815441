"""Property tests: hostile plans go through parse, check and every renderer, and through
`mdsl check` itself, without anything but clean findings (E1xx when the plan is unusable)."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import ROOT, load_test_module, run
from mdsl import render
from mdsl.findings import Finding, PlanError, Severity
from mdsl.syntax.parser import parse_bytes

mutations = load_test_module("tests/syntax/mutations.py", "mdsl_test_mutations")
helpers = load_test_module("tests/syntax/syntax_helpers.py", "mdsl_test_syntax_helpers")

FUZZ = settings(max_examples=200, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# The language example, the real plans and every checker fixture (good and bad twins).
SEEDS = [helpers.language_example()] + [p.read_bytes().decode("utf-8", "replace")
                                        for d in ("plans", "tests/fixtures") for p in sorted((ROOT / d).rglob("*.plan"))]


def pipeline(data: bytes):
    """parse -> check -> all four renderers; returns the findings."""
    from mdsl.check import check_plan

    sources = render.Sources()
    sources.add("fuzz.plan", data)
    try:
        plan = parse_bytes(data, "fuzz.plan")
    except PlanError as exc:
        findings = exc.findings
        assert [f.code for f in findings] == ["E101"]
    else:
        findings = check_plan(plan).findings
    for f in findings:
        assert isinstance(f, Finding) and isinstance(f.severity, Severity)
        assert f.span.line >= 1 and f.span.col >= 1
    for fmt in render.FORMATS:
        out = render.render(findings, fmt, sources)
        if fmt in ("json", "sarif"):
            json.loads(out)
    return findings


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_through_the_pipeline(data):
    pipeline(data)


@FUZZ
@given(st.sampled_from(SEEDS).flatmap(lambda text: mutations.mutated(text)))
def test_mutated_plans_through_the_pipeline(text):
    pipeline(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SEEDS).flatmap(lambda text: mutations.mutated(text)),
       st.sampled_from(["text", "json", "sarif", "github"]))
def test_mutated_plans_through_mdsl_check(tmp_path, text, fmt):
    path = tmp_path / "fuzz.plan"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    r = run(["check", str(path), "--format", fmt])
    assert r.err == "", r
    assert r.code in (0, 1, 2), r
    if fmt == "json":
        findings = json.loads(r.out)
        unusable = any(f["code"].startswith("E") and f["severity"] == "error" for f in findings)
        assert (r.code == 2) == unusable, r
