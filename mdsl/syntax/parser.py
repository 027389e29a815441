"""Text -> AST. The Lark LALR parser is built once per process (and its tables
cached on disk); the transformer runs inline during the parse, so no parse tree
is ever materialised."""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import re
import threading
from pathlib import Path
from typing import List, Optional

import sys

# Lark imports the third-party `regex` module whenever it is installed, though it only
# uses it when asked (Lark(regex=True)); we never ask, and `mdsl check` must start fast.
_NO_REGEX = "regex" not in sys.modules
if _NO_REGEX:
    sys.modules["regex"] = None  # makes `import regex` fail inside lark.utils
try:
    from lark import Lark, Token, Transformer
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
    from lark.lexer import Lexer
finally:
    if _NO_REGEX:
        del sys.modules["regex"]

from mdsl.findings import Finding, PlanError, Severity
from mdsl.syntax import ast as A

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
    import lark

    digest = hashlib.sha256((text + lark.__version__).encode()).hexdigest()[:16]
    return os.path.join(base, f"grammar-{digest}.lark-cache")


# Per-parse context for the inline transformer (the parser itself is shared).
_ctx = threading.local()


def _tspan(tok: Token) -> A.Span:
    return A.Span(_ctx.file, tok.line, tok.column, tok.end_line, tok.end_column)


def _sp(children) -> A.Span:
    # The hottest helper of a parse: no intermediate Span objects.
    first, last = children[0], children[-1]
    if isinstance(first, Token):
        line, col = first.line, first.column
    else:
        line, col = first.span.line, first.span.col
    if isinstance(last, Token):
        return A.Span(_ctx.file, line, col, last.end_line, last.end_column)
    return A.Span(_ctx.file, line, col, last.span.end_line, last.span.end_col)


class _SyntaxProblem(Exception):
    """A lexically valid but malformed token (e.g. a bad escape in a string)."""

    def __init__(self, message: str, span: A.Span, help: Optional[str] = None):
        super().__init__(message)
        self.message, self.span, self.help = message, span, help


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(.)")


# Control characters (other than tab) cannot be seen in an editor and cannot be
# passed to a command line (NUL); `\n` and `\t` are the way to write them.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _string(tok: Token) -> A.Str:
    raw = tok.value[1:-1]
    bad = _CONTROL_RE.search(raw)
    if bad is not None:
        col = tok.column + 1 + bad.start()
        raise _SyntaxProblem(
            f"a string cannot hold the control character U+{ord(bad.group()):04X}",
            A.Span(_ctx.file, tok.line, col, tok.line, col + 1),
            help="write a newline as \\n and a tab as \\t; other control characters have no place in a plan",
        )
    if "\\" not in raw:
        return A.Str(raw, _tspan(tok))

    def sub(m):
        ch = m.group(1)
        if ch not in _ESCAPES:
            col = tok.column + 1 + m.start()
            raise _SyntaxProblem(
                f"unknown escape `\\{ch}` in a string",
                A.Span(_ctx.file, tok.line, col, tok.line, col + 2),
                help='strings know \\" \\\\ \\n and \\t; write a backslash as \\\\',
            )
        return _ESCAPES[ch]

    return A.Str(_ESCAPE_RE.sub(sub, raw), _tspan(tok))


def _ident(tok: Token) -> A.Ident:
    return A.Ident(tok.value, _tspan(tok))


def _toks(children, *types):
    return [c for c in children if isinstance(c, Token) and c.type in types]


class _NameList:
    __slots__ = ("names", "span")

    def __init__(self, names, span):
        self.names, self.span = names, span


class _Body:
    __slots__ = ("attrs", "derived", "span")

    def __init__(self, attrs, derived, span):
        self.attrs, self.derived, self.span = attrs, derived, span


def _options(children):
    return tuple(c for c in children if isinstance(c, A.Option))


def _targets(children):
    return [c for c in children if isinstance(c, (A.Location, A.Ident))]


# Every later stage walks these trees recursively; a limit far above any real
# plan keeps a hostile file from exhausting Python's stack.
MAX_NESTING = 32


def _check_depth(node, children, what: str, opener: Token) -> None:
    if not children:
        return
    depth = 1 + max(_ctx.depth.get(id(x), 1) for x in children)
    if depth > MAX_NESTING:
        raise _SyntaxProblem(f"{what} nested more than {MAX_NESTING} deep", _tspan(opener),
                             help="flatten the nesting; a real plan needs at most a few levels")
    _ctx.depth[id(node)] = depth
    _ctx.keep.append(node)  # ids stay unique while the parse runs


