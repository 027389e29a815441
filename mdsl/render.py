"""Findings -> text (rustc style), JSON, SARIF 2.1.0 or GitHub annotations.

One renderer for every command that reports findings (`check`, `apply`'s
preflight). Imports nothing heavy: `mdsl check` must start fast.

JSON format (`--format json`), stable; schema in tests/schemas/mdsl-findings.schema.json.
A list, in report order, of objects:

    code        "H101"
    severity    "error" | "warning" | "info"
    message     one line
    file        the plan's path as given on the command line
    line        1-based
    column      1-based, in Unicode code points
    end_line    1-based
    end_column  1-based, exclusive (the column just after the span)
    label       text shown under the span, or null
    notes       list of strings (possibly empty)
    help        the suggested fix, or null
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mdsl.findings import Finding, Severity

FORMATS = ("text", "json", "sarif", "github")

SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TOOL_URI = "https://github.com/mdsl/mdsl"

# A source line wider than this is shown as a window around the span.
_MAX_LINE_WIDTH = 160
_WINDOW_BEFORE = 50
# ...cut out of a slice of the line this many characters either side of the span's start.
_SLICE_BEFORE = 4 * _WINDOW_BEFORE
_SLICE_AFTER = 4 * _MAX_LINE_WIDTH
# Messages, labels, notes and help longer than this are cut in the text format.
_MAX_TEXT = 1000


# ---------------------------------------------------------------- sources


class Sources:
    """Plan text by path, split into lines once per file (read lazily if not given)."""

    def __init__(self) -> None:
        self._pending: Dict[str, object] = {}
        self._lines: Dict[str, Optional[List[str]]] = {}

    def add(self, path: str, text) -> None:
        """Remember the text (str or bytes) a plan was parsed from."""
        self._pending[path] = text
        self._lines.pop(path, None)

    def lines(self, path: str) -> Optional[List[str]]:
        """The file's lines as the parser counted them (split at `\\n` only), or None."""
        try:
            return self._lines[path]
        except KeyError:
            pass
        text = self._pending.pop(path, None)
        if text is None:
            try:
                with open(path, "rb") as fh:
                    text = fh.read()
            except (OSError, ValueError):
                self._lines[path] = None
                return None
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        # Lark counts lines at "\n" only; str.splitlines would also split at \f, \x1c, U+2028...
        lines = text.split("\n")
        self._lines[path] = lines
        return lines

    def line(self, path: str, number: int) -> Optional[str]:
        """Line `number` (1-based) without its line ending, or None when unknown."""
        lines = self.lines(path)
        if lines is None or not 1 <= number <= len(lines):
            return None
        text = lines[number - 1]
        return text[:-1] if text.endswith("\r") else text


# ---------------------------------------------------------------- making text safe to show

# Bidirectional overrides could make the shown line differ from what the parser read.
_BIDI = {0x061C, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}


def _char_display(ch: str) -> Tuple[str, int]:
    """How one source character is shown, and how many columns it takes."""
    o = ord(ch)
    if ch == "\t":
        return "    ", 4
    if o < 0x20:
        return chr(0x2400 + o), 1  # ␀ ␁ ... ␟
    if o == 0x7F:
        return "\u2421", 1  # ␡
    if 0x80 <= o < 0xA0 or o in _BIDI or (not ch.isprintable() and ch != " "):
        return "\ufffd", 1
    if unicodedata.combining(ch):
        return ch, 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return ch, 2
    return ch, 1


def _is_plain(s: str) -> bool:
    return s.isascii() and s.isprintable()


def _pieces(line: str) -> List[Tuple[str, int]]:
    return [_char_display(c) for c in line]


def safe(s: str) -> str:
    """`s` with control characters (terminal escapes, NUL, bidi overrides) made visible."""
    if _is_plain(s):
        return s
    return "".join(_char_display(c)[0] if c != "\t" else " " for c in s)


# ---------------------------------------------------------------- text

_RESET = "\x1b[0m"
_STYLE = {
    "error": "\x1b[1;31m",
    "warning": "\x1b[1;33m",
    "info": "\x1b[1;36m",
    "gutter": "\x1b[1;34m",
    "bold": "\x1b[1m",
    "note": "\x1b[1m",
    "help": "\x1b[1;36m",
}


