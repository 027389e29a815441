"""AST of a `.plan` file: frozen attrs classes, each with a source span.

Spans are excluded from equality, so two trees parsed from differently laid
out text compare equal when they say the same thing.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import attrs
from attrs import field, frozen


@frozen
class Span:
    """Where a node stands in its file: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def to(self, other: "Span") -> "Span":
        """The span from the start of this one to the end of `other`."""
        return Span(self.file, self.line, self.col, other.end_line, other.end_col)


NOWHERE = Span("<none>", 1, 1, 1, 1)


def _span():
    return field(eq=False, repr=False, default=NOWHERE)


# ---------------------------------------------------------------- values


@frozen
class Ident:
    """A name as written: a declaration's name or a reference to one."""

    name: str
    span: Span = _span()


@frozen
class Str:
    """A string literal, escapes resolved."""

    value: str
    span: Span = _span()


@frozen
class Int:
    """An integer literal."""

    value: int
    span: Span = _span()


@frozen
class Bool:
    """`true` or `false`."""

    value: bool
    span: Span = _span()


@frozen
class Ref:
    """A bare name used as a value: a declaration, or a word like `stopped`."""

    name: str
    span: Span = _span()


@frozen
class ListValue:
    """`[a, b, ...]`."""

    items: Tuple["Value", ...]
    span: Span = _span()


@frozen
class Secret:
    """`env("NAME")` or `file("PATH")`: read at apply time, never shown."""

    source: str  # "env" | "file"
    arg: str
    span: Span = _span()

    def masked(self) -> str:
        """How the secret is shown anywhere: its source, never its value."""
        return f'{self.source}("{self.arg}")'


Value = Union[Str, Int, Bool, Ref, ListValue, Secret]


# ---------------------------------------------------------------- declarations


@frozen
class Attr:
    """`key = value` inside a declaration."""

    key: Ident
    value: Value
    span: Span = _span()


@frozen
class Derived:
    """`derived "SUB" rebuild "CMD"`: SUB may be left behind; CMD rebuilds it."""

    subpath: Str
    rebuild: Str
    span: Span = _span()


@frozen
class HostDecl:
    """`host NAME { ... }`."""

    name: Ident
    attrs: Tuple[Attr, ...]
    span: Span = _span()

    kind = "host"


@frozen
class ResourceDecl:
    """`KIND NAME on HOST { ... }`; the kind (postgres, sqlite, dir, ...) is any name, checked by resolve."""

    kind: str
    name: Ident
    host: Ident
    attrs: Tuple[Attr, ...]
    derived: Tuple[Derived, ...] = ()
    span: Span = _span()

    def kind_span(self) -> Span:
        """Where the kind word stands: the declaration starts with it."""
        return Span(self.span.file, self.span.line, self.span.col, self.span.line, self.span.col + len(self.kind))


Decl = Union[HostDecl, ResourceDecl]


# ---------------------------------------------------------------- steps


@frozen
class Location:
    """`HOST:"PATH"`."""

    host: Ident
    path: Str
    span: Span = _span()


# A step's source or target: a location, or a bare name (a declared file).
Target = Union[Location, Ident]


@frozen
class Option:
    """`key = value`, a bare flag (value None), or `exclude "A", "B"` (a ListValue of Str)."""

    key: Ident
    value: Optional[Value]
    span: Span = _span()


def _opts():
    return field(default=(), converter=tuple)


@frozen
class Step:
    """Common shape of every step: an optional label and options."""

    label: Optional[Ident] = field(default=None, kw_only=True)
    options: Tuple[Option, ...] = field(default=(), converter=tuple, kw_only=True)
    span: Span = field(eq=False, repr=False, default=NOWHERE, kw_only=True)

    keyword = "?"

    def option(self, key: str) -> Optional[Option]:
        """The option called `key`, if given."""
        for opt in self.options:
            if opt.key.name == key:
                return opt
        return None

    def with_label(self, label: Ident, span: Span) -> "Step":
        """This step with a `label:` in front."""
        return attrs.evolve(self, label=label, span=span)


@frozen
class Stop(Step):
    """`stop S, ...`."""

    services: Tuple[Ident, ...] = ()
    keyword = "stop"


@frozen
class Start(Step):
    """`start S, ...`."""

    services: Tuple[Ident, ...] = ()
    keyword = "start"


@frozen
class Restart(Step):
    """`restart S, ...`."""

    services: Tuple[Ident, ...] = ()
    keyword = "restart"


@frozen
class Dump(Step):
    """`dump DB to LOC`."""

    db: Ident = None
    to: Target = None
    keyword = "dump"