class _ToAst(Transformer):
    """One method per grammar rule; runs inside the LALR parser."""

    # values
    def string(self, c):
        return _string(c[0])

    def int(self, c):
        return A.Int(int(c[0].value), _tspan(c[0]))

    def true(self, c):
        return A.Bool(True, _tspan(c[0]))

    def false(self, c):
        return A.Bool(False, _tspan(c[0]))

    def ref(self, c):
        return A.Ref(c[0].value, _tspan(c[0]))

    def list(self, c):
        items = tuple(x for x in c if not isinstance(x, Token) or x.type not in ("LSQB", "RSQB", "COMMA"))
        items = tuple(_string(x) if isinstance(x, Token) else x for x in items)
        node = A.ListValue(items, _sp(c))
        _check_depth(node, [x for x in items if isinstance(x, A.ListValue)], "lists", c[0])
        return node

    def env_secret(self, c):
        return A.Secret("env", _string(c[2]).value, _sp(c))

    def file_secret(self, c):
        return A.Secret("file", _string(c[2]).value, _sp(c))

    # declarations
    def plan_title(self, c):
        return ("title", _string(c[1]))

    def attr(self, c):
        return A.Attr(_ident(c[0]), c[2], _sp(c))

    def derived(self, c):
        return A.Derived(_string(c[1]), _string(c[3]), _sp(c))

    def body(self, c):
        attrs = tuple(x for x in c if isinstance(x, A.Attr))
        derived = tuple(x for x in c if isinstance(x, A.Derived))
        return _Body(attrs, derived, _sp(c))

    def host_decl(self, c):
        body = c[2]
        return A.HostDecl(_ident(c[1]), body.attrs, _sp(c))

    def resource_kind(self, c):
        return c[0]

    def resource_decl(self, c):
        kind_tok, name, _on, host, body = c
        return A.ResourceDecl(kind_tok.value, _ident(name), _ident(host), body.attrs, body.derived, _sp(c))

    # steps
    def name_list(self, c):
        names = tuple(_ident(t) for t in c if t.type == "NAME")
        return _NameList(names, _sp(c))

    def location(self, c):
        return A.Location(_ident(c[0]), _string(c[2]), _sp(c))

    def named(self, c):
        return _ident(c[0])

    def kv_option(self, c):
        return A.Option(_ident(c[0]), c[2], _sp(c))

    def flag_option(self, c):
        return A.Option(_ident(c[0]), None, _sp(c))

    def exclude_option(self, c):
        subs = tuple(_string(t) for t in c if t.type == "STRING")
        return A.Option(A.Ident("exclude", _tspan(c[0])), A.ListValue(subs, _sp(c[1:])), _sp(c))

    def _services(self, cls, c):
        return cls(services=c[1].names, options=_options(c), span=_sp(c))

    def stop(self, c):
        return self._services(A.Stop, c)

    def start_step(self, c):
        return self._services(A.Start, c)

    def restart(self, c):
        return self._services(A.Restart, c)

    def dump(self, c):
        return A.Dump(db=_ident(c[1]), to=c[3], options=_options(c), span=_sp(c))

    def restore(self, c):
        return A.Restore(source=c[1], db=_ident(c[3]), options=_options(c), span=_sp(c))

    def archive(self, c):
        return A.Archive(dir=_ident(c[1]), to=c[3], options=_options(c), span=_sp(c))

    def extract(self, c):
        return A.Extract(source=c[1], dir=_ident(c[3]), options=_options(c), span=_sp(c))

    def sync(self, c):
        return A.Sync(source=_ident(c[1]), dest=_ident(c[3]), options=_options(c), span=_sp(c))

    def transfer(self, c):
        return A.Transfer(source=c[1], dest=c[3], options=_options(c), span=_sp(c))

    def move(self, c):
        return A.Move(source=c[1], dest=c[3], options=_options(c), span=_sp(c))

    def delete(self, c):
        return A.Delete(target=c[1], options=_options(c), span=_sp(c))

    def drop(self, c):
        return A.Drop(db=_ident(c[1]), options=_options(c), span=_sp(c))

    def run(self, c):
        return A.Run(host=_ident(c[1]), command=_string(c[2]), options=_options(c), span=_sp(c))

    def verify_http(self, c):
        return A.VerifyHttp(url=_string(c[2]), options=_options(c), span=_sp(c))

    def verify_dns(self, c):
        return A.VerifyDns(name=_string(c[2]), host=_ident(c[4]), options=_options(c), span=_sp(c))

    def verify_run(self, c):
        return A.VerifyRun(host=_ident(c[2]), command=_string(c[3]), options=_options(c), span=_sp(c))

    def confirm(self, c):
        return A.Confirm(message=_string(c[1]), options=_options(c), span=_sp(c))

    def parallel(self, c):
        steps = tuple(x for x in c if isinstance(x, A.Step))
        node = A.Parallel(steps=steps, span=_sp(c))
        _check_depth(node, [x for x in steps if isinstance(x, (A.Parallel, A.Sequence))], "`parallel` blocks",
                     c[0])
        return node

    def sequence(self, c):
        steps = tuple(x for x in c if isinstance(x, A.Step))
        node = A.Sequence(steps=steps, span=_sp(c))
        _check_depth(node, [x for x in steps if isinstance(x, A.Parallel)], "`parallel` blocks", c[0])
        return node

    def labeled(self, c):
        tok, step = c
        name = tok.value.split(":")[0].rstrip()
        label = A.Ident(name, A.Span(_ctx.file, tok.line, tok.column, tok.line, tok.column + len(name)))
        return step.with_label(label, _tspan(tok).to(step.span))

    def steps_block(self, c):
        steps = tuple(x for x in c if isinstance(x, A.Step))
        return ("steps", steps, _sp(c))

    def start(self, c):
        return c