def use_color(stream, env=None) -> bool:
    """Color only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    if env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _Paint:
    def __init__(self, color: bool):
        self.color = color

    def __call__(self, style: str, text: str) -> str:
        if not self.color or not text:
            return text
        return f"{_STYLE[style]}{text}{_RESET}"


def _snippet(line: str, col: int, end: Optional[int]) -> Tuple[str, int, int]:
    """(shown line, caret offset, caret count) for a span from `col` to `end` (exclusive; None: end of line).

    Only a slice of a long line around the span is ever looked at (a few hundred
    characters), so a finding on a multi-megabyte line costs what one on a short line does.
    """
    n = len(line)
    a = min(max(col - 1, 0), n)
    if n <= _MAX_LINE_WIDTH and _is_plain(line):
        b = max(len(line.rstrip()), a) if end is None else min(max(end - 1, a), n)
        return line.rstrip(), a, max(b - a, 1)
    # The slice holds every character the window below can show: a character is at most
    # 4 columns wide (a tab) and at least 1, except combining marks (0), which may shorten it.
    lo0 = max(0, a - _SLICE_BEFORE)
    hi0 = min(n, a + _SLICE_AFTER)
    seg = line[lo0:hi0]
    a -= lo0
    m = len(seg)
    if end is None:
        b = max(len(seg.rstrip()), a) if hi0 == n else m
    else:
        b = min(max(end - 1 - lo0, a), m)
    pieces = _pieces(seg)
    lo, hi = 0, m
    if lo0 > 0 or hi0 < n or sum(w for _, w in pieces) > _MAX_LINE_WIDTH:
        lo, before = a, 0  # show up to _WINDOW_BEFORE columns before the span
        while lo > 0 and before + pieces[lo - 1][1] <= _WINDOW_BEFORE:
            lo -= 1
            before += pieces[lo][1]
        budget, hi = _MAX_LINE_WIDTH, lo
        while hi < m and budget >= pieces[hi][1]:
            budget -= pieces[hi][1]
            hi += 1
        b = min(b, hi)
    prefix = "..." if lo0 + lo > 0 else ""
    suffix = "..." if lo0 + hi < n else ""
    shown = prefix + "".join(p for p, _ in pieces[lo:hi]) + suffix
    off = len(prefix) + sum(w for _, w in pieces[lo:a])
    width = sum(w for _, w in pieces[a:b])
    return shown.rstrip(), off, max(width, 1)


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    """`text` cut to `limit` characters (a message quoting a megabyte-long token stays readable)."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more characters)"


_WRAP = 128  # notes and help wider than this wrap, continuation lines aligned


def _indent_lines(text: str, indent: str) -> str:
    lines = []
    for part in safe_lines(text):
        if len(indent) + len(part) <= _WRAP:
            lines.append(part)
        else:
            import textwrap

            lines.extend(textwrap.wrap(part, _WRAP - len(indent), break_long_words=False,
                                       break_on_hyphens=False) or [""])
    return ("\n" + indent).join(lines)


def safe_lines(text: str) -> List[str]:
    """`text` split at its newlines, each line made safe to show."""
    return [safe(part) for part in text.split("\n")]


