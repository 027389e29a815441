"""A finding on a multi-megabyte single-line file renders a window of the line, not the line.

The output is bounded in size whatever the line's length (the cost follows: only a slice of
the line around the span is looked at). Sizes, not times, are asserted.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from mdsl import render
from mdsl.findings import Finding, PlanError, Severity
from mdsl.syntax import ast as A
from mdsl.syntax.parser import parse_bytes

MB5 = 5 * 1024 * 1024
BOUND = 6000  # bytes of text output per finding, whatever the line (messages are cut at 1000 characters)


def _one_line_files():
    """name -> a 5 MB plan on one line that does not parse."""
    return {
        "unclosed-braces": b"steps { parallel { " + b"{" * MB5,
        "long-string-then-junk": b'steps { run a "' + b"x" * MB5 + b'" ] }',
        "unexpected-long-string": b'steps { "' + b"x" * MB5 + b'" }',  # the message quotes the token
        "junk-at-the-far-end": b"steps {" + b" " * MB5 + b"@",
        "unterminated-string": b'steps { run a "' + "界".encode() * (MB5 // 3),
        "tabs-and-controls": b"steps { " + b"\t\x1b" * (MB5 // 2) + b" ?",
    }


@pytest.mark.parametrize("name", sorted(_one_line_files()))
def test_a_finding_on_a_5mb_line_renders_bounded_output(name):
    data = _one_line_files()[name]
    assert data.count(b"\n") == 0 and len(data) >= MB5
    with pytest.raises(PlanError) as info:
        parse_bytes(data, "big.plan")
    sources = render.Sources()
    sources.add("big.plan", data)
    text = render.render_text(info.value.findings, sources)
    assert len(text.encode()) < BOUND * len(info.value.findings), (len(text), text[:500])
    assert "big.plan:1:" in text
    lines = text.splitlines()
    shown = [x for x in lines if x.startswith("1 |")]
    assert shown and len(shown[0]) < 300, shown  # the source line, as a window
    caret_line = lines[lines.index(shown[0]) + 1]
    assert "^" in caret_line


@pytest.mark.parametrize("col", [1, 2_000_000, MB5])
def test_the_window_shows_the_span_with_ellipses(col):
    line = "".join(chr(ord("a") + i % 26) for i in range(MB5))
    sources = render.Sources()
    sources.add("w.plan", line)
    f = Finding("E101", Severity.ERROR, "m" * 50_000, A.Span("w.plan", 1, col, 1, col + 3), label="l" * 50_000,
                notes=("n" * 50_000,), help="h" * 50_000)
    text = render.render_text([f], sources)
    assert len(text) < 4 * 1100 + 600, len(text)  # message, label, note and help cut at 1000 characters
    lines = text.splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("1 |"))
    src, carets = lines[i], lines[i + 1]
    start, width = carets.index("^"), carets.count("^")
    # the carets sit under the span's own characters (the last column: one character left)
    assert width == min(3, MB5 - col + 1)
    assert src[start:start + width] == line[col - 1:col - 1 + width], (src, carets)
    assert src.startswith("1 | ...") == (col > 1)
    assert src.endswith("...") == (col + 2 < MB5)


def test_rendering_looks_at_a_slice_of_the_line_only(monkeypatch):
    """The work done per finding does not grow with the line: count the characters examined."""
    seen = []
    real = render._char_display
    monkeypatch.setattr(render, "_char_display", lambda ch: (seen.append(ch), real(ch))[1])
    for n in (10_000, MB5):
        seen.clear()
        line = "é" * n  # not plain ASCII: every shown character goes through _char_display
        sources = render.Sources()
        sources.add("s.plan", line)
        f = Finding("E101", Severity.ERROR, "m", A.Span("s.plan", 1, n // 2, 1, n), label="here")
        render.render_text([f], sources)
        assert 0 < len(seen) <= 1000, (n, len(seen))


def test_mdsl_check_on_a_5mb_line_prints_a_bounded_report(tmp_path):
    plan = tmp_path / "big.plan"
    plan.write_bytes(_one_line_files()["unclosed-braces"])
    r = subprocess.run([sys.executable, "-m", "mdsl", "check", str(plan)], capture_output=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert b"E101" in r.stdout and not r.stderr, r.stderr[-2000:]
    assert len(r.stdout) < BOUND, len(r.stdout)