def _on_comment(tok: Token) -> None:
    _ctx.comments.append(tok)


# One regex finds the next token's shape after any blanks; which terminal a word
# becomes depends on the parser state, decided in _PlanLexer.lex.
# Strings are matched "unrolled" (`"[^"\\]*(?:\\.[^"\\]*)*"`): the same language as the
# grammar's `"([^"\\\n]|\\.)*"`, but linear in the string's length; the alternation form
# takes superlinear time in Python's re (a 4 MB string: 0.3 s, 8 MB: 2.6 s).
_NEXT_RE = re.compile(
    r'[ \t\r\n\f]*(?:(?P<c>#[^\n]*)|(?P<s>"[^"\\\n]*(?:\\.[^"\\\n]*)*")|(?P<w>[a-z_][a-z0-9_]*)|(?P<i>[0-9]+)'
    r'|(?P<p>[{}\[\](),:=]))'
)
_BLANKS_RE = re.compile(r"[ \t\r\n\f]*")
_KEY_AFTER_RE = re.compile(r"[ \t]*=")
_LABEL_AFTER_RE = re.compile(r'[ \t]*:(?![ \t]*")')


class _PlanLexer(Lexer):
    """The contextual lexer of the grammar, written out for speed (Lark's is most of a parse).

    It makes exactly the tokens Lark's `lexer="contextual"` makes (tests/syntax compares the
    two on fuzzed input): in each parser state only the terminals that state accepts are
    tried, KEY (priority 3) before LABEL (2) before the rest; a word becomes a keyword where
    the state accepts that keyword, else a NAME; where no accepted terminal matches, the
    token the whole grammar would see is passed on, and the parser reports it as unexpected.
    """

    __future_interface__ = 2

    def __init__(self, conf):
        self.terminals_by_name = conf.terminals_by_name
        word = re.compile(r"[a-z_][a-z0-9_]*")
        self.keywords = {}  # "stop" -> "STOP"
        self.punct = {}  # "{" -> "LBRACE"
        for t in conf.terminals:
            if t.pattern.type == "str":
                if word.fullmatch(t.pattern.value):
                    self.keywords[t.pattern.value] = t.name
                else:
                    self.punct[t.pattern.value] = t.name
        # Where NAME is not accepted, Lark tries keywords as plain strings, longest first.
        self.by_length = sorted(self.keywords.items(), key=lambda kv: (-len(kv[0]), kv[1]))
        self.terminal_names = frozenset(self.terminals_by_name)
        self.ignore = frozenset(conf.ignore)
        self.states = {}
        self.parse_table = None

    def _state(self, pos):
        """(accepted terminals, KEY accepted, LABEL accepted, NAME accepted) of parser state `pos`."""
        info = self.states.get(pos)
        if info is None:
            acc = frozenset(self.parse_table.states[pos]) & self.terminal_names
            info = (acc, "KEY" in acc, "LABEL" in acc, "NAME" in acc)
            self.states[pos] = info
        return info

    def _word_type(self, text, start, end, info):
        """(type, end) of the word text[start:end] in a parser state; the whole grammar's view if none fits."""
        acc, key_ok, label_ok, name_ok = info
        if key_ok and _KEY_AFTER_RE.match(text, end):
            return "KEY", end
        if label_ok:
            m = _LABEL_AFTER_RE.match(text, end)
            if m:
                return "LABEL", m.end()
        kw = self.keywords.get(text[start:end])
        if name_ok:
            return (kw if kw in acc else "NAME"), end
        for s, name in self.by_length:
            if name in acc and text.startswith(s, start):
                return name, start + len(s)
        # Nothing this state accepts fits: pass on what the whole grammar sees; the parser rejects it.
        if _KEY_AFTER_RE.match(text, end):
            return "KEY", end
        m = _LABEL_AFTER_RE.match(text, end)
        if m:
            return "LABEL", m.end()
        return kw or "NAME", end

    def lex(self, lexer_state, parser_state):
        text = lexer_state.text.text
        n = len(text)
        pos, line, line_start = 0, 1, 0
        self.parse_table = parser_state.parse_conf.parse_table
        stack = parser_state.state_stack  # changed in place by the parser
        states = self.states
        state_info = self._state
        word_type = self._word_type
        punct = self.punct
        match = _NEXT_RE.match
        count = text.count
        new_token = Token._future_new
        comments = _ctx.comments
        while True:
            m = match(text, pos)
            if m is None:
                blank_end = _BLANKS_RE.match(text, pos).end()
                newlines = count("\n", pos, blank_end)
                if newlines:
                    line += newlines
                    line_start = text.rindex("\n", pos, blank_end) + 1
                if blank_end >= n:
                    return
                acc = state_info(stack[-1])[0]
                raise UnexpectedCharacters(text, blank_end, line, blank_end - line_start + 1,
                                           allowed=set(acc - self.ignore), state=parser_state,
                                           token_history=lexer_state.last_token and [lexer_state.last_token],
                                           terminals_by_name=self.terminals_by_name)
            kind = m.lastgroup
            start = m.start(kind)
            end = m.end()
            if start != pos:
                newlines = count("\n", pos, start)
                if newlines:
                    line += newlines
                    line_start = text.rindex("\n", pos, start) + 1
            if kind == "w":
                info = states.get(stack[-1]) or state_info(stack[-1])
                type_, end = word_type(text, start, end, info)
            elif kind == "s":
                type_ = "STRING"
            elif kind == "p":
                type_ = punct[text[start]]
            elif kind == "i":
                type_ = "INT"
            else:
                comments.append(new_token("COMMENT", text[start:end], start, line, start - line_start + 1, line,
                                          end - line_start + 1, end))
                pos = end
                continue
            tok = new_token(type_, text[start:end], start, line, start - line_start + 1, line,
                            end - line_start + 1, end)
            pos = end
            yield tok