def render_finding(f: Finding, sources: Sources, color: bool = False) -> str:
    """One finding as rustc-style text (no trailing newline)."""
    paint = _Paint(color)
    sev = f.severity.label
    sp = f.span
    src = sources.line(sp.file, sp.line) if sp.line >= 1 else None
    num = str(sp.line)
    pad = " " * (len(num) if src is not None else 1)
    out = [
        paint(sev, f"{sev}[{f.code}]") + paint("bold", f": {safe(_clip(f.message))}"),
        f"{pad}{paint('gutter', '-->')} {safe(sp.file)}:{sp.line}:{sp.col}",
    ]
    bar = paint("gutter", "|")
    if src is not None:
        end = sp.end_col if sp.end_line == sp.line else None
        shown, off, width = _snippet(src, sp.col, end)
        carets = paint(sev, "^" * width)
        label = paint(sev, " " + safe(_clip(f.label))) if f.label else ""
        out.append(f"{pad} {bar}")
        out.append(f"{paint('gutter', num + ' |')} {shown}".rstrip())
        out.append(f"{pad} {bar} {' ' * off}{carets}{label}")
        if f.notes or f.help:
            out.append(f"{pad} {bar}")
    elif f.label:
        out.append(f"{pad} {bar}")
        out.append(f"{pad} {bar} {safe(_clip(f.label))}")
    for note in f.notes:
        head = f"{pad} = note: "
        out.append(f"{pad} {paint('gutter', '=')} {paint('note', 'note')}: "
                   + _indent_lines(_clip(note), " " * len(head)))
    if f.help:
        head = f"{pad} = help: "
        out.append(f"{pad} {paint('gutter', '=')} {paint('help', 'help')}: "
                   + _indent_lines(_clip(f.help), " " * len(head)))
    return "\n".join(out)


def count(findings: Iterable[Finding]) -> Dict[Severity, int]:
    """How many findings of each severity."""
    counts = {Severity.ERROR: 0, Severity.WARNING: 0, Severity.INFO: 0}
    for f in findings:
        counts[f.severity] += 1
    return counts


def summary(findings: Sequence[Finding], color: bool = False) -> str:
    """`2 errors, 1 warning`, or `no findings`."""
    paint = _Paint(color)
    c = count(findings)
    parts = []
    for sev, one, many in ((Severity.ERROR, "error", "errors"), (Severity.WARNING, "warning", "warnings"),
                           (Severity.INFO, "info", "info")):
        if c[sev]:
            parts.append(paint(sev.label, f"{c[sev]} {one if c[sev] == 1 else many}"))
    return ", ".join(parts) if parts else "no findings"


def render_text(findings: Sequence[Finding], sources: Sources, color: bool = False,
                with_summary: bool = True) -> str:
    """Every finding as rustc-style text, a blank line between them, then the summary line."""
    blocks = [render_finding(f, sources, color) for f in findings]
    if with_summary:
        blocks.append(summary(findings, color))
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------- JSON


def finding_dict(f: Finding) -> dict:
    """A finding as the documented JSON object."""
    sp = f.span
    return {
        "code": f.code,
        "severity": f.severity.label,
        "message": f.message,
        "file": sp.file,
        "line": sp.line,
        "column": sp.col,
        "end_line": sp.end_line,
        "end_column": sp.end_col,
        "label": f.label or None,
        "notes": list(f.notes),
        "help": f.help,
    }


def render_json(findings: Sequence[Finding]) -> str:
    """The documented JSON list (see this module's docstring)."""
    import json

    # One finding per line: readable, greppable, and json's C encoder (an indent= would
    # switch to its pure-Python one, 20 times slower on thousands of findings).
    if not findings:
        return "[]\n"
    return "[\n" + ",\n".join("  " + json.dumps(finding_dict(f), ensure_ascii=False) for f in findings) + "\n]\n"


# ---------------------------------------------------------------- SARIF

_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _first_paragraph(page: str) -> str:
    """The first paragraph of prose in a page (not a heading, not the `CODE: title` line, not code)."""
    for p in (p.strip() for p in page.strip().split("\n\n")):
        if p and not p.startswith(("#", "```", "    ")) and not re.match(r"^[A-Z][0-9]{3}: ", p):
            return " ".join(p.split())
    return ""


def _sarif_rule(code: str, title: str, severity: Optional[Severity], page: Optional[str], uri: Optional[str],
                summary: Optional[str] = None):
    rule = {"id": code, "name": code, "shortDescription": {"text": title or code}}
    full = " ".join(summary.split()) if isinstance(summary, str) and summary.strip() else None
    if page or full:
        full = full or _first_paragraph(page)
        if full:
            rule["fullDescription"] = {"text": full}
    if page:
        rule["help"] = {"text": page, "markdown": page}
    if uri:
        rule["helpUri"] = uri
    if severity is not None:
        rule["defaultConfiguration"] = {"level": _SARIF_LEVEL[severity]}
    return rule


