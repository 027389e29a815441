"""Bound plan -> compiled steps: per step its actions, artifacts, tools and fingerprint. Pure (no I/O)."""

from __future__ import annotations

import attrs

import hashlib
from typing import Dict, Iterator, List, Optional, Tuple

from attrs import define, field, frozen

from mdsl.check.rebuilds import Rebuild, implicit_after, plan_rebuilds
from mdsl.model import BoundPlan
from mdsl.check.cutover import Rollback, leaves, rollback_of
from mdsl.compile.undo import CompiledUndo, compile_undos
from mdsl.compile import files, services
from mdsl.compile.actions import (
    Action, Artifact, CopyArtifact, Destination, DnsCheck, Gate, HttpCheck, Location, Shell, Tunnel,
)
from mdsl.compile.context import RUN_TIMEOUT, CompileContext, option_value, step_timeout
from mdsl.compile.parts import CompileError, Lit
from mdsl.stores.registry import commands_of, logins_of, replication_of
from mdsl.syntax import ast as A
from mdsl.syntax.format import step_text as format_step


@frozen
class CompiledStep:
    """One step, ready to run: what it does, what it makes, what it needs."""

    id: str  # "3", "4.2" for the second member of parallel block 4, "4.2.3" for the third step of its lane 4.2
    path: Tuple[int, ...]  # 0-based position in the step tree
    label: Optional[str]
    kind: str  # the step keyword: "dump", "verify http", "parallel", ...
    summary: str  # the step as one line of plan text
    step: A.Step = field(repr=False)
    line: int = 0
    fingerprint: str = ""
    actions: Tuple[Action, ...] = ()
    destructive: bool = False
    # The point of no return: the first step that starts a service writing data that arrived
    # from elsewhere. From here on the new copy takes writes the old source never sees, so going
    # back to the source loses them: apply asks first.
    cutover: bool = False
    artifacts: Tuple[Artifact, ...] = ()  # files/dirs it produces (hashed into the journal)
    consumes: Tuple[Location, ...] = ()  # artifacts it moves away or deletes
    destinations: Tuple[Destination, ...] = ()  # places that receive data (preflight P404/P407)
    tools: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()  # (host, programs) for preflight P402
    hosts: Tuple[str, ...] = ()
    members: Tuple["CompiledStep", ...] = ()  # a parallel block's members, a lane's steps
    # A step apply adds to the plan's (a derived rebuild: mdsl.check.rebuilds): what it is, and why it runs
    # there and then; "" for the plan's own steps
    implicit: str = ""
    implicit_why: str = ""

    @property
    def is_parallel(self) -> bool:
        """True for a `parallel { }` block."""
        return self.kind == "parallel"

    @property
    def is_sequence(self) -> bool:
        """True for a lane, `sequence { }` inside a parallel block: its steps run in order."""
        return self.kind == "sequence"

    def leaves(self) -> Iterator["CompiledStep"]:
        """This step, or the steps of a parallel block (its lanes' steps in order)."""
        if self.is_parallel or self.is_sequence:
            for m in self.members:
                yield from m.leaves()
        else:
            yield self

    def lanes(self) -> List[List["CompiledStep"]]:
        """The steps of a parallel block that follow one another: per member one list, a lane's steps in
        order (those of a block inside the lane in source order), any other step alone."""
        if self.is_sequence:
            return [list(self.leaves())]
        if self.is_parallel:
            return [lane for m in self.members for lane in m.lanes()]
        return [[self]]

    def describe(self) -> List[str]:
        """The exact commands, secrets masked, one line each."""
        out = []
        for a in self.actions:
            out.extend(a.describe())
        return out

    @property
    def title(self) -> str:
        """`label: summary` or the summary (a step apply adds says so, and its id)."""
        if self.implicit:
            return f"{self.summary}    (step {self.id}, not in the plan's steps: {self.implicit})"
        return f"{self.label}: {self.summary}" if self.label else self.summary