def _build(lexer) -> Lark:
    text = grammar_text()
    return Lark(
        text,
        parser="lalr",
        lexer=lexer,
        keep_all_tokens=True,
        maybe_placeholders=False,
        transformer=_ToAst(),
        lexer_callbacks={"COMMENT": _on_comment} if lexer == "contextual" else {},
        cache=_cache_file(text + repr(lexer)) or False,
    )


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return _build(_PlanLexer)


@functools.lru_cache(maxsize=1)
def _reference_parser() -> Lark:
    """The same grammar with Lark's own contextual lexer: the yardstick _PlanLexer is tested against."""
    return _build("contextual")


# ---------------------------------------------------------------- errors

_HUMAN = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a number",
    "KEY": "`key = value`",
    "LABEL": "a label (`name:`)",
    "$END": "end of file",
}
_STEP_WORDS = {
    "stop", "start", "restart", "dump", "restore", "archive", "extract", "sync", "transfer",
    "move", "delete", "drop", "run", "verify", "confirm", "parallel",
}


def _expected_words(expected) -> List[str]:
    terms = _parser().terminals
    by_name = {t.name: t for t in terms}
    words = set()
    for name in expected:
        if name in _HUMAN:
            words.add(_HUMAN[name])
        elif name in by_name and by_name[name].pattern.type == "str":
            words.add(f"`{by_name[name].pattern.value}`")
        else:
            words.add(name.lower())
    steps = {w for w in words if w.strip("`") in _STEP_WORDS}
    if len(steps) >= 6:
        words -= steps
        words.add("a step (`stop`, `dump`, `transfer`, ...)")
    return sorted(words)