def _artifact_uri(path: str) -> str:
    from urllib.parse import quote

    p = path.replace(os.sep, "/") if os.sep != "/" else path
    if os.path.isabs(path):
        return "file://" + quote(p if p.startswith("/") else "/" + p, safe="/:")
    return quote(p, safe="/")


def sarif_document(findings: Sequence[Finding], version: str = "0") -> dict:
    """A SARIF 2.1.0 log with one run: the catalogue as rules, the findings as results."""
    from mdsl.check import catalog

    driver_rules, index = [], {}

    def page_of(code):
        try:
            return catalog.page(code)
        except Exception:  # a missing page must not cost the whole report
            return None

    for r in catalog.RULES:
        code = getattr(r, "code", None)
        if not code or code in index:
            continue
        index[code] = len(driver_rules)
        sev = getattr(r, "severity", None)
        driver_rules.append(_sarif_rule(code, getattr(r, "title", code), sev if isinstance(sev, Severity) else None,
                                        page_of(code), getattr(r, "help_uri", None), getattr(r, "summary", None)))
    results = []
    for f in findings:
        if f.code not in index:
            index[f.code] = len(driver_rules)
            driver_rules.append(_sarif_rule(f.code, f.code, None, None, None))
        sp = f.span
        text = f.message
        for note in f.notes:
            text += "\nnote: " + note
        if f.help:
            text += "\nhelp: " + f.help
        region = {
            "startLine": max(sp.line, 1),
            "startColumn": max(sp.col, 1),
            "endLine": max(sp.end_line, sp.line, 1),
            "endColumn": max(sp.end_col, 1),
        }
        if region["endLine"] == region["startLine"] and region["endColumn"] < region["startColumn"]:
            region["endColumn"] = region["startColumn"]
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": text},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": _artifact_uri(sp.file)},
                    "region": region,
                },
            }],
        }
        if f.label:
            result["locations"][0]["message"] = {"text": f.label}
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "mdsl",
                "informationUri": TOOL_URI,
                "version": version,
                "rules": driver_rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }


def render_sarif(findings: Sequence[Finding], version: str = "0") -> str:
    """A SARIF 2.1.0 document (validates against the OASIS schema)."""
    import json

    return json.dumps(sarif_document(findings, version), ensure_ascii=False) + "\n"  # compact: C encoder


# ---------------------------------------------------------------- GitHub Actions

_GH_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _gh_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(s: str) -> str:
    return _gh_data(s).replace(":", "%3A").replace(",", "%2C")


def render_github(findings: Sequence[Finding]) -> str:
    """One `::error file=...,line=...::message` workflow command per finding."""
    out = []
    for f in findings:
        sp = f.span
        end_line = max(sp.end_line, sp.line)
        # GitHub's endColumn is inclusive; ours is exclusive.
        end_col = max(sp.end_col - 1, sp.col if end_line == sp.line else 1)
        props = [f"file={_gh_prop(sp.file)}", f"line={sp.line}", f"col={sp.col}", f"endLine={end_line}",
                 f"endColumn={end_col}", f"title={_gh_prop(f.code)}"]
        text = f.message
        if f.label:
            text += f"\n{f.label}"
        for note in f.notes:
            text += f"\nnote: {note}"
        if f.help:
            text += f"\nhelp: {f.help}"
        out.append(f"::{_GH_LEVEL[f.severity]} {','.join(props)}::{_gh_data(text)}")
    return "".join(line + "\n" for line in out)


# ---------------------------------------------------------------- one entry point


def render(findings: Sequence[Finding], fmt: str, sources: Optional[Sources] = None, color: bool = False,
           version: str = "0") -> str:
    """Findings in the named format (`text`, `json`, `sarif`, `github`)."""
    if fmt == "text":
        return render_text(findings, sources or Sources(), color)
    if fmt == "json":
        return render_json(findings)
    if fmt == "sarif":
        return render_sarif(findings, version)
    if fmt == "github":
        return render_github(findings)
    raise ValueError(f"unknown format {fmt!r}")