@frozen
class Restore(Step):
    """`restore LOC into DB [replace]`."""

    source: Target = None
    db: Ident = None
    keyword = "restore"


@frozen
class Archive(Step):
    """`archive DIR to LOC [exclude ...] [compress = ...]`."""

    dir: Ident = None
    to: Target = None
    keyword = "archive"


@frozen
class Extract(Step):
    """`extract LOC into DIR [replace]`."""

    source: Target = None
    dir: Ident = None
    keyword = "extract"


@frozen
class Sync(Step):
    """`sync DIR to DIR [exclude ...] [live]`; `live`: a pre-sync pass while writers may run."""

    source: Ident = None
    dest: Ident = None
    keyword = "sync"

    @property
    def live(self) -> bool:
        """True for `sync ... live`: its copy is provisional until a final sync of the same dirs."""
        return self.option("live") is not None


@frozen
class Replicate(Step):
    """`replicate DB to DB live` starts following the source's changes into the target while its writers
    run; `replicate DB to DB` (after they stopped) is the final pass: catch up, finish, remove replication."""

    source: Ident = None
    dest: Ident = None
    keyword = "replicate"

    @property
    def live(self) -> bool:
        """True for `replicate ... live`: the target is provisional until the final pass."""
        return self.option("live") is not None


@frozen
class Transfer(Step):
    """`transfer LOC to LOC [via = ...]`."""

    source: Target = None
    dest: Target = None
    keyword = "transfer"


@frozen
class Move(Step):
    """`move LOC to LOC` (a rename on one host)."""

    source: Target = None
    dest: Target = None
    keyword = "move"


@frozen
class Delete(Step):
    """`delete LOC`."""

    target: Target = None
    keyword = "delete"


@frozen
class Drop(Step):
    """`drop DB`."""

    db: Ident = None
    keyword = "drop"


@frozen
class Run(Step):
    """`run HOST "command" [reads = [..]] [writes = [..]] [deletes = [..]] [undo = "command"]`."""

    host: Ident = None
    command: Str = None
    keyword = "run"

    @property
    def undo(self) -> Optional[Str]:
        """`undo = "command"`: what brings the host back when a rollback undoes this step (mdsl.check.cutover)."""
        opt = self.option("undo")
        return opt.value if opt is not None and isinstance(opt.value, Str) else None


@frozen
class VerifyHttp(Step):
    """`verify http "URL" [via = HOST] [status = N]`."""

    url: Str = None
    keyword = "verify http"


@frozen
class VerifyDns(Step):
    """`verify dns "NAME" is HOST`."""

    name: Str = None
    host: Ident = None
    keyword = "verify dns"


@frozen
class VerifyRun(Step):
    """`verify run HOST "cmd"`."""

    host: Ident = None
    command: Str = None
    keyword = "verify run"


@frozen
class Confirm(Step):
    """`confirm "message"`: a manual gate."""

    message: Str = None
    keyword = "confirm"


@frozen
class Parallel(Step):
    """`parallel { ... }`: steps that run concurrently."""

    steps: Tuple[Step, ...] = ()
    keyword = "parallel"


@frozen
class Sequence(Step):
    """`sequence { ... }`, only inside `parallel { }`: a lane, whose steps run in order."""

    steps: Tuple[Step, ...] = ()
    keyword = "sequence"


STEP_KINDS = (
    Stop, Start, Restart, Dump, Restore, Archive, Extract, Sync, Replicate, Transfer, Move,
    Delete, Drop, Run, VerifyHttp, VerifyDns, VerifyRun, Confirm, Parallel, Sequence,
)


# ---------------------------------------------------------------- the file


@frozen
class Comment:
    """A `#` comment, kept for the formatter and for suppressions."""

    text: str
    span: Span = _span()


@frozen
class Suppression:
    """`# mdsl: allow CODE "reason"` (reason None when missing)."""

    code: str
    reason: Optional[str]
    span: Span = _span()


@frozen
class Plan:
    """A whole `.plan` file."""

    path: str
    title: Optional[Str]
    decls: Tuple[Decl, ...]
    steps: Tuple[Step, ...]
    steps_span: Optional[Span] = field(default=None, eq=False, repr=False)
    comments: Tuple[Comment, ...] = field(default=(), eq=False, repr=False)
    suppressions: Tuple[Suppression, ...] = field(default=(), eq=False, repr=False)


def walk_steps(steps):
    """Every step, depth first, parallel blocks and lanes included (the block before its members)."""
    for step in steps:
        yield step
        if isinstance(step, (Parallel, Sequence)):
            yield from walk_steps(step.steps)