def _acceptable(exc, fallback):
    """The terminals that could really come next: LALR's lookahead sets are merged across
    contexts (a `,` or `]` "expected" after a value in a declaration's body), so ask the
    parser, replaying its state, which terminals it would accept."""
    try:
        accepted = exc.interactive_parser.accepts()
    except Exception:  # no interactive parser on this error; the lookahead set will do
        accepted = None
    return accepted or fallback or ()


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "STRING":
        return f"string {tok.value}"
    if tok.type in ("NAME", "KEY"):
        return f"name `{tok.value}`"
    if tok.type == "LABEL":
        return f"label `{tok.value}`"
    return f"`{tok.value}`"


def _line_col_of_offset(text: str, pos: int):
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def _syntax_finding(file: str, text: str, exc) -> Finding:
    if isinstance(exc, _SyntaxProblem):
        return Finding("E101", Severity.ERROR, f"syntax error: {exc.message}", exc.span,
                       label="here", help=exc.help)
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        span = A.Span(file, exc.line, exc.column, exc.line, exc.column + 1)
        if ch == '"':
            end = text.find("\n", exc.pos_in_stream)
            end = len(text) if end < 0 else end
            return Finding("E101", Severity.ERROR, "syntax error: unterminated string",
                           A.Span(file, exc.line, exc.column, exc.line, exc.column + (end - exc.pos_in_stream)),
                           label="this string has no closing `\"` on its line",
                           help='close the string on the same line; write a newline inside it as \\n')
        nxt = text[exc.pos_in_stream + 1: exc.pos_in_stream + 2]
        if ch == "-" and nxt.isdigit():
            help = "numbers are whole and not negative"
        elif ch.isalpha() and ch.isupper() or ch == "-":
            help = "names are lowercase letters, digits and `_` (`[a-z_][a-z0-9_]*`)"
        elif ch == "'":
            help = 'strings use double quotes: "..."'
        else:
            help = None
        allowed = _expected_words(_acceptable(exc, exc.allowed))
        msg = f"syntax error: unexpected character {ch!r}"
        if allowed:
            msg += f", expected {_join(allowed)}"
        return Finding("E101", Severity.ERROR, msg, span, label="unexpected character", help=help)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = _expected_words(_acceptable(exc, exc.expected))
        if tok.type == "$END":
            line, col = _line_col_of_offset(text, len(text))
            span = A.Span(file, line, col, line, col)
        else:
            span = _tspan(tok)
        msg = f"syntax error: unexpected {_describe(tok)}"
        if expected:
            msg += f", expected {_join(expected)}"
        help = None
        notes = ()
        if tok.type == "KEY":
            help = "`key = value` belongs inside a declaration's `{ }` or after a step"
        elif tok.type == "SEQUENCE":
            help = "a `sequence { }` is one lane of a `parallel` block: write it directly inside `parallel { }`"
        elif tok.type == "$END":
            notes, help = _unclosed(file, text)
        return Finding("E101", Severity.ERROR, msg, span, label=f"unexpected {_describe(tok)}", help=help,
                       notes=notes)
    if isinstance(exc, UnexpectedEOF):
        line, col = _line_col_of_offset(text, len(text))
        notes, help = _unclosed(file, text)
        return Finding("E101", Severity.ERROR, "syntax error: unexpected end of file",
                       A.Span(file, line, col, line, col), label="file ends here", notes=notes, help=help)
    raise exc


_BRACE_RE = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|#[^\n]*|[{}]')


def _unclosed(file: str, text: str):
    """(notes, help) naming the `{` still open at the end of the file, if any."""
    stack = []
    for m in _BRACE_RE.finditer(text):
        ch = m.group()
        if ch == "{":
            stack.append(m.start())
        elif ch == "}" and stack:
            stack.pop()
    if not stack:
        return (), None
    line, col = _line_col_of_offset(text, stack[-1])
    return (f"the `{{` at {file}:{line}:{col} is never closed",), "add the missing `}`"


def _join(words: List[str]) -> str:
    if len(words) == 1:
        return words[0]
    if len(words) > 8:
        words = words[:8] + ["..."]
    return "one of " + ", ".join(words)


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
    _ctx.file = file
    _ctx.comments = []
    _ctx.depth = {}
    _ctx.keep = []
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
    except (UnexpectedCharacters, UnexpectedToken, UnexpectedEOF, _SyntaxProblem) as exc:
        raise PlanError([_syntax_finding(file, text, exc)]) from None
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
    comments = tuple(A.Comment(t.value, _tspan(t)) for t in _ctx.comments)
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