@frozen
class CompiledPlan:
    """Every step compiled, in plan order; parallel blocks hold their members."""

    bound: BoundPlan = field(repr=False)
    steps: Tuple[CompiledStep, ...]
    # what a rollback undoes at each step (mdsl.check.cutover), and the commands it runs for each
    rollback: Optional[Rollback] = field(default=None, repr=False)
    undos: Dict[Tuple[int, ...], CompiledUndo] = field(factory=dict, repr=False)

    def leaves(self) -> Iterator[CompiledStep]:
        """Every runnable step in order (parallel members in place of their block)."""
        for s in self.steps:
            yield from s.leaves()

    def by_label(self, label: str) -> Optional[CompiledStep]:
        """The step (or member, or step of a lane) with that label."""
        todo = list(self.steps)
        while todo:
            s = todo.pop(0)
            if s.label == label:
                return s
            todo[:0] = s.members
        return None

    def tools_by_host(self) -> Dict[str, Tuple[str, ...]]:
        """host -> every program some step needs there (preflight P402)."""
        out: Dict[str, Dict[str, None]] = {}
        for s in self.leaves():
            for host, tools in s.tools:
                out.setdefault(host, {}).update(dict.fromkeys(tools))
        return {h: tuple(t) for h, t in out.items()}

    @property
    def secrets(self) -> Tuple[A.Secret, ...]:
        """Every secret some command needs (read at apply time)."""
        out = []
        for s in self.leaves():
            for a in s.actions:
                for c in a.commands():
                    out += c.secrets
        return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------- describing a step as text


def step_text(step: A.Step) -> str:
    """The step as one line of plan text (without its label); a block lists its members."""
    if isinstance(step, (A.Parallel, A.Sequence)):
        return f"{step.keyword} {{ " + "; ".join(step_text(s) for s in step.steps) + " }"
    return format_step(attrs.evolve(step, label=None))


# ---------------------------------------------------------------- compiling one step


def _loc(ctx: CompileContext, t: A.Target) -> Location:
    host, path = ctx.place(t)
    return Location(host, path)


def _is_secret_file(ctx: CompileContext, host: str, path: str) -> bool:
    place = ctx.bound.place(A.Location(A.Ident(host), A.Str(path)))
    r = ctx.bound.resources.get(place.resource) if place.resource else None
    return bool(r is not None and r.kind == "file" and getattr(r, "secret", False) and place.subpath is None)


@define
class _Leaf:
    """What compiling one non-parallel step yields, filled in by its kind's function below."""

    actions: List[Action] = attrs.Factory(list)
    artifacts: List[Artifact] = attrs.Factory(list)
    consumes: List[Location] = attrs.Factory(list)
    destinations: List[Destination] = attrs.Factory(list)
    destructive: bool = False


def _services(ctx: CompileContext, step, leaf: _Leaf) -> None:
    what = {A.Stop: services.stop, A.Start: services.start, A.Restart: services.restart}[type(step)]
    leaf.actions = [a for s in step.services for a in what(ctx, step, ctx.bound.resources[s.name])]
    names = {s.name for s in step.services}
    if isinstance(step, A.Stop):
        ctx.stopped |= names
    else:
        ctx.stopped -= names


def _dump(ctx: CompileContext, step: A.Dump, leaf: _Leaf) -> None:
    db, loc = ctx.bound.resources[step.db.name], _loc(ctx, step.to)
    leaf.actions, leaf.destinations = commands_of(db).dump(ctx, step, db, loc.host, loc.path)
    leaf.artifacts.append(Artifact(loc.host, loc.path))


def _restore(ctx: CompileContext, step: A.Restore, leaf: _Leaf) -> None:
    db, loc = ctx.bound.resources[step.db.name], _loc(ctx, step.source)
    leaf.actions, leaf.destinations = commands_of(db).restore(ctx, step, db, loc.host, loc.path)
    leaf.destructive = bool(option_value(step, "replace", False))
    # The app's logins the plan makes (`like`) arrive with the database: a dump carries no accounts.
    for login in ctx.bound.logins_on(db.name):
        if login.like is not None:
            like = ctx.bound.resources[login.like]
            before, after = logins_of(db).restore_actions(ctx, login, db, like, ctx.bound.resources[like.database])
            leaf.actions = [*before, *leaf.actions, *after]


