"""Bound plan -> compiled steps: per step its actions, artifacts, tools and fingerprint. Pure (no I/O)."""

from __future__ import annotations

import attrs

import hashlib
import json
from typing import Dict, Iterator, List, Optional, Tuple

from attrs import field, frozen

from mdsl.check.resolve import BoundPlan
from mdsl.compile import files, postgres, services, sqlite
from mdsl.compile.actions import (
    Action, Artifact, CopyArtifact, Destination, DnsCheck, Gate, HttpCheck, Location, Shell,
)
from mdsl.compile.context import RUN_TIMEOUT, CompileContext, option_value, step_timeout
from mdsl.compile.parts import CompileError, Lit
from mdsl.syntax import ast as A


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
        """`label: summary` or the summary."""
        return f"{self.label}: {self.summary}" if self.label else self.summary


@frozen
class CompiledPlan:
    """Every step compiled, in plan order; parallel blocks hold their members."""

    bound: BoundPlan = field(repr=False)
    steps: Tuple[CompiledStep, ...]

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


def _target_text(t: A.Target) -> str:
    if isinstance(t, A.Ident):
        return t.name
    return f'{t.host.name}:{json.dumps(t.path.value)}'


def _value_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, A.Str):
        return json.dumps(v.value)
    if isinstance(v, A.ListValue):
        return "[" + ", ".join(_value_text(i) for i in v.items) + "]"
    if isinstance(v, A.Secret):
        return v.masked()
    if isinstance(v, A.Bool):
        return "true" if v.value else "false"
    return str(getattr(v, "value", getattr(v, "name", v)))


def _options_text(step: A.Step) -> str:
    out = []
    for o in step.options:
        if o.key.name == "exclude" and isinstance(o.value, A.ListValue):
            out.append("exclude " + ", ".join(json.dumps(i.value) for i in o.value.items))
        elif o.value is None:
            out.append(o.key.name)
        else:
            out.append(f"{o.key.name} = {_value_text(o.value)}")
    return (" " + " ".join(out)) if out else ""


def step_text(step: A.Step) -> str:
    """The step as one line of plan text (without its label)."""
    k = step.keyword
    if isinstance(step, (A.Stop, A.Start, A.Restart)):
        body = ", ".join(s.name for s in step.services)
    elif isinstance(step, (A.Dump, A.Archive)):
        body = f"{(step.db if isinstance(step, A.Dump) else step.dir).name} to {_target_text(step.to)}"
    elif isinstance(step, (A.Restore, A.Extract)):
        body = f"{_target_text(step.source)} into {(step.db if isinstance(step, A.Restore) else step.dir).name}"
    elif isinstance(step, A.Sync):
        body = f"{step.source.name} to {step.dest.name}"
    elif isinstance(step, (A.Transfer, A.Move)):
        body = f"{_target_text(step.source)} to {_target_text(step.dest)}"
    elif isinstance(step, A.Delete):
        body = _target_text(step.target)
    elif isinstance(step, A.Drop):
        body = step.db.name
    elif isinstance(step, (A.Run, A.VerifyRun)):
        body = f"{step.host.name} {json.dumps(step.command.value)}"
    elif isinstance(step, A.VerifyHttp):
        body = json.dumps(step.url.value)
    elif isinstance(step, A.VerifyDns):
        body = f"{json.dumps(step.name.value)} is {step.host.name}"
    elif isinstance(step, A.Confirm):
        body = json.dumps(step.message.value)
    elif isinstance(step, (A.Parallel, A.Sequence)):
        return f"{k} {{ " + "; ".join(step_text(s) for s in step.steps) + " }"
    else:  # pragma: no cover - every kind is listed above
        body = "?"
    return f"{k} {body}{_options_text(step)}"


# ---------------------------------------------------------------- compiling one step


def _loc(ctx: CompileContext, t: A.Target) -> Location:
    host, path = ctx.place(t)
    return Location(host, path)


def _is_secret_file(ctx: CompileContext, host: str, path: str) -> bool:
    place = ctx.bound.place(A.Location(A.Ident(host), A.Str(path)))
    r = ctx.bound.resources.get(place.resource) if place.resource else None
    return bool(r is not None and r.kind == "file" and getattr(r, "secret", False) and place.subpath is None)


