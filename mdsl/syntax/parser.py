"""Text -> AST: the entry points. The Lark LALR parser is built once per process (its
tables cached on disk) with the hand-written lexer (lexer.py) and the transformer
(transform.py) inline, so no parse tree is ever materialised; errors become E101
findings (errors.py)."""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import re
from pathlib import Path
from typing import List, Optional

from mdsl.findings import Finding, PlanError, Severity
from mdsl.syntax import ast as A
from mdsl.syntax._lark import Lark, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken, lark
from mdsl.syntax.errors import syntax_finding
from mdsl.syntax.lexer import PlanLexer
from mdsl.syntax.transform import MAX_NESTING, SyntaxProblem, ToAst, context, on_comment, token_span

__all__ = ["MAX_NESTING", "grammar_text", "parse_bytes", "parse_file", "parse_text"]

_GRAMMAR_NAME = "mdsl.lark"


def grammar_text() -> str:
    """The grammar shipped in the package (mdsl.grammar), or the repo's copy."""
    try:  # a plain file beside the package: the common case, and no importlib.resources to import
        import mdsl.grammar

        with open(os.path.join(os.path.dirname(mdsl.grammar.__file__), _GRAMMAR_NAME), encoding="utf-8") as fh:
            return fh.read()
    except (ImportError, OSError, TypeError):
        pass
    try:
        from importlib.resources import files

        return files("mdsl.grammar").joinpath(_GRAMMAR_NAME).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # running from a bare checkout
        here = Path(__file__).resolve().parents[2] / "grammar" / _GRAMMAR_NAME
        return here.read_text(encoding="utf-8")


def _cache_file(text: str) -> Optional[str]:
    base = os.environ.get("MDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mdsl"
    )
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not os.access(base, os.W_OK):
        return None
    digest = hashlib.sha256((text + lark.__version__).encode()).hexdigest()[:16]
    return os.path.join(base, f"grammar-{digest}.lark-cache")


def _build(lexer) -> Lark:
    text = grammar_text()
    return Lark(
        text,
        parser="lalr",
        lexer=lexer,
        keep_all_tokens=True,
        maybe_placeholders=False,
        transformer=ToAst(),
        lexer_callbacks={"COMMENT": on_comment} if lexer == "contextual" else {},
        cache=_cache_file(text + repr(lexer)) or False,
    )


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return _build(PlanLexer)


@functools.lru_cache(maxsize=1)
def _reference_parser() -> Lark:
    """The same grammar with Lark's own contextual lexer: the yardstick PlanLexer is tested against."""
    return _build("contextual")


# ---------------------------------------------------------------- entry points

_SUPPRESS_RE = re.compile(r'#\s*mdsl\s*:\s*(\S*)\s*(.*)$')
_ALLOW_RE = re.compile(r'^([A-Z][0-9]{3})(?:\s+"((?:[^"\\]|\\.)*)")?\s*$')


def _suppressions(comments) -> List[A.Suppression]:
    out = []
    for c in comments:
        m = _SUPPRESS_RE.match(c.text)
        if not m:
            continue
        verb, rest = m.group(1), m.group(2).strip()
        if verb != "allow":
            out.append(A.Suppression("", None, c.span))
            continue
        m2 = _ALLOW_RE.match(rest)
        if not m2:
            out.append(A.Suppression("", None, c.span))
            continue
        reason = m2.group(2)
        out.append(A.Suppression(m2.group(1), reason.strip() if reason and reason.strip() else None, c.span))
    return out


def parse_text(text: str, file: str = "<plan>") -> A.Plan:
    """Parse plan text; raises PlanError carrying an E101 finding on bad syntax."""
    return _parse_with(_parser(), text, file)


def _parse_with(parser: Lark, text: str, file: str) -> A.Plan:
    context.begin(file)
    # The collector makes parse time grow superlinearly with the number of live
    # nodes; nothing here makes cycles, so pause it. Then hand what we built to the
    # oldest generation without a scan: freeze() moves every tracked object to the
    # permanent generation and unfreeze() at once moves them all into generation 2,
    # so the first young collection after the parse does not walk the whole tree,
    # and nothing stays frozen (a long-lived process, an editor, frees it normally).
    # A caller that froze objects itself (before a fork, say) keeps them frozen: skipped then.
    enabled = gc.isenabled()
    gc.disable()
    try:
        items = parser.parse(text)
    except (UnexpectedCharacters, UnexpectedToken, UnexpectedEOF, SyntaxProblem) as exc:
        raise PlanError([syntax_finding(file, text, exc, parser.terminals)]) from None
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()
    title, decls, steps, steps_span = None, [], [], None
    for item in items:
        if isinstance(item, tuple) and item[0] == "title":
            title = item[1]
        elif isinstance(item, tuple) and item[0] == "steps":
            steps.extend(item[1])
            steps_span = item[2] if steps_span is None else steps_span
        else:
            decls.append(item)
    comments = tuple(A.Comment(t.value, token_span(t)) for t in context.comments)
    return A.Plan(
        path=file,
        title=title,
        decls=tuple(decls),
        steps=tuple(steps),
        steps_span=steps_span,
        comments=comments,
        suppressions=tuple(_suppressions(comments)),
    )


def parse_bytes(data: bytes, file: str) -> A.Plan:
    """Decode (UTF-8, strict) and parse; bad bytes are an E101 at their position."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        # Columns count characters, as everywhere else: decode the valid prefix of the line.
        col = len(data[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise PlanError([Finding("E101", Severity.ERROR,
                                 f"syntax error: the file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                                 A.Span(file, line, col, line, col + 1), label="invalid byte",
                                 help="save the plan as UTF-8")]) from None
    if text.startswith("\ufeff"):  # a byte order mark some editors write; not part of the plan
        text = text[1:]
    return parse_text(text, file)


def parse_file(path: str) -> A.Plan:
    """Read and parse a plan file; unreadable files are E101 findings too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PlanError([Finding("E101", Severity.ERROR, f"cannot read the plan: {exc.strerror}",
                                 A.Span(path, 1, 1, 1, 1))]) from None
    return parse_bytes(data, path)