def _login_actions(ctx: CompileContext, db) -> list:
    """The actions that make the app's logins on `db` the plan makes (`like`), after its data arrived."""
    out: list = []
    for login in ctx.bound.logins_on(db.name):
        if login.like is not None:
            like = ctx.bound.resources[login.like]
            before, after = logins_of(db).restore_actions(ctx, login, db, like, ctx.bound.resources[like.database])
            out += [*before, *after]
    return out


def _drop(ctx: CompileContext, step: A.Drop, leaf: _Leaf) -> None:
    db = ctx.bound.resources[step.db.name]
    leaf.actions, leaf.destructive = commands_of(db).drop(ctx, step, db), True


def _archive(ctx: CompileContext, step: A.Archive, leaf: _Leaf) -> None:
    loc = _loc(ctx, step.to)
    leaf.actions, leaf.destinations = files.archive(ctx, step, ctx.bound.resources[step.dir.name], loc.host, loc.path)
    leaf.artifacts.append(Artifact(loc.host, loc.path))


def _extract(ctx: CompileContext, step: A.Extract, leaf: _Leaf) -> None:
    loc = _loc(ctx, step.source)
    leaf.actions = files.extract(ctx, step, ctx.bound.resources[step.dir.name], loc.host, loc.path)
    leaf.destructive = bool(option_value(step, "replace", False))


def _sync(ctx: CompileContext, step: A.Sync, leaf: _Leaf) -> None:
    resources = ctx.bound.resources
    leaf.actions, leaf.destinations = files.sync(ctx, step, resources[step.source.name], resources[step.dest.name])


def _replicate(ctx: CompileContext, step: A.Replicate, leaf: _Leaf) -> None:
    src, dst = ctx.bound.resources[step.source.name], ctx.bound.resources[step.dest.name]
    replication = replication_of(src)
    leaf.actions = (replication.live if step.live else replication.final)(ctx, step, src, dst)
    if not step.live:  # the app's logins the plan makes arrive with the final pass, as with a restore
        leaf.actions += _login_actions(ctx, dst)


def _transfer(ctx: CompileContext, step: A.Transfer, leaf: _Leaf) -> None:
    src, dst = _loc(ctx, step.source), _loc(ctx, step.dest)
    leaf.actions, leaf.destinations, secret = files.transfer(ctx, step, src, dst)
    leaf.artifacts.append(Artifact(dst.host, dst.path, secret=secret))


def _move(ctx: CompileContext, step: A.Move, leaf: _Leaf) -> None:
    src, dst = _loc(ctx, step.source), _loc(ctx, step.dest)
    leaf.actions = files.move(ctx, step, src, dst)
    leaf.artifacts.append(Artifact(dst.host, dst.path, secret=_is_secret_file(ctx, src.host, src.path)))
    leaf.consumes.append(src)


def _delete(ctx: CompileContext, step: A.Delete, leaf: _Leaf) -> None:
    loc = _loc(ctx, step.target)
    leaf.actions, leaf.destructive = files.delete(ctx, step, loc), True
    leaf.consumes.append(loc)


def _run(ctx: CompileContext, step, leaf: _Leaf) -> None:
    run_as = option_value(step, "run_as") if isinstance(step, A.Run) else None
    what = "run" if isinstance(step, A.Run) else "verify"
    leaf.actions = [Shell(ctx.command(step.host.name, (Lit(step.command.value),), run_as=run_as), what,
                          step_timeout(step, RUN_TIMEOUT), show_output=isinstance(step, A.VerifyRun))]
    leaf.destructive = bool(isinstance(step, A.Run) and option_value(step, "deletes"))


