"""Tree -> AST: one method per grammar rule, run inline by the LALR parser, so no parse
tree is ever built; spans come from the tokens."""

from __future__ import annotations

import re
import threading
from typing import Optional

from mdsl.syntax import ast as A
from mdsl.syntax._lark import Token, Transformer


class _ParseContext(threading.local):
    """What one parse collects beside the AST (the parser and this transformer are shared)."""

    def begin(self, file: str) -> None:
        """Start a parse of `file`."""
        self.file = file
        self.comments = []  # COMMENT tokens, in order; the lexer sets them aside
        self.depth = {}  # id(node) -> nesting depth of a list or a parallel block
        self.keep = []  # the nodes in `depth`, alive so their ids stay unique


context = _ParseContext()


def token_span(tok: Token) -> A.Span:
    """The source span of one token in the file being parsed."""
    return A.Span(context.file, tok.line, tok.column, tok.end_line, tok.end_column)


def _sp(children) -> A.Span:
    # The hottest helper of a parse: no intermediate Span objects.
    first, last = children[0], children[-1]
    if isinstance(first, Token):
        line, col = first.line, first.column
    else:
        line, col = first.span.line, first.span.col
    if isinstance(last, Token):
        return A.Span(context.file, line, col, last.end_line, last.end_column)
    return A.Span(context.file, line, col, last.span.end_line, last.span.end_col)


class SyntaxProblem(Exception):
    """A lexically valid but malformed token (e.g. a bad escape in a string)."""

    def __init__(self, message: str, span: A.Span, help: Optional[str] = None):
        super().__init__(message)
        self.message, self.span, self.help = message, span, help


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(.)")


# Control characters (other than tab) cannot be seen in an editor and cannot be
# passed to a command line (NUL); `\n` and `\t` are the way to write them.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def decode_string(tok: Token) -> A.Str:
    """A STRING token's value, escapes decoded; SyntaxProblem on a bad escape or control character."""
    raw = tok.value[1:-1]

    def problem(at: int, width: int, message: str, help: str) -> SyntaxProblem:
        col = tok.column + 1 + at  # past the opening quote
        return SyntaxProblem(message, A.Span(context.file, tok.line, col, tok.line, col + width), help=help)

    bad = _CONTROL_RE.search(raw)
    if bad is not None:
        raise problem(bad.start(), 1, f"a string cannot hold the control character U+{ord(bad.group()):04X}",
                      "write a newline as \\n and a tab as \\t; other control characters have no place in a plan")
    if "\\" not in raw:
        return A.Str(raw, token_span(tok))

    def sub(m):
        ch = m.group(1)
        if ch not in _ESCAPES:
            raise problem(m.start(), 2, f"unknown escape `\\{ch}` in a string",
                          'strings know \\" \\\\ \\n and \\t; write a backslash as \\\\')
        return _ESCAPES[ch]

    return A.Str(_ESCAPE_RE.sub(sub, raw), token_span(tok))


def _ident(tok: Token) -> A.Ident:
    return A.Ident(tok.value, token_span(tok))


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


# Every later stage walks these trees recursively; a limit far above any real
# plan keeps a hostile file from exhausting Python's stack.
MAX_NESTING = 32


def _check_depth(node, children, what: str, opener: Token) -> None:
    if not children:
        return
    depth = 1 + max(context.depth.get(id(x), 1) for x in children)
    if depth > MAX_NESTING:
        raise SyntaxProblem(f"{what} nested more than {MAX_NESTING} deep", token_span(opener),
                            help="flatten the nesting; a real plan needs at most a few levels")
    context.depth[id(node)] = depth
    context.keep.append(node)


