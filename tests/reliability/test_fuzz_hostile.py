"""Hostile plan files through parse, check, render and compile: findings only, never a crash,
never more than linear time. A few thousand inputs here; bench/fuzz_nightly.py runs 100k+.

Families (tests/reliability/fuzzlib.py): random bytes, the language's alphabet, mutated
valid plans, valid plans with hostile values, deep nesting, huge files, invalid UTF-8, NUL
and control bytes. tests/syntax and tests/cli fuzz the parser and the CLI with random
bytes and mutations already; what is new here is the compile stage (hostile values in
plans that check clean), deep nesting, huge inputs, non-UTF-8 and NUL placement, and the
time bound.
"""

from __future__ import annotations

import io
import os
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzlib as F

SEEDS = F.seed_plans()
GENS = F.generators(SEEDS, huge_sizes=(10_000, 100_000))  # 1 MB files: bench/fuzz_nightly.py
EXAMPLES = {"huge-file": 15, "deep-nesting": 100, "hostile-values": 300, "mutated-plan": 300}

FUZZ = dict(deadline=None, derandomize=bool(os.environ.get("CI")), database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("family", sorted(GENS))
def test_family_gives_findings_never_a_crash(family):
    gen = GENS[family]

    @settings(max_examples=EXAMPLES.get(family, 250), **FUZZ)
    @given(st.randoms(use_true_random=False))
    def one(r):
        data = gen(r)
        code, codes = F.check_one(data)
        assert code in (0, 1, 2)

    one()


@pytest.mark.parametrize("kind", F.NEST_KINDS)
@pytest.mark.parametrize("depth", [32, 33, 10_000])
def test_deep_nesting_is_refused_as_e101(kind, depth):
    code, codes = F.check_one(F.nested(kind, depth))
    if depth > 32 or kind in ("braces", "unclosed", "brackets", "env"):
        assert code == 2 and codes and all(c.startswith("E1") for c in codes), codes


def test_garbage_is_only_e1xx_and_exit_2():
    """Inputs that are not plans at all: exactly E101 and exit 2 from the real CLI, nothing on stderr."""
    from mdsl.cli import main

    r = random.Random(7)
    samples = [b"\x00" * 50, b"\xff\xfe\x00\x00", "\ufeff\u202e".encode(), b"{" * 5000, b'"' * 999, b"\x1b[2J"]
    samples += [F.gen_random_bytes(r) for _ in range(20)] + [F.gen_invalid_utf8(r, SEEDS) for _ in range(20)]
    samples += [F.gen_nul(r, SEEDS) for _ in range(20)]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "g.plan")
        for data in samples:
            code, codes = F.check_one(data)
            if not codes or not all(c.startswith("E1") for c in codes):
                continue  # random bytes that happen to form a plan
            with open(path, "wb") as f:
                f.write(data)
            out, err = io.StringIO(), io.StringIO()
            saved = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = out, err
            try:
                got = main(["check", path, "--format", "json"])
            finally:
                sys.stdout, sys.stderr = saved
            assert got == 2, (data[:80], out.getvalue()[:500])
            assert err.getvalue() == "", err.getvalue()
            assert "Traceback" not in out.getvalue()


@pytest.mark.parametrize("family,kind", F.SCALING_SHAPES, ids=[f"{a}-{b}" for a, b in F.SCALING_SHAPES])
def test_time_grows_linearly(family, kind):
    """Per byte, a 16x larger input may cost at most ~3x more (noise on a shared machine; quadratic would be 16x)."""
    points = F.scaling(family, kind, [20_000, 320_000], repeat=2)
    g = F.growth(points, floor=0.005)
    if g > 3.0:  # one retry: a busy machine can stall one measurement
        points = F.scaling(family, kind, [20_000, 320_000], repeat=3)
        g = F.growth(points, floor=0.005)
    assert g <= 3.0, f"{family}/{kind}: {points} (per-byte growth {g:.1f}x)"