def _verify_http(ctx: CompileContext, step: A.VerifyHttp, leaf: _Leaf) -> None:
    via = option_value(step, "via")
    address = None
    if via:
        h = ctx.bound.hosts[via]
        address = "127.0.0.1" if h.local else (h.http_address or h.address)
    leaf.actions = [HttpCheck(step.url.value, option_value(step, "status", 200), option_value(step, "contains"),
                              via, address, step_timeout(step, 30.0))]


def _verify_dns(ctx: CompileContext, step: A.VerifyDns, leaf: _Leaf) -> None:
    h = ctx.bound.hosts[step.host.name]
    expected = tuple(a for a in (h.http_address, h.address) if a)
    leaf.actions = [DnsCheck(step.name.value, h.name, tuple(dict.fromkeys(expected)), h.local)]


def _confirm(ctx: CompileContext, step: A.Confirm, leaf: _Leaf) -> None:
    leaf.actions = [Gate(step.message.value)]


_LEAVES = {
    A.Stop: _services, A.Start: _services, A.Restart: _services, A.Dump: _dump, A.Restore: _restore,
    A.Drop: _drop, A.Archive: _archive, A.Extract: _extract, A.Sync: _sync, A.Replicate: _replicate,
    A.Transfer: _transfer, A.Move: _move,
    A.Delete: _delete, A.Run: _run, A.VerifyRun: _run, A.VerifyHttp: _verify_http, A.VerifyDns: _verify_dns,
    A.Confirm: _confirm,
}


def _compile_leaf(ctx: CompileContext, step: A.Step) -> _Leaf:
    """The actions, artifacts, consumed and receiving places of one non-parallel step."""
    compile_kind = _LEAVES.get(type(step))
    if compile_kind is None:  # pragma: no cover - every kind is listed above
        raise CompileError(f"cannot compile a `{step.keyword}` step", step.span)
    leaf = _Leaf()
    compile_kind(ctx, step, leaf)
    return leaf


def fingerprint(step: A.Step, actions) -> str:
    """A stable hash of what the step means: its text (spans excluded) and its masked commands."""
    h = hashlib.sha256()
    h.update(step.keyword.encode())
    h.update(repr(step).encode())
    for a in actions:
        h.update(repr(type(a).__name__).encode())
        for line in a.describe():
            h.update(line.encode())
    return h.hexdigest()[:16]


def _tools(actions) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    out: Dict[str, Dict[str, None]] = {}
    for a in actions:
        for c in a.commands():
            out.setdefault(c.host, {}).update(dict.fromkeys(c.all_tools()))
        if isinstance(a, CopyArtifact):
            # The runner's own commands: cat/mv on both ends, sha256sum for the verification.
            out.setdefault(a.source.host, {}).update(dict.fromkeys(("cat", "sha256sum", "stat")))
            out.setdefault(a.dest.host, {}).update(dict.fromkeys(("cat", "sha256sum", "mv", "mkdir")))
    return tuple((h, tuple(t)) for h, t in out.items())


def _hosts(step: A.Step, actions) -> Tuple[str, ...]:
    hs: Dict[str, None] = {}
    for a in actions:
        for c in a.commands():
            hs[c.host] = None
        if isinstance(a, CopyArtifact):
            hs[a.source.host] = None
            hs[a.dest.host] = None
        if isinstance(a, Tunnel):
            hs[a.from_host] = None
            hs[a.to_host] = None
    return tuple(hs)


def _compile_step(ctx: CompileContext, step: A.Step, path: Tuple[int, ...]) -> CompiledStep:
    sid = ".".join(str(i + 1) for i in path)
    label = step.label.name if step.label else None
    if isinstance(step, (A.Parallel, A.Sequence)):
        members = tuple(_compile_step(ctx, s, path + (i,)) for i, s in enumerate(step.steps))
        h = hashlib.sha256("".join(m.fingerprint for m in members).encode()).hexdigest()[:16]
        return CompiledStep(
            id=sid, path=path, label=label, kind=step.keyword, summary=f"{step.keyword} ({len(members)} steps)",
            step=step, line=step.span.line, fingerprint=h, destructive=any(m.destructive for m in members),
            hosts=tuple(dict.fromkeys(x for m in members for x in m.hosts)), members=members)
    leaf = _compile_leaf(ctx, step)
    actions = leaf.actions
    return CompiledStep(
        id=sid, path=path, label=label, kind=step.keyword, summary=step_text(step), step=step,
        line=step.span.line, fingerprint=fingerprint(step, actions), actions=tuple(actions),
        destructive=leaf.destructive, artifacts=tuple(leaf.artifacts), consumes=tuple(leaf.consumes),
        destinations=tuple(leaf.destinations), tools=_tools(actions), hosts=_hosts(step, actions))


