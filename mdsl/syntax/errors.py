"""Parse errors as E101 findings: file:line:col, what came, what was expected, and a hint."""

from __future__ import annotations

import re
from typing import List

from mdsl.findings import Finding, Severity
from mdsl.syntax import ast as A
from mdsl.syntax._lark import Token, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
from mdsl.syntax.spelling import DECLARATION_KEYWORDS, STEP_KEYWORDS, closest, misspelled_step, unknown_step
from mdsl.syntax.transform import SyntaxProblem, token_span

_HUMAN = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a number",
    "KEY": "`key = value`",
    "LABEL": "a label (`name:`)",
    "$END": "end of file",
}


def _expected_words(expected, terminals) -> List[str]:
    by_name = {t.name: t for t in terminals}
    words = set()
    for name in expected:
        if name == "NAME" and "HOST" in expected:  # a top-level name is the kind of a resource
            words.add("a resource (`KIND NAME on HOST { }`)")
        elif name in _HUMAN:
            words.add(_HUMAN[name])
        elif name in by_name and by_name[name].pattern.type == "str":
            words.add(f"`{by_name[name].pattern.value}`")
        else:
            words.add(name.lower())
    steps = {w for w in words if w.strip("`") in STEP_KEYWORDS}
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


def syntax_finding(file: str, text: str, exc, terminals) -> Finding:
    """The E101 finding for a parse error `exc` in `text`; `terminals` are the grammar's (for their words)."""
    if isinstance(exc, SyntaxProblem):
        return Finding("E101", Severity.ERROR, f"syntax error: {exc.message}", exc.span,
                       label="here", help=exc.help)
    if isinstance(exc, UnexpectedCharacters):
        return _character_finding(file, text, exc, terminals)
    if isinstance(exc, UnexpectedToken):
        return _token_finding(file, text, exc, terminals)
    if isinstance(exc, UnexpectedEOF):
        line, col = _line_col_of_offset(text, len(text))
        notes, help = _unclosed(file, text)
        return Finding("E101", Severity.ERROR, "syntax error: unexpected end of file",
                       A.Span(file, line, col, line, col), label="file ends here", notes=notes, help=help)
    raise exc


def _character_finding(file: str, text: str, exc: UnexpectedCharacters, terminals) -> Finding:
    ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
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
    allowed = _expected_words(_acceptable(exc, exc.allowed), terminals)
    msg = f"syntax error: unexpected character {ch!r}"
    if allowed:
        msg += f", expected {_join(allowed)}"
    return Finding("E101", Severity.ERROR, msg, A.Span(file, exc.line, exc.column, exc.line, exc.column + 1),
                   label="unexpected character", help=help)


_TOKEN_HELP = {
    "KEY": "`key = value` belongs inside a declaration's `{ }` or after a step",
    "SEQUENCE": "a `sequence { }` is one lane of a `parallel` block: write it directly inside `parallel { }`",
}


def _value_stack(exc: UnexpectedToken) -> list:
    """What the parser had read when the error came: tokens, AST nodes and Lark's trees of repeats."""
    try:
        return exc.interactive_parser.parser_state.value_stack
    except AttributeError:
        return []


def _resource_header(stack: list):
    """The tokens read of a resource declaration's `KIND NAME on HOST` when the error came, else None."""
    # At the top level, what is below the header on the stack is the declarations before it.
    header = []
    for value in reversed(stack):
        if not isinstance(value, Token):
            break
        header.append(value)
    header.reverse()
    if not header or header[0].type != "NAME" or any(t.type not in ("NAME", "ON") for t in header):
        return None
    below = stack[:len(stack) - len(header)]
    if any(not isinstance(v, Tree) or not v.data.startswith("__start") for v in below):
        return None
    return header


def _end_line(value) -> int:
    if isinstance(value, Token):
        return value.end_line
    if isinstance(value, Tree):
        return _end_line(value.children[-1]) if value.children else 0
    span = getattr(value, "span", None)
    return span.end_line if span is not None else 0


def _step_typo(stack: list, exc: UnexpectedToken):
    """(word, step keyword) when the error comes from a misspelled step keyword: the unexpected name
    itself where a step belongs, or a bare word that starts the error's line and was read as a flag
    option of the step above; else None. The word is a Token or an Ident."""
    tok = exc.token
    if tok.type == "NAME" and "DUMP" in _acceptable(exc, exc.expected) and misspelled_step(tok.value):
        return tok, misspelled_step(tok.value)
    # The run of names and flag options at the top of the stack (options may sit in Lark's tree of repeats).
    run = []
    for value in reversed(stack):
        if isinstance(value, Tree) and all(isinstance(v, A.Option) for v in value.children):
            run.extend(reversed(value.children))
            continue
        run.append(value)
        if not (isinstance(value, A.Option) or isinstance(value, Token) and value.type == "NAME"):
            break  # what comes before the run: only where it ends matters
    run.reverse()
    for before, value in zip(run, run[1:], strict=False):
        if isinstance(value, A.Option) and value.value is None:
            word = value.key
            name, line = word.name, word.span.line
        elif isinstance(value, Token):
            word, name, line = value, value.value, value.line
        else:
            continue
        if line == tok.line and _end_line(before) < line and misspelled_step(name):
            return word, misspelled_step(name)
    return None


def _token_finding(file: str, text: str, exc: UnexpectedToken, terminals) -> Finding:
    tok = exc.token
    stack = _value_stack(exc)
    typo = _step_typo(stack, exc) if tok.type != "$END" else None
    if typo:
        word, keyword = typo
        span = token_span(word) if isinstance(word, Token) else word.span
        name = word.value if isinstance(word, Token) else word.name
        return Finding("E101", Severity.ERROR, f"syntax error: {unknown_step(name, keyword)}", span,
                       label="not a step keyword")
    header = _resource_header(stack)
    if header and header[0].value in STEP_KEYWORDS | {"sequence"}:
        word = header[0]
        return Finding("E101", Severity.ERROR, f"syntax error: unexpected `{word.value}`: a step outside `steps {{ }}`",
                       token_span(word), label="a step", help="write the steps inside the `steps { }` block")
    if header and len(header) == 1 and tok.type == "EQUAL":
        key = header[0]
        return Finding("E101", Severity.ERROR, f"syntax error: unexpected `{key.value} =` outside a declaration",
                       token_span(key), label=f"unexpected name `{key.value}`", help=_TOKEN_HELP["KEY"])
    expected = _expected_words(_acceptable(exc, exc.expected), terminals)
    msg = f"syntax error: unexpected {_describe(tok)}"
    if expected:
        msg += f", expected {_join(expected)}"
    if tok.type == "$END":
        line, col = _line_col_of_offset(text, len(text))
        span = A.Span(file, line, col, line, col)
        notes, help = _unclosed(file, text)
    else:
        span, notes, help = token_span(tok), (), _TOKEN_HELP.get(tok.type)
    if header:
        meant = closest(header[0].value, DECLARATION_KEYWORDS, cutoff=0.7)
        if meant:
            help = (f"`{header[0].value}` reads as the kind of a resource (`KIND NAME on HOST {{ }}`); "
                    f"did you mean `{meant}`?")
    return Finding("E101", Severity.ERROR, msg, span, label=f"unexpected {_describe(tok)}", help=help,
                   notes=notes)


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
