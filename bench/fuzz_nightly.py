"""The nightly fuzz run: 100k+ hostile plan files through parse, check, render and compile.

    python3 bench/fuzz_nightly.py                   # 100k inputs, every family, then the time-scaling table
    python3 bench/fuzz_nightly.py -n 10000 --seed 3
    python3 bench/fuzz_nightly.py --atheris 200000   # coverage-guided, when `atheris` is installed
    python3 bench/fuzz_nightly.py --scaling-only

The inputs and the oracle are tests/reliability/fuzzlib.py's (the suite runs a few thousand of
the same): random bytes, the language's alphabet, mutated valid plans, valid plans with
hostile values, deep nesting, huge files (up to 1 MB), invalid UTF-8, NUL and control bytes.
Every input must end in findings (a file that does not parse: one E101, exit 2), never an
exception; no input may take more than `--slow` seconds; and per byte, the largest input of
each shape may cost at most `--max-growth` times what the smallest did (linear time).

Failing inputs are written to --out (default /tmp/mdsl-fuzz-failures/) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

import fuzzlib as F  # noqa: E402


def run_random(n: int, seed: int, out: Path, slow: float) -> int:
    seeds = F.seed_plans()
    gens = F.generators(seeds)
    names = list(gens)
    weights = [F.WEIGHTS[x] for x in names]
    r = random.Random(seed)
    count = collections.Counter()
    exits = collections.Counter()
    failures = collections.Counter()
    slowest = []
    total_bytes = 0
    t0 = time.perf_counter()
    last = t0
    for i in range(n):
        fam = r.choices(names, weights)[0]
        data = gens[fam](r)
        total_bytes += len(data)
        count[fam] += 1
        try:
            dt, code, _ = F.timed(data)
        except BaseException as exc:  # noqa: BLE001 - every escape is a finding of this run
            if isinstance(exc, KeyboardInterrupt):
                raise
            key = (fam, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            if not failures[key]:
                out.mkdir(parents=True, exist_ok=True)
                p = out / f"failure-{len(failures):03d}-{fam}.plan"
                p.write_bytes(data)
                print(f"FAIL {fam}: {key[1]}: {key[2]}\n  input: {p}", file=sys.stderr)
                traceback.print_exc(limit=4, file=sys.stderr)
            failures[key] += 1
            continue
        exits[code] += 1
        slowest.append((dt, len(data), fam))
        if len(slowest) > 200:
            slowest.sort(reverse=True)
            del slowest[20:]
        if i % 500 == 499:
            # parse_text gc.freeze()s what it built (a CLI runs one parse); a long run must undo that
            gc.unfreeze()
            gc.collect()
        now = time.perf_counter()
        if now - last > 30:
            print(f"  {i + 1}/{n} inputs, {now - t0:.0f}s", file=sys.stderr)
            last = now
    elapsed = time.perf_counter() - t0
    slowest.sort(reverse=True)
    print(f"\n## random inputs: {n} (seed {seed}) in {elapsed:.0f}s, {total_bytes / 1e6:.1f} MB")
    print("\n| family | inputs |\n|---|---|")
    for fam in names:
        print(f"| {fam} | {count[fam]} |")
    print("\nexit status mdsl check would give: " + ", ".join(f"{k}: {v}" for k, v in sorted(exits.items())))
    print(f"failures (crash or broken promise): {sum(failures.values())} ({len(failures)} distinct)")
    print("slowest inputs: " + ", ".join(f"{fam} {size} B {dt:.2f}s" for dt, size, fam in slowest[:5]))
    # a budget per input that grows with its size: the time bound is linear, and a loaded machine
    # (this runs beside other work, niced) can stall a big input for seconds
    too_slow = [(dt, size, fam) for dt, size, fam in slowest if dt > slow * (1 + size / 1e6)]
    if too_slow:
        print(f"inputs over {slow}s per MB: {too_slow[:10]}")
    return 1 if failures or too_slow else 0


def run_scaling(max_growth: float) -> int:
    sizes = [62_500, 125_000, 250_000, 500_000, 1_000_000, 2_000_000]
    print(f"\n## time against size (best of 3; per-byte growth from {sizes[0]} to {sizes[-1]} bytes)\n")
    print("| shape | " + " | ".join(f"{s // 1000} kB" for s in sizes) + " | growth |")
    print("|---|" + "---|" * (len(sizes) + 1))
    bad = 0
    for family, kind in F.SCALING_SHAPES:
        points = F.scaling(family, kind, sizes, repeat=3)
        g = F.growth(points)
        if g > max_growth:  # once more: a busy machine can stall the largest size
            points = F.scaling(family, kind, sizes, repeat=5)
            g = F.growth(points)
        bad += g > max_growth
        print(f"| {family}-{kind} | " + " | ".join(f"{t:.3f}s" for _, t in points)
              + f" | {g:.2f}x{' TOO SLOW' if g > max_growth else ''} |")
    return 1 if bad else 0


def run_atheris(runs: int) -> int:
    """Coverage-guided: libFuzzer drives the same oracle (in a child process: libFuzzer exits when done)."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install atheris); skipped")
        return 0
    import subprocess

    corpus = Path(os.environ.get("TMPDIR", "/tmp")) / "mdsl-atheris-corpus"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(F.seed_plans()):
        (corpus / f"seed-{i:03d}.plan").write_text(s)
    code = (
        "import sys, atheris\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests' / 'reliability')!r}]\n"
        "with atheris.instrument_imports(include=['mdsl']):\n"
        "    import mdsl.syntax.parser, mdsl.check, mdsl.render, mdsl.compile\n"
        "import fuzzlib\n"
        "def one(data):\n"
        "    fuzzlib.check_one(data)\n"
        "atheris.Setup(sys.argv, one)\n"
        "atheris.Fuzz()\n"
    )
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, f"-runs={runs}", "-max_len=20000", "-timeout=20",
                        f"-artifact_prefix={corpus}/crash-", str(corpus)], capture_output=True, text=True)
    tail = [x for x in p.stderr.splitlines() if x.startswith(("#", "Done", "==", "INFO: Seed")) or "Error" in x]
    print(f"\n## atheris: {runs} runs in {time.perf_counter() - t0:.0f}s, exit {p.returncode}")
    print("\n".join(tail[-5:]))
    if p.returncode != 0:
        print(p.stderr[-5000:])
    return 0 if p.returncode == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="random inputs (default 100000)")
    ap.add_argument("--seed", type=int, default=int(time.strftime("%Y%m%d")), help="default: today's date")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mdsl-fuzz-failures"))
    ap.add_argument("--slow", type=float, default=10.0,
                    help="seconds one input may take, per started MB (default 10)")
    ap.add_argument("--max-growth", type=float, default=2.5, help="per-byte time growth allowed (default 2.5)")
    ap.add_argument("--atheris", type=int, default=0, metavar="RUNS", help="also run atheris for RUNS inputs")
    ap.add_argument("--scaling-only", action="store_true")
    args = ap.parse_args()
    rc = 0
    if not args.scaling_only:
        rc |= run_random(args.n, args.seed, args.out, args.slow)
    rc |= run_scaling(args.max_growth)
    if args.atheris:
        rc |= run_atheris(args.atheris)
    print("\nresult:", "FAILED" if rc else "ok")
    return rc


if __name__ == "__main__":
    sys.exit(main())