def _mark_cutover(steps: Tuple[CompiledStep, ...], cut) -> Tuple[CompiledStep, ...]:
    """Mark the steps at the point of no return (`cut`: their paths, from mdsl.check.cutover) and their blocks."""
    def mark(s: CompiledStep) -> CompiledStep:
        if not s.members:
            return attrs.evolve(s, cutover=s.path in cut) if s.path in cut else s
        members = tuple(mark(m) for m in s.members)
        return attrs.evolve(s, members=members, cutover=any(m.cutover for m in members))

    return tuple(mark(s) if s.path[0] in {p[0] for p in cut} else s for s in steps)


def _rebuild_step(ctx: CompileContext, top: CompiledStep, k: int, rb: Rebuild) -> CompiledStep:
    """The implicit `run HOST "CMD"` of a derived rebuild, numbered `N+k` after top-level step N."""
    d = rb.derived
    step = A.Run(host=A.Ident(rb.host), command=A.Str(d.rebuild), span=d.span)
    actions = (Shell(ctx.command(rb.host, (Lit(d.rebuild),)), "run", RUN_TIMEOUT),)
    why = (f"`derived \"{d.subpath}\"` of {rb.origin} (line {d.span.line}) was left behind by the "
           f"`{rb.left_by.keyword}` at line {rb.left_by.span.line}; rebuilt now that {rb.service} runs")
    return CompiledStep(
        id=f"{top.id}+{k}", path=(0,), label=None, kind="run", summary=step_text(step), step=step,
        line=d.span.line, fingerprint=fingerprint(step, actions), actions=actions, tools=_tools(actions),
        hosts=_hosts(step, actions), implicit=f"rebuilds {rb.origin}/{d.subpath}", implicit_why=why)


def _repath(s: CompiledStep, index: int) -> CompiledStep:
    """The step with its top-level position `index` (members too): apply indexes `steps` by `path[0]`."""
    if s.path[0] == index:
        return s
    return attrs.evolve(s, path=(index,) + s.path[1:], members=tuple(_repath(m, index) for m in s.members))


def _with_rebuilds(ctx: CompileContext, steps: Tuple[CompiledStep, ...]) -> Tuple[CompiledStep, ...]:
    """The plan's steps with each derived rebuild apply runs itself right after the top-level step holding
    the start it follows."""
    extra = dict(implicit_after(plan_rebuilds(ctx.bound)))
    if not extra:
        return steps
    out: List[CompiledStep] = []
    for i, top in enumerate(steps):
        out.append(top)
        out.extend(_rebuild_step(ctx, top, k, rb) for k, rb in enumerate(extra.get(i, ()), 1))
    return tuple(_repath(s, i) for i, s in enumerate(out))


def compile_plan(bound: BoundPlan) -> CompiledPlan:
    """Compile every step of a bound plan (one without errors); raises CompileError for an unsafe step."""
    ctx = CompileContext(bound)
    steps = tuple(_compile_step(ctx, s, (i,)) for i, s in enumerate(bound.steps))
    rollback = rollback_of(bound)
    at = dict(leaves(bound.steps))
    # implicit rebuilds follow a start, so they never come before the cutover: the rollback's paths
    # (the plan's own steps before it) are the compiled steps' paths too
    marked = _mark_cutover(steps, rollback.cutover)
    return CompiledPlan(bound, _with_rebuilds(ctx, marked), rollback,
                        compile_undos(ctx, rollback, at.__getitem__))