def _compile_leaf(ctx: CompileContext, step: A.Step):
    """(actions, artifacts, consumes, destinations, destructive) for one non-parallel step."""
    b = ctx.bound
    arts: List[Artifact] = []
    consumes: List[Location] = []
    dests: List[Destination] = []
    destructive = False
    if isinstance(step, A.Stop):
        actions = [a for s in step.services for a in services.stop(ctx, step, b.resources[s.name])]
    elif isinstance(step, A.Start):
        actions = [a for s in step.services for a in services.start(ctx, step, b.resources[s.name])]
    elif isinstance(step, A.Restart):
        actions = [a for s in step.services for a in services.restart(ctx, step, b.resources[s.name])]
    elif isinstance(step, A.Dump):
        db = b.resources[step.db.name]
        loc = _loc(ctx, step.to)
        engine = postgres if db.kind == "postgres" else sqlite
        actions, dests = engine.dump(ctx, step, db, loc.host, loc.path)
        arts.append(Artifact(loc.host, loc.path))
    elif isinstance(step, A.Restore):
        db = b.resources[step.db.name]
        loc = _loc(ctx, step.source)
        if db.kind == "postgres":  # a parallel restore of a zstd dump writes a temporary copy (RestorePart)
            actions, dests = postgres.restore(ctx, step, db, loc.host, loc.path)
        else:
            actions = sqlite.restore(ctx, step, db, loc.host, loc.path)
        destructive = bool(option_value(step, "replace", False))
    elif isinstance(step, A.Archive):
        d = b.resources[step.dir.name]
        loc = _loc(ctx, step.to)
        actions, dests = files.archive(ctx, step, d, loc.host, loc.path)
        arts.append(Artifact(loc.host, loc.path))
    elif isinstance(step, A.Extract):
        d = b.resources[step.dir.name]
        loc = _loc(ctx, step.source)
        actions = files.extract(ctx, step, d, loc.host, loc.path)
        destructive = bool(option_value(step, "replace", False))
    elif isinstance(step, A.Sync):
        actions, dests = files.sync(ctx, step, b.resources[step.source.name], b.resources[step.dest.name])
    elif isinstance(step, A.Transfer):
        src, dst = _loc(ctx, step.source), _loc(ctx, step.dest)
        actions, dests, secret = files.transfer(ctx, step, src, dst)
        arts.append(Artifact(dst.host, dst.path, secret=secret))
    elif isinstance(step, A.Move):
        src, dst = _loc(ctx, step.source), _loc(ctx, step.dest)
        actions = files.move(ctx, step, src, dst)
        arts.append(Artifact(dst.host, dst.path, secret=_is_secret_file(ctx, src.host, src.path)))
        consumes.append(src)
    elif isinstance(step, A.Delete):
        loc = _loc(ctx, step.target)
        actions = files.delete(ctx, step, loc)
        consumes.append(loc)
        destructive = True
    elif isinstance(step, A.Drop):
        actions = postgres.drop(ctx, step, b.resources[step.db.name])
        destructive = True
    elif isinstance(step, (A.Run, A.VerifyRun)):
        run_as = option_value(step, "run_as") if isinstance(step, A.Run) else None
        what = "run" if isinstance(step, A.Run) else "verify"
        actions = [Shell(ctx.command(step.host.name, (Lit(step.command.value),), run_as=run_as), what,
                         step_timeout(step, RUN_TIMEOUT), show_output=isinstance(step, A.VerifyRun))]
        destructive = bool(isinstance(step, A.Run) and option_value(step, "deletes"))
    elif isinstance(step, A.VerifyHttp):
        via = option_value(step, "via")
        address = None
        if via:
            h = b.hosts[via]
            address = "127.0.0.1" if h.local else (h.http_address or h.address)
        actions = [HttpCheck(step.url.value, option_value(step, "status", 200), option_value(step, "contains"),
                             via, address, step_timeout(step, 30.0))]
    elif isinstance(step, A.VerifyDns):
        h = b.hosts[step.host.name]
        expected = tuple(a for a in (h.http_address, h.address) if a)
        actions = [DnsCheck(step.name.value, h.name, tuple(dict.fromkeys(expected)), h.local)]
    elif isinstance(step, A.Confirm):
        actions = [Gate(step.message.value)]
    else:  # pragma: no cover
        raise CompileError(f"cannot compile a `{step.keyword}` step", step.span)
    return actions, arts, consumes, dests, destructive


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
    actions, arts, consumes, dests, destructive = _compile_leaf(ctx, step)
    return CompiledStep(
        id=sid, path=path, label=label, kind=step.keyword, summary=step_text(step), step=step,
        line=step.span.line, fingerprint=fingerprint(step, actions), actions=tuple(actions), destructive=destructive,
        artifacts=tuple(arts), consumes=tuple(consumes), destinations=tuple(dests), tools=_tools(actions),
        hosts=_hosts(step, actions))


def _arrivals(step: A.Step) -> Tuple[str, ...]:
    """Names of the declared data a step copies data into (restore, extract, sync, transfer to a file)."""
    if isinstance(step, (A.Restore, A.Extract)):
        return (step.db.name if isinstance(step, A.Restore) else step.dir.name,)
    if isinstance(step, A.Sync):
        return (step.dest.name,)
    if isinstance(step, A.Transfer) and isinstance(step.dest, A.Ident):
        return (step.dest.name,)
    return ()


def _mark_cutover(bound: BoundPlan, steps: Tuple[CompiledStep, ...]) -> Tuple[CompiledStep, ...]:
    arrived = set()
    out = list(steps)

    def cuts(leaf: CompiledStep, seen) -> bool:
        return isinstance(leaf.step, (A.Start, A.Restart)) and any(
            seen.intersection(bound.resources[s.name].writes) for s in leaf.step.services)

    def mark(s: CompiledStep, starts) -> CompiledStep:
        if not s.members:
            return attrs.evolve(s, cutover=s in starts)
        members = tuple(mark(m, starts) for m in s.members)
        return attrs.evolve(s, members=members, cutover=any(m.cutover for m in members))

    for i, top in enumerate(out):
        starts = []
        for lane in top.lanes():  # in a lane, what its earlier steps brought in has arrived too
            seen = set(arrived)
            for m in lane:
                if cuts(m, seen):
                    starts.append(m)
                seen.update(_arrivals(m.step))
        if starts:
            out[i] = mark(top, starts)
            break
        for m in top.leaves():
            arrived.update(_arrivals(m.step))
    return tuple(out)


def compile_plan(bound: BoundPlan) -> CompiledPlan:
    """Compile every step of a bound plan (one without errors); raises CompileError for an unsafe step."""
    ctx = CompileContext(bound)
    steps = tuple(_compile_step(ctx, s, (i,)) for i, s in enumerate(bound.steps))
    return CompiledPlan(bound, _mark_cutover(bound, steps))
