"""Hostile plan input and the oracle every input must satisfy; shared by the test suite
(tests/reliability/test_fuzz_hostile.py, a few thousand inputs) and the nightly benchmark
(bench/fuzz_nightly.py, 100k inputs and more).

The oracle (`check_one`): whatever the bytes, parse -> check -> every renderer ->
(when the plan has no error) compile -> every command rendered, and it ends in findings:

- a parse failure is exactly one E101 finding pointing inside the file;
- an error-severity finding is an E1xx finding (the input is unusable: `mdsl check`
  exits 2) or one of the checker's H1xx-H3xx codes (a real plan, a real finding);
- JSON and SARIF output parse; no exception of any other kind escapes;
- a plan without errors compiles, or is refused with a CompileError (never a crash),
  and every command it compiles to renders.

The generators are plain `random.Random` functions (fast enough for 100k inputs a
run); `hypothesis` strategies wrap the same functions for the suite.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]

CODE_RE = re.compile(r"^[EHP][0-9]{3}$")


# ---------------------------------------------------------------- seeds


def _language_example() -> str:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    m = re.search(r"```(?:plan)?\n(# comments run.*?)```", text, re.S)
    return m.group(1) if m else ""


def seed_plans() -> List[str]:
    """Valid plans to mutate: the language example, the real plans, every checker fixture."""
    out = [_language_example()]
    for d in ("plans", "tests/fixtures"):
        for p in sorted((ROOT / d).rglob("*.plan")):
            out.append(p.read_bytes().decode("utf-8", "replace"))
    return [s for s in out if s]


# ---------------------------------------------------------------- hostile pieces

HOSTILE_VALUES = [
    "it's", 'say "hi"', "$(touch /tmp/mdsl-fuzz-pwned)", "`touch pwned`", "; touch pwned ;", "| touch pwned",
    "-rf", "--help", "-oProxyCommand=touch pwned", "a\nb", "\t", "ünï cødé ✓ 日本 \u202e", "a\\b", "$HOME", "*",
    " lead", "trail ", "x && touch pwned", ">pwned", "../../etc/passwd", "/", "//", "/.", "/tmp/..",
    "%s%n", "{}", "'\"'\"'", "\\", "\x1b[31m", "x" * 5000,
]

TOKENS = [
    "{", "}", "[", "]", "(", ")", ",", ":", "=", '"', "\\", "#", "\n", " ", "\t", "\r", "\x00", "\ufeff",
    "steps", "parallel", "host", "on", "to", "into", "exclude", "env", "file", "true", "false", "plan",
    "postgres", "sqlite", "dir", "service", "dump", "restore", "archive", "extract", "transfer", "move",
    "delete", "drop", "run", "verify", "http", "dns", "is", "confirm", "stop", "start", "restart", "sync",
    "derived", "rebuild", "local", "ssh", "sudo", "timeout", "replace", "via", "format", "jobs",
    '"\\q"', '"\x1b[31m"', '"a', "x:", 'h:"/p"', "9" * 30, "é", "日本", "\u202e", "-", "'", "Z",
    "# mdsl: allow H101", '# mdsl: allow H101 "why"', 'env("X")', 'file("/p")', '"/a//b/../c"',
]

TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[a-z_][a-z0-9_]*|[0-9]+|\s+|.', re.S)

# Byte sequences that are not UTF-8: lone continuation bytes, overlong forms, surrogates,
# truncated sequences, code points past U+10FFFF, and bytes that never appear.
BAD_UTF8 = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"]


def plan_str(value: str) -> str:
    """A plan string literal holding `value`."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


# ---------------------------------------------------------------- generators (random.Random -> bytes)


def gen_random_bytes(r: random.Random) -> bytes:
    """Uniform random bytes."""
    return r.randbytes(r.choice((0, 1, 2, 8, 64, 400, 2000)))


def gen_plan_alphabet(r: random.Random) -> bytes:
    """Text from the language's own characters and words."""
    n = r.randint(0, 120)
    return "".join(r.choice(TOKENS) for _ in range(n)).encode("utf-8", "surrogatepass")


def mutate(r: random.Random, text: str, max_ops: int = 4) -> str:
    """Delete, duplicate, swap or insert tokens or characters of a plan."""
    toks = TOKEN_RE.findall(text)
    for _ in range(r.randint(1, max_ops)):
        op = r.choice(("delete", "duplicate", "swap", "insert", "char_delete", "char_insert", "char_replace",
                       "value"))
        if not toks:
            toks = [r.choice(TOKENS)]
            continue
        i = r.randrange(len(toks))
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap":
            j = r.randrange(len(toks))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "insert":
            toks.insert(i, r.choice(TOKENS + toks))
        elif op == "value":  # a string literal becomes a hostile value
            strings = [k for k, t in enumerate(toks) if t.startswith('"') and t.endswith('"') and len(t) > 1]
            if strings:
                toks[r.choice(strings)] = plan_str(r.choice(HOSTILE_VALUES))
        else:
            s = "".join(toks)
            k = r.randrange(max(len(s), 1))
            ch = r.choice(TOKENS) if r.random() < 0.5 else chr(r.choice((r.randint(0, 0x7f), r.randint(0, 0x10ffff))))
            if 0xD800 <= ord(ch[0]) <= 0xDFFF:
                ch = "\ufffd"
            if op == "char_delete":
                s = s[:k] + s[k + 1:]
            elif op == "char_insert":
                s = s[:k] + ch + s[k:]
            else:
                s = s[:k] + ch + s[k + 1:]
            toks = TOKEN_RE.findall(s)
    return "".join(toks)