class ToAst(Transformer):
    """One method per grammar rule; runs inside the LALR parser."""

    # values
    def string(self, c):
        return decode_string(c[0])

    def int(self, c):
        return A.Int(int(c[0].value), token_span(c[0]))

    def true(self, c):
        return A.Bool(True, token_span(c[0]))

    def false(self, c):
        return A.Bool(False, token_span(c[0]))

    def ref(self, c):
        return A.Ref(c[0].value, token_span(c[0]))

    def list(self, c):
        items = tuple(x for x in c if not isinstance(x, Token) or x.type not in ("LSQB", "RSQB", "COMMA"))
        items = tuple(decode_string(x) if isinstance(x, Token) else x for x in items)
        node = A.ListValue(items, _sp(c))
        _check_depth(node, [x for x in items if isinstance(x, A.ListValue)], "lists", c[0])
        return node

    def env_secret(self, c):
        return A.Secret("env", decode_string(c[2]).value, _sp(c))

    def file_secret(self, c):
        return A.Secret("file", decode_string(c[2]).value, _sp(c))

    # declarations
    def plan_title(self, c):
        return ("title", decode_string(c[1]))

    def attr(self, c):
        return A.Attr(_ident(c[0]), c[2], _sp(c))

    def derived(self, c):
        return A.Derived(decode_string(c[1]), decode_string(c[3]), _sp(c))

    def body(self, c):
        attrs = tuple(x for x in c if isinstance(x, A.Attr))
        derived = tuple(x for x in c if isinstance(x, A.Derived))
        return _Body(attrs, derived, _sp(c))

    def host_decl(self, c):
        body = c[2]
        return A.HostDecl(_ident(c[1]), body.attrs, _sp(c))

    def resource_decl(self, c):
        kind_tok, name, _on, host, body = c
        return A.ResourceDecl(kind_tok.value, _ident(name), _ident(host), body.attrs, body.derived, _sp(c))

    # steps
    def name_list(self, c):
        names = tuple(_ident(t) for t in c if t.type == "NAME")
        return _NameList(names, _sp(c))

    def location(self, c):
        return A.Location(_ident(c[0]), decode_string(c[2]), _sp(c))

    def named(self, c):
        return _ident(c[0])

    def kv_option(self, c):
        return A.Option(_ident(c[0]), c[2], _sp(c))

    def flag_option(self, c):
        return A.Option(_ident(c[0]), None, _sp(c))

    def exclude_option(self, c):
        subs = tuple(decode_string(t) for t in c if t.type == "STRING")
        return A.Option(A.Ident("exclude", token_span(c[0])), A.ListValue(subs, _sp(c[1:])), _sp(c))

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

    def replicate(self, c):
        return A.Replicate(source=_ident(c[1]), dest=_ident(c[3]), options=_options(c), span=_sp(c))

    def transfer(self, c):
        return A.Transfer(source=c[1], dest=c[3], options=_options(c), span=_sp(c))

    def move(self, c):
        return A.Move(source=c[1], dest=c[3], options=_options(c), span=_sp(c))

    def delete(self, c):
        return A.Delete(target=c[1], options=_options(c), span=_sp(c))

    def drop(self, c):
        return A.Drop(db=_ident(c[1]), options=_options(c), span=_sp(c))

    def run(self, c):
        return A.Run(host=_ident(c[1]), command=decode_string(c[2]), options=_options(c), span=_sp(c))

    def verify_http(self, c):
        return A.VerifyHttp(url=decode_string(c[2]), options=_options(c), span=_sp(c))

    def verify_dns(self, c):
        return A.VerifyDns(name=decode_string(c[2]), host=_ident(c[4]), options=_options(c), span=_sp(c))

    def verify_run(self, c):
        return A.VerifyRun(host=_ident(c[2]), command=decode_string(c[3]), options=_options(c), span=_sp(c))

    def confirm(self, c):
        return A.Confirm(message=decode_string(c[1]), options=_options(c), span=_sp(c))

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
        label = A.Ident(name, A.Span(context.file, tok.line, tok.column, tok.line, tok.column + len(name)))
        return step.with_label(label, token_span(tok).to(step.span))

    def steps_block(self, c):
        steps = tuple(x for x in c if isinstance(x, A.Step))
        return ("steps", steps, _sp(c))

    def start(self, c):
        return c


def on_comment(tok: Token) -> None:
    """Set a COMMENT token aside for the Plan (the grammar ignores comments)."""
    context.comments.append(tok)
