"""The point of no return, and what a rollback before it must undo. Pure: read from the bound plan.

The point of no return (the cutover) is the first `start`/`restart` of a service that writes data which
arrived from elsewhere: from there on the new copy takes writes the old source never sees, so going back
loses them. Before it, nothing on the target is live yet, and the source can be brought back: a rollback
starts again what the plan stopped (in reverse order) and runs the `undo` of each `run` step that
declared one, and leaves the target as it is. A step that changes the source before the cutover and has
no undo (a `run` without `undo`, a `drop`/`delete`/`move` of source data) cannot be brought back: H310
when the plan runs with rollback (`mdsl check --rollback`).

Compile marks the cutover from here (`cutover_paths`), the runner's rollback (mdsl.run.rollback) does what
`Rollback.undo` says per step, and `mdsl plan` shows it.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

from attrs import frozen

from mdsl.check.index import names
from mdsl.model import BoundPlan
from mdsl.syntax import ast as A

Path = Tuple[int, ...]  # a step's position in the step tree, as compile's CompiledStep.path


def leaves(steps, prefix: Path = ()) -> Iterator[Tuple[Path, A.Step]]:
    """Every runnable step with its path, in plan order (a block's members in place of the block)."""
    for i, s in enumerate(steps):
        path = prefix + (i,)
        if isinstance(s, (A.Parallel, A.Sequence)):
            yield from leaves(s.steps, path)
        else:
            yield path, s


def _lanes(step: A.Step, path: Path) -> List[List[Tuple[Path, A.Step]]]:
    """The steps of a block that follow one another (compile's CompiledStep.lanes, on the AST)."""
    if isinstance(step, A.Sequence):
        return [list(leaves(step.steps, path))]
    if isinstance(step, A.Parallel):
        return [lane for i, m in enumerate(step.steps) for lane in _lanes(m, path + (i,))]
    return [[(path, step)]]


def arrivals(step: A.Step) -> Tuple[str, ...]:
    """Names of the declared data a step copies data into (restore, extract, sync, transfer to a file)."""
    if isinstance(step, (A.Restore, A.Extract)):
        return (step.db.name if isinstance(step, A.Restore) else step.dir.name,)
    if isinstance(step, (A.Sync, A.Replicate)):
        return (step.dest.name,)
    if isinstance(step, A.Transfer) and isinstance(step.dest, A.Ident):
        return (step.dest.name,)
    return ()


def cutover_paths(bound: BoundPlan) -> FrozenSet[Path]:
    """The steps that are the point of no return: in the first top-level step that has one, each start
    of a service writing data that arrived before it (in a lane, what the lane's earlier steps brought
    in has arrived too)."""
    arrived: Set[str] = set()

    def cuts(step: A.Step, seen: Set[str]) -> bool:
        return isinstance(step, (A.Start, A.Restart)) and any(
            seen.intersection(bound.resources[s.name].writes) for s in step.services)

    for i, top in enumerate(bound.steps):
        starts = []
        for lane in _lanes(top, (i,)):
            seen = set(arrived)
            for path, leaf in lane:
                if cuts(leaf, seen):
                    starts.append(path)
                seen.update(arrivals(leaf))
        if starts:
            return frozenset(starts)
        for _, leaf in leaves((top,), (i,)):
            arrived.update(arrivals(leaf))
    return frozenset()


@frozen
class Undo:
    """What a rollback does for one step: start services again, or run the step's declared `undo`."""

    path: Path
    services: Tuple[str, ...] = ()  # started again, in this order
    host: Optional[str] = None  # of the `undo` command
    command: Optional[str] = None
    run_as: Optional[str] = None

    def text(self) -> str:
        """`start old_app` or `run old "occ maintenance:mode --off"`, as plan text."""
        if self.services:
            return "start " + ", ".join(self.services)
        return f'run {self.host} "{self.command}"'


@frozen
class SourceChange:
    """A step before the cutover that changes the source and that a rollback cannot undo (H310)."""

    path: Path
    step: A.Step
    what: str  # what it changes, for the message


@frozen
class Rollback:
    """Per step, what a rollback undoes; the cutover; the source changes nothing undoes."""

    cutover: FrozenSet[Path]
    cutover_top: Optional[int]  # the top-level step holding the cutover (None: the plan has none)
    undo: Dict[Path, Undo]  # every `stop` of running services (after the cutover too), every `run` with `undo`
    started: Dict[Path, Tuple[str, ...]]  # before the cutover, the steps that start services (again)
    irreversible: Tuple[SourceChange, ...]
    order: Tuple[Path, ...]  # every leaf, in plan order

    def before_cutover(self, path: Path) -> bool:
        """True for a step a rollback can still follow: in a top-level step before the cutover's."""
        return _before(self.cutover_top, path)

    def at(self, path: Path) -> List[Undo]:
        """What a rollback does when the step at `path` fails (it, and every step before it, having run):
        the undos in reverse order. Empty after the point of no return (`before_cutover` says which)."""
        if not self.before_cutover(path):
            return []
        out: List[Undo] = []
        again: Set[str] = set()  # started again by a later step: running already
        for p in reversed(self.order[: self.order.index(path) + 1]):
            again.update(self.started.get(p, ()))
            u = self.undo.get(p)
            if u is None:
                continue
            if u.services:
                left = tuple(x for x in u.services if x not in again)
                if left:
                    out.append(Undo(u.path, services=left))
            else:
                out.append(u)
        return out


    def every_step(self) -> Dict[Path, List[Undo]]:
        """`at(path)` for every step before the cutover, in one pass (what `mdsl plan` shows)."""
        out: Dict[Path, List[Undo]] = {}
        stack: List[Undo] = []
        for p in self.order:
            if not self.before_cutover(p):
                break
            again = set(self.started.get(p, ()))
            if again:
                stack = [u if not u.services else Undo(u.path, services=tuple(x for x in u.services
                                                                                if x not in again))
                         for u in stack]
                stack = [u for u in stack if u.services or u.command is not None]
            if p in self.undo:
                stack.append(self.undo[p])
            out[p] = list(reversed(stack))
        return out


def _source_side(bound: BoundPlan, stopped: Set[str]) -> Tuple[Set[str], Set[str]]:
    """(source data, source hosts): what the copies read, what the stopped services write, their hosts."""
    data: Set[str] = set()
    for _, s in leaves(bound.steps):
        if isinstance(s, (A.Dump, A.Archive)):
            data.add((s.db if isinstance(s, A.Dump) else s.dir).name)
        elif isinstance(s, A.Sync):
            data.add(s.source.name)
        elif isinstance(s, A.Transfer):
            place = bound.place(s.source)
            if place.resource is not None:
                data.add(place.resource)
    for name in stopped:
        data.update(bound.resources[name].writes)
    hosts = {bound.resources[n].host for n in data if n in bound.resources}
    hosts |= {bound.resources[n].host for n in stopped}
    return data, hosts


def _changes_source(bound: BoundPlan, s: A.Step, data: Set[str], hosts: Set[str]) -> Optional[str]:
    """What the step changes on the source that no rollback brings back, or None."""
    if isinstance(s, A.Run):
        if s.host.name not in hosts or s.undo is not None:
            return None
        declared = names(s, "writes") + names(s, "deletes")
        if not declared:
            return None if names(s, "reads") else f'runs a command on source host `{s.host.name}`'
        touched = [n for n in declared if n in data]
        return f"changes {', '.join(touched)}" if touched else None
    if isinstance(s, A.Drop) and s.db.name in data:
        return f"drops {s.db.name}"
    if isinstance(s, (A.Delete, A.Move)):
        place = bound.place(s.target if isinstance(s, A.Delete) else s.source)
        if place.resource in data:
            return f"{s.keyword}s {place.resource}" + (f"/{place.subpath}" if place.subpath else "")
    if isinstance(s, (A.Restore, A.Extract)):
        name = s.db.name if isinstance(s, A.Restore) else s.dir.name
        if name in data:
            return f"overwrites {name}"
    return None


def _before(cutover_top: Optional[int], path: Path) -> bool:
    """True for a step in a top-level step before the cutover's (or in a plan without one)."""
    return cutover_top is None or path[0] < cutover_top


def rollback_of(bound: BoundPlan) -> Rollback:
    """What a rollback undoes at each step of a plan whose names resolve (`bound.ok`)."""
    cut = cutover_paths(bound)
    cutover_top = min((p[0] for p in cut), default=None)
    order = tuple(p for p, _ in leaves(bound.steps))
    running = {n for n, r in bound.resources.items() if r.kind == "service" and r.initially_running}
    undo: Dict[Path, Undo] = {}
    started: Dict[Path, Tuple[str, ...]] = {}
    stopped: Set[str] = set()
    for path, s in leaves(bound.steps):  # the whole plan: a failure after the cutover says how to start them too
        if isinstance(s, A.Stop):
            was = tuple(x.name for x in s.services if x.name in running)
            if was:
                undo[path] = Undo(path, services=was)
            running -= set(was)
            if _before(cutover_top, path):
                stopped |= set(was)
        elif isinstance(s, (A.Start, A.Restart)):
            started[path] = tuple(x.name for x in s.services)
            running |= set(started[path])
        elif isinstance(s, A.Run) and s.undo is not None:
            run_as = s.option("run_as")
            undo[path] = Undo(path, host=s.host.name, command=s.undo.value,
                              run_as=run_as.value.value if run_as is not None and isinstance(run_as.value, A.Str)
                              else None)
    data, hosts = _source_side(bound, stopped)
    changes = []
    for path, s in leaves(bound.steps):
        if cutover_top is not None and path[0] >= cutover_top:
            break
        what = _changes_source(bound, s, data, hosts)
        if what:
            changes.append(SourceChange(path, s, what))
    return Rollback(cut, cutover_top, undo, started, tuple(changes), order)