def gen_mutated(r: random.Random, seeds: List[str]) -> bytes:
    """A valid plan with a few mutations."""
    return mutate(r, r.choice(seeds)).encode("utf-8")


def gen_hostile_values(r: random.Random, seeds: List[str]) -> bytes:
    """A valid plan whose string values (paths, names, commands, units) are hostile: it should still check."""
    toks = TOKEN_RE.findall(r.choice(seeds))
    strings = [k for k, t in enumerate(toks) if t.startswith('"') and t.endswith('"') and len(t) > 1]
    for k in r.sample(strings, min(len(strings), r.randint(1, 6))):
        v = r.choice(HOSTILE_VALUES)
        old = toks[k][1:-1]
        # keep paths absolute half the time, so the plan gets past E1xx into check and compile
        grown = old + v if r.random() < 0.5 else v
        toks[k] = plan_str(("/" + v) if old.startswith("/") and r.random() < 0.5 else grown)
    return "".join(toks).encode("utf-8")


def nested(kind: str, depth: int) -> bytes:
    """Deeply nested structures of one kind."""
    if kind == "list":
        return b"host h { local = true  x = " + b"[" * depth + b"1" + b"]" * depth + b" }\n"
    if kind == "parallel":
        return (b'host h { local = true }\nsteps {\n' + b"parallel {\n" * depth + b'run h "true"\n'
                + b"}\n" * depth + b"}\n")
    if kind == "braces":
        return b"{" * depth + b"}" * depth
    if kind == "unclosed":
        return b"steps { " + b"parallel { " * depth
    if kind == "brackets":
        return b"host h { x = " + b"[" * depth
    if kind == "env":
        return b'host h { x = ' + b'env(' * depth + b'"X"' + b')' * depth + b" }"
    raise ValueError(kind)


NEST_KINDS = ("list", "parallel", "braces", "unclosed", "brackets", "env")


def gen_nested(r: random.Random) -> bytes:
    """Deep nesting, 1 to 5000 levels."""
    return nested(r.choice(NEST_KINDS), r.choice((1, 2, 31, 32, 33, 100, 1000, 5000)))


