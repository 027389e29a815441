"""`mdsl fmt`: a plan in its canonical layout, every comment kept.

The layout is a function of the AST, the comments, where the source had blank
lines and which declaration bodies it wrote on one line: one item per line,
two-space indents, one space between tokens, and a blank line (at most one)
wherever the source had one. Declarations are aligned as the docs show them:
`=` lined up inside a body, and the `{` of one-line declarations on
consecutive lines lined up (`host ubuntu   { ... }` over `host beetroot { ... }`).
A body written on one line stays there while it fits in 100 columns and holds
no comment or `derived`; one written over several lines stays so. Steps are not
aligned in columns: their shapes differ too much for a table to stay readable,
and a rename would reflow its neighbours. Trailing comments on consecutive
lines line up. The output parses to an equal AST.

Comments travel with the item they belong to: a comment alone on its line goes
right above the next item (so a `# mdsl: allow` stays on the line above its
step); a comment after code on a line stays at the end of that item's line.
"""

from __future__ import annotations

import bisect
from typing import List, Optional, Tuple

from mdsl.syntax import ast as A

_INDENT = "  "
_ONE_LINE_MAX = 100

Pos = Tuple[int, int]


class _Unit:
    """One output line: its text and where the thing it shows starts in the source."""

    __slots__ = ("indent", "text", "pos", "end_line", "inner", "lead", "trail", "force_blank", "head")

    def __init__(self, indent: int, text: str, pos: Pos, end_line: int, inner: Optional[int] = None,
                 force_blank: bool = False, head: Optional[int] = None):
        self.indent = indent
        self.text = text
        self.pos = pos
        self.end_line = end_line
        self.inner = indent if inner is None else inner  # indent of comments placed above it
        self.lead: List[A.Comment] = []
        self.trail: List[A.Comment] = []
        self.force_blank = force_blank
        self.head = head  # a one-line declaration: the length of its text before ` {`


# ---------------------------------------------------------------- values