def huge(kind: str, n: int, seeds: Optional[List[str]] = None) -> bytes:
    """Large inputs of one shape, growing linearly with n."""
    if kind == "string":
        return b'plan "' + b"a" * n + b'"\n'
    if kind == "escapes":
        return b'plan "' + b"\\\\\\n" * (n // 4) + b'"\n'
    if kind == "unterminated":
        return b'plan "' + b"a" * n
    if kind == "comment":
        return b"#" + b"c" * n + b"\n"
    if kind == "steps":
        k = max(1, n // 16)
        return b'host h { local = true }\nsteps {\n' + b'  run h "true"\n' * k + b"}\n"
    if kind == "hosts":
        k = max(1, n // 28)
        return b"".join(b"host h%07d { local = true }\n" % i for i in range(k))
    if kind == "name":
        return b"host " + b"h" * n + b" { local = true }\n"
    if kind == "blank":
        return b" \n\t" * (n // 3)
    if kind == "list":
        k = max(1, n // 4)
        return b"host h { local = true  x = [" + b"1, " * k + b"1] }\n"
    if kind == "seed":
        s = (seeds or seed_plans())[0].encode()
        return s * max(1, n // len(s))
    raise ValueError(kind)


HUGE_KINDS = ("string", "escapes", "unterminated", "comment", "steps", "hosts", "name", "blank", "list")


def gen_huge(r: random.Random, sizes=(10_000, 100_000, 1_000_000)) -> bytes:
    """One large file (up to 1 MB by default) of a simple shape."""
    return huge(r.choice(HUGE_KINDS), r.choice(sizes))


def gen_invalid_utf8(r: random.Random, seeds: List[str]) -> bytes:
    """A valid plan with non-UTF-8 bytes at random places (inside strings, names, comments)."""
    data = bytearray(r.choice(seeds).encode())
    for _ in range(r.randint(1, 3)):
        k = r.randrange(len(data) + 1)
        data[k:k] = r.choice(BAD_UTF8)
    return bytes(data)


def gen_nul(r: random.Random, seeds: List[str]) -> bytes:
    """A valid plan with NUL bytes (and other control characters) at random places."""
    data = bytearray(r.choice(seeds).encode())
    for _ in range(r.randint(1, 3)):
        k = r.randrange(len(data) + 1)
        data[k:k] = r.choice((b"\x00", b"\x00" * 100, b"\x01", b"\x1b", b"\x7f", b"\r", b"\x0c"))
    return bytes(data)


def generators(seeds: List[str],
               huge_sizes=(10_000, 100_000, 1_000_000)) -> Dict[str, Callable[[random.Random], bytes]]:
    """Every family of hostile input, by name."""
    return {
        "random-bytes": gen_random_bytes,
        "plan-alphabet": gen_plan_alphabet,
        "mutated-plan": lambda r: gen_mutated(r, seeds),
        "hostile-values": lambda r: gen_hostile_values(r, seeds),
        "deep-nesting": gen_nested,
        "huge-file": lambda r: gen_huge(r, huge_sizes),
        "invalid-utf8": lambda r: gen_invalid_utf8(r, seeds),
        "nul-bytes": lambda r: gen_nul(r, seeds),
    }


# Relative frequency of each family in a run (huge files are slow: fewer of them).
WEIGHTS = {"random-bytes": 10, "plan-alphabet": 10, "mutated-plan": 40, "hostile-values": 15, "deep-nesting": 5,
           "huge-file": 0.2, "invalid-utf8": 10, "nul-bytes": 10}


# ---------------------------------------------------------------- the oracle


class OracleFailure(AssertionError):
    """An input broke the promise: a crash, a malformed finding, or output that does not parse."""


def check_one(data: bytes, compile_too: bool = True) -> Tuple[int, List[str]]:
    """Run one input through the pipeline; returns (the exit status `mdsl check` gives, finding codes).

    Raises OracleFailure with the reason when the promise is broken (any other exception is a crash).
    """
    from mdsl import render
    from mdsl.check import check_plan
    from mdsl.findings import Finding, PlanError, Severity
    from mdsl.syntax.parser import parse_bytes

    sources = render.Sources()
    sources.add("fuzz.plan", data)
    lines = data.count(b"\n") + 1
    plan = None
    try:
        plan = parse_bytes(data, "fuzz.plan")
    except PlanError as exc:
        findings = list(exc.findings)
        if [f.code for f in findings] != ["E101"]:
            raise OracleFailure(f"a parse failure must be one E101, got {[f.code for f in findings]}") from exc
    if plan is not None:
        res = check_plan(plan)
        findings = list(res.findings)
    for f in findings:
        if not isinstance(f, Finding) or not isinstance(f.severity, Severity) or not CODE_RE.match(f.code):
            raise OracleFailure(f"malformed finding {f!r}")
        sp = f.span
        if not (1 <= sp.line <= lines and sp.col >= 1 and (sp.end_line, sp.end_col) >= (sp.line, sp.col)):
            raise OracleFailure(f"{f.code} span {sp} outside the {lines}-line input")
        if not f.message:
            raise OracleFailure(f"{f.code} without a message")
    for fmt in render.FORMATS:
        out = render.render(findings, fmt, sources)
        if fmt in ("json", "sarif"):
            json.loads(out)
    errors = [f for f in findings if f.severity == Severity.ERROR]
    unusable = any(f.code.startswith("E") for f in errors)
    code = 2 if unusable else (1 if any(f.severity >= Severity.WARNING for f in findings) else 0)
    if plan is None and code != 2:
        raise OracleFailure("a file that does not parse must exit 2")
    if compile_too and plan is not None and not errors:
        _compile_and_render(res.bound)
    return code, [f.code for f in findings]


def _compile_and_render(bound) -> None:
    from mdsl.compile import compile_plan
    from mdsl.compile.parts import CompileError

    try:
        cp = compile_plan(bound)
    except CompileError as exc:
        if not exc.message:
            raise OracleFailure("a CompileError without a message") from None
        return
    for leaf in cp.leaves():
        leaf.describe()
        for a in leaf.actions:
            for c in a.commands():
                c.render(masked=True)
                c.render(masked=False, secret_paths={v: "/tmp/x" for v, _ in c.secret_files})


def timed(data: bytes, compile_too: bool = True) -> Tuple[float, int, List[str]]:
    """check_one with its duration."""
    t = time.perf_counter()
    code, codes = check_one(data, compile_too)
    return time.perf_counter() - t, code, codes


# ---------------------------------------------------------------- linear time


SCALING_SHAPES = [("huge", k) for k in HUGE_KINDS] + [("nested", k) for k in ("braces", "unclosed", "brackets")]


def shape_input(family: str, kind: str, n: int) -> bytes:
    """An input of size ~n of one shape."""
    return huge(kind, n) if family == "huge" else nested(kind, n // 2)


def scaling(family: str, kind: str, sizes: List[int], repeat: int = 3) -> List[Tuple[int, float]]:
    """(bytes, best-of-`repeat` seconds) of one shape at growing sizes."""
    out = []
    for n in sizes:
        data = shape_input(family, kind, n)
        best = min(timed(data, compile_too=False)[0] for _ in range(repeat))
        out.append((len(data), best))
    return out


def growth(points: List[Tuple[int, float]], floor: float = 0.002) -> float:
    """How much more time per byte the largest input took than the smallest (1.0 = linear).

    Times under `floor` seconds are raised to it (timer noise on tiny inputs).
    """
    (n0, t0), (n1, t1) = points[0], points[-1]
    return (max(t1, floor) / n1) / (max(t0, floor) / n0)