def string_literal(s: str) -> str:
    """A plan string literal: backslash, quote, newline and tab escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def value(v) -> str:
    """A value as plan text."""
    if isinstance(v, A.Str):
        return string_literal(v.value)
    if isinstance(v, A.Int):
        return str(v.value)
    if isinstance(v, A.Bool):
        return "true" if v.value else "false"
    if isinstance(v, A.Ref):
        return v.name
    if isinstance(v, A.ListValue):
        return "[" + ", ".join(value(i) for i in v.items) + "]"
    if isinstance(v, A.Secret):
        return f"{v.source}({string_literal(v.arg)})"
    raise TypeError(f"not a value: {v!r}")


def _target(t) -> str:
    if isinstance(t, A.Location):
        return f"{t.host.name}:{string_literal(t.path.value)}"
    return t.name


def _option(o: A.Option) -> str:
    if o.key.name == "exclude" and isinstance(o.value, A.ListValue) and all(
            isinstance(i, A.Str) for i in o.value.items) and o.value.items:
        return "exclude " + ", ".join(string_literal(i.value) for i in o.value.items)
    if o.value is None:
        return o.key.name
    return f"{o.key.name} = {value(o.value)}"


def _services(s) -> str:
    return f"{s.keyword} " + ", ".join(i.name for i in s.services)


def _copy(s) -> str:
    return f"{s.keyword} {_target(s.source)} to {_target(s.dest)}"


# A step's words before its options, by node type.
_HEADS = {
    A.Stop: _services,
    A.Start: _services,
    A.Restart: _services,
    A.Dump: lambda s: f"dump {s.db.name} to {_target(s.to)}",
    A.Restore: lambda s: f"restore {_target(s.source)} into {s.db.name}",
    A.Archive: lambda s: f"archive {s.dir.name} to {_target(s.to)}",
    A.Extract: lambda s: f"extract {_target(s.source)} into {s.dir.name}",
    A.Sync: lambda s: f"sync {s.source.name} to {s.dest.name}",
    A.Replicate: lambda s: f"replicate {s.source.name} to {s.dest.name}",
    A.Transfer: _copy,
    A.Move: _copy,
    A.Delete: lambda s: f"delete {_target(s.target)}",
    A.Drop: lambda s: f"drop {s.db.name}",
    A.Run: lambda s: f"run {s.host.name} {string_literal(s.command.value)}",
    A.VerifyHttp: lambda s: f"verify http {string_literal(s.url.value)}",
    A.VerifyDns: lambda s: f"verify dns {string_literal(s.name.value)} is {s.host.name}",
    A.VerifyRun: lambda s: f"verify run {s.host.name} {string_literal(s.command.value)}",
    A.Confirm: lambda s: f"confirm {string_literal(s.message.value)}",
}


def step_text(s: A.Step) -> str:
    """A step (not a parallel block) as one line of plan text, label and options included."""
    head = _HEADS.get(type(s))
    if head is None:
        raise TypeError(f"not a step: {s!r}")
    text = " ".join([head(s)] + [_option(o) for o in s.options])
    return f"{s.label.name}: {text}" if s.label is not None else text


# ---------------------------------------------------------------- layout


def _start(span: A.Span) -> Pos:
    return (span.line, span.col)


def _close(span: A.Span) -> Pos:
    """Where the `}` that ends `span` stands."""
    return (span.end_line, max(span.end_col - 1, 1))


class _Layout:
    def __init__(self, plan: A.Plan):
        self.plan = plan
        self.units: List[_Unit] = []
        self.comment_pos = sorted(_start(c.span) for c in plan.comments)

    def add(self, indent, text, pos, end_line, inner=None, force_blank=False, head=None) -> _Unit:
        u = _Unit(indent, text, pos, end_line, inner, force_blank, head)
        self.units.append(u)
        return u

    def comments_inside(self, span: A.Span) -> bool:
        i = bisect.bisect_right(self.comment_pos, _start(span))
        return i < len(self.comment_pos) and self.comment_pos[i] < (span.end_line, span.end_col)

    # -- declarations

    def decl(self, d) -> None:
        if isinstance(d, A.HostDecl):
            head = f"host {d.name.name}"
        else:
            head = f"{d.kind} {d.name.name} on {d.host.name}"
        derived = getattr(d, "derived", ())
        attrs_text = [f"{a.key.name} = {value(a.value)}" for a in d.attrs]
        one_line = f"{head} {{ " + "  ".join(attrs_text) + " }" if attrs_text else f"{head} {{ }}"
        # The author chooses: a body written on one line stays on one line while it can.
        written_on_one_line = d.span.line == d.span.end_line
        if (written_on_one_line or not d.attrs) and not derived and len(one_line) <= _ONE_LINE_MAX \
                and not self.comments_inside(d.span):
            prev = self.units[-1].text if self.units else None
            self.add(0, one_line, _start(d.span), d.span.end_line,
                     force_blank=prev is not None and (prev == "}" or prev.startswith("plan ")), head=len(head))
            return
        self.add(0, head + " {", _start(d.span), d.span.line, force_blank=bool(self.units))
        width = max((len(a.key.name) for a in d.attrs), default=0)
        items = sorted(list(d.attrs) + list(derived), key=lambda x: _start(x.span))
        for it in items:
            if isinstance(it, A.Attr):
                text = f"{it.key.name.ljust(width)} = {value(it.value)}"
            else:
                text = f"derived {string_literal(it.subpath.value)} rebuild {string_literal(it.rebuild.value)}"
            self.add(1, text, _start(it.span), it.span.end_line)
        self.add(0, "}", _close(d.span), d.span.end_line, inner=1)

    # -- steps

    def steps(self, steps, indent: int) -> None:
        for s in steps:
            if isinstance(s, (A.Parallel, A.Sequence)):
                head = f"{s.label.name}: {s.keyword} {{" if s.label is not None else f"{s.keyword} {{"
                self.add(indent, head, _start(s.span), s.span.line)
                self.steps(s.steps, indent + 1)
                self.add(indent, "}", _close(s.span), s.span.end_line, inner=indent + 1)
            else:
                self.add(indent, step_text(s), _start(s.span), s.span.end_line)

    def build(self) -> None:
        p = self.plan
        if p.title is not None:
            t = p.title.span
            self.add(0, f"plan {string_literal(p.title.value)}", (t.line, 1), t.end_line)
        for d in p.decls:
            self.decl(d)
        if p.steps or p.steps_span is not None:
            sp = p.steps_span
            start = _start(sp) if sp is not None else (1 << 30, 0)
            self.add(0, "steps {", start, start[0], force_blank=bool(self.units))
            self.steps(p.steps, 1)
            close = _close(sp) if sp is not None else (1 << 30, 1)
            self.add(0, "}", close, close[0], inner=1)


def _attach(units: List[_Unit], comments, source_lines) -> List[A.Comment]:
    """Give every comment to a unit (above it, or at the end of its line); return those left for the end."""
    order = sorted(range(len(units)), key=lambda i: units[i].pos)
    starts = [units[i].pos for i in order]
    tail = []
    for c in comments:
        pos = _start(c.span)
        line = source_lines[c.span.line - 1] if 0 < c.span.line <= len(source_lines) else ""
        alone = line[: c.span.col - 1].strip() == ""
        k = bisect.bisect_left(starts, pos)
        if alone:
            if k < len(order):
                units[order[k]].lead.append(c)
            else:
                tail.append(c)
        else:
            if k > 0:
                units[order[k - 1]].trail.append(c)
            elif order:
                units[order[0]].lead.append(c)
            else:
                tail.append(c)
    return tail


def format_plan(plan: A.Plan, source: str) -> str:
    """`plan` (parsed from `source`) in the canonical layout, comments kept."""
    lay = _Layout(plan)
    lay.build()
    src_lines = source.split("\n")
    blank = [ln.strip() == "" for ln in src_lines]
    tail = _attach(lay.units, plan.comments, src_lines)

    out: List[Tuple[str, Optional[str], Optional[int]]] = []  # (code, trailing comment, one-line head length)
    prev_line = None  # last source line emitted
    prev_indent_open = True  # the previous output line opened a block (or nothing was written yet)

    def had_blank(a: Optional[int], b: int) -> bool:
        if a is None or b <= a + 1:
            return False
        return any(blank[i - 1] for i in range(a + 1, b) if 0 < i <= len(blank))

    def emit(code: str, src_line: int, comment: Optional[str] = None, force: bool = False, closing=False,
             head: Optional[int] = None):
        nonlocal prev_line, prev_indent_open
        if out and not prev_indent_open and not closing and (force or had_blank(prev_line, src_line)):
            out.append(("", None, None))
        out.append((code, comment, head))
        prev_line = max(src_line, prev_line or 0) if src_line < (1 << 29) else prev_line
        prev_indent_open = code.rstrip().endswith("{") and not code.rstrip().endswith("{ }")

    for u in lay.units:
        closing = u.text == "}"
        first = True
        for c in u.lead:
            emit(_INDENT * u.inner + c.text.rstrip(), c.span.line, force=u.force_blank and first)
            first = False
        trail = [c.text.rstrip() for c in u.trail]
        # A line holds one trailing comment; any more go above it, in order.
        for extra in trail[:-1]:
            emit(_INDENT * u.inner + extra, u.pos[0], force=u.force_blank and first)
            first = False
        emit(_INDENT * u.indent + u.text, u.pos[0], trail[-1] if trail else None,
             force=u.force_blank and first, closing=closing, head=u.head)
        if u.end_line > (prev_line or 0) and u.end_line < (1 << 29):
            prev_line = u.end_line
    for c in tail:
        emit(c.text.rstrip(), c.span.line)

    _align_one_line_declarations(out)
    return _with_trailing_comments(out)


def _align_one_line_declarations(out) -> None:
    """Pad the heads of one-line declarations on consecutive lines so their `{` line up."""
    i = 0
    while i < len(out):
        j = i
        while j < len(out) and out[j][2] is not None:
            j += 1
        if j - i > 1:
            width = max(out[k][2] for k in range(i, j))
            for k in range(i, j):
                code, comment, head = out[k]
                out[k] = (code[:head].ljust(width) + code[head:], comment, width)
        i = max(j, i + 1)


def _with_trailing_comments(out) -> str:
    """The output text, the trailing comments of consecutive lines aligned."""
    lines: List[str] = []
    i = 0
    while i < len(out):
        if out[i][1] is None:
            lines.append(out[i][0])
            i += 1
            continue
        j = i
        while j < len(out) and out[j][1] is not None and out[j][0]:
            j += 1
        if j == i:  # a trailing comment on an empty code line cannot happen; be safe
            lines.append(out[i][1])
            i += 1
            continue
        col = max(len(out[k][0]) for k in range(i, j)) + 2
        for k in range(i, j):
            lines.append(out[k][0].ljust(col) + out[k][1])
        i = j
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    return text + "\n" if text else ""


def format_text(text: str, file: str = "<plan>") -> str:
    """Parse `text` and return it in the canonical layout (raises PlanError on bad syntax)."""
    from mdsl.syntax.parser import parse_text

    return format_plan(parse_text(text, file), text)
