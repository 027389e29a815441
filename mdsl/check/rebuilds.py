"""Which `derived "SUB" rebuild "CMD"` rebuilds run, where and when: the one home of that answer,
read by the checker (H102: a rebuild that can never run) and by compile (the implicit steps apply
runs). Pure: a pass over the bound plan's steps, no walk state.

A derived subpath is left behind when a copy of its dir into another dir (an `archive` extracted
there, or a `sync`) excludes it, or a `delete`/`move` took it away before the copy. Its rebuild
then runs on the host where the rest of the data went, after the first `start`/`restart` of a
service writing that target which follows the copy: as an implicit step after that top-level
step, unless the plan's own `run` on that host runs the command (word for word inside its
command line) after the copy."""

from __future__ import annotations

import bisect
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

from attrs import frozen

from mdsl.model import BoundPlan, Derived, normpath
from mdsl.syntax import ast as A


@frozen
class Rebuild:
    """One derived subpath left behind by a copy into `target`, and how it is rebuilt there."""

    origin: str  # the dir declaring `derived`
    derived: Derived
    target: str  # the dir the rest of the data went to
    host: str  # the target's host: where the command runs
    left_by: A.Step  # the copy (`archive` or `sync`) that excluded the subpath
    service: Optional[str]  # the service writing the target whose start it follows
    after: Optional[int]  # index of the top-level step it follows (None: no such start)
    start: Optional[A.Step]  # the `start`/`restart` step it follows
    by_plan: Optional[A.Run]  # the plan's own `run` of the command, when there is one

    @property
    def command(self) -> str:
        """The rebuild command, as declared."""
        return self.derived.rebuild

    @property
    def implicit(self) -> bool:
        """True when apply runs it itself (after `after`): the plan does not, and it can run."""
        return self.by_plan is None and self.after is not None

    @property
    def runs(self) -> bool:
        """True when the command runs at all (by the plan, or implicitly)."""
        return self.by_plan is not None or self.after is not None


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _excludes(step: A.Step) -> Tuple[str, ...]:
    opt = step.option("exclude")
    if opt is None or not isinstance(opt.value, A.ListValue):
        return ()
    return tuple(normpath(x.value) for x in opt.value.items)


def _positions(steps) -> List[Tuple[int, int, A.Step]]:
    """(top-level index, position, leaf) in order: members of a parallel block share a position
    (their order is unknown), the steps of a lane follow one another (as the walk numbers them)."""
    out: List[Tuple[int, int, A.Step]] = []
    tick = 0

    def member(top: int, step: A.Step, pos: int) -> None:
        nonlocal tick
        if isinstance(step, A.Parallel):
            for m in step.steps:
                member(top, m, pos)
        elif isinstance(step, A.Sequence):
            for m in step.steps:
                tick += 1
                member(top, m, tick)
        else:
            out.append((top, pos, step))

    for i, top in enumerate(steps):
        tick += 1
        member(i, top, tick)
    return out


def _words_in(command: str, words: Tuple[str, ...]) -> bool:
    have = command.split()
    n = len(words)
    return n > 0 and any(tuple(have[i:i + n]) == words for i in range(len(have) - n + 1))


class _Scan:
    """One pass over the steps: the copies between dirs (with what each leaves out), the starts, the runs."""

    def __init__(self, bound: BoundPlan):
        self.bound = bound
        self._places: Dict[object, Tuple[str, str]] = {}
        # (host, path) of an archive -> (dir, what it leaves out, the archive step)
        self.archives: Dict[Tuple[str, str], Tuple[str, FrozenSet[str], A.Step]] = {}
        # (origin, target) -> per copy: (position, what it leaves out, the step that left it out)
        self.copies: Dict[Tuple[str, str], List[Tuple[int, FrozenSet[str], A.Step]]] = {}
        self.gone: Dict[str, FrozenSet[str]] = {}  # dir -> subpaths a `delete` or `move` took away
        self.starts: List[Tuple[int, int, A.Step]] = []
        self.runs: List[Tuple[int, str, A.Run]] = []
        for top, pos, s in _positions(bound.steps):
            self.step(top, pos, s)

    def place(self, t: A.Target) -> Tuple[str, str]:
        key = t.name if isinstance(t, A.Ident) else (t.host.name, t.path.value)
        got = self._places.get(key)
        if got is None:
            p = self.bound.place(t)
            got = self._places[key] = (p.host, p.path)
        return got

    def left_out(self, step: A.Step, dir_name: str) -> FrozenSet[str]:
        return frozenset(_excludes(step)) | self.gone.get(dir_name, frozenset())

    def step(self, top: int, pos: int, s: A.Step) -> None:
        if isinstance(s, (A.Delete, A.Move)):
            p = self.bound.place(s.target if isinstance(s, A.Delete) else s.source)
            if p.resource is not None and p.subpath:
                self.gone[p.resource] = self.gone.get(p.resource, frozenset()) | {normpath(p.subpath)}
        if isinstance(s, A.Archive):
            self.archives[self.place(s.to)] = (s.dir.name, self.left_out(s, s.dir.name), s)
        elif isinstance(s, (A.Transfer, A.Move)):
            got = self.archives.get(self.place(s.source))
            if got is not None:
                self.archives[self.place(s.dest)] = got
                if isinstance(s, A.Move):
                    self.archives.pop(self.place(s.source), None)
        elif isinstance(s, A.Extract):
            got = self.archives.get(self.place(s.source))
            if got is not None and got[0] != s.dir.name:
                self.copies.setdefault((got[0], s.dir.name), []).append((pos, got[1], got[2]))
        elif isinstance(s, A.Sync):
            self.copies.setdefault((s.source.name, s.dest.name), []).append(
                (pos, self.left_out(s, s.source.name), s))
        elif isinstance(s, (A.Start, A.Restart)):
            self.starts.append((top, pos, s))
        elif isinstance(s, A.Run):
            self.runs.append((pos, s.host.name, s))


def plan_rebuilds(bound: BoundPlan) -> "Rebuilds":
    """Every derived subpath some copy leaves behind, with where and after which step it is rebuilt."""
    scan = _Scan(bound)
    writers: Dict[str, List[str]] = {}
    for r in bound.resources.values():
        if r.kind == "service":
            for name in r.writes:
                writers.setdefault(name, []).append(r.name)
    starts: Dict[str, Tuple[List[int], List[Tuple[int, A.Step]]]] = {}  # service -> its starts, in order
    for top, pos, s in scan.starts:
        for svc in dict.fromkeys(x.name for x in s.services):
            ps, ss = starts.setdefault(svc, ([], []))
            ps.append(pos)
            ss.append((top, s))
    runs: Dict[Tuple[str, str], List[Tuple[int, A.Run]]] = {}  # (host, a word of its command) -> runs
    for pos, host, run in scan.runs:
        for word in set(run.command.value.split()):
            runs.setdefault((host, word), []).append((pos, run))
    out: List[Rebuild] = []
    for (origin, target), made in scan.copies.items():
        for d in getattr(bound.resources[origin], "derived", ()):
            leaving = [c for c in made if any(_overlaps(x, d.subpath) for x in c[1])]
            if not leaving or len(leaving) < len(made):
                continue  # never left out, or some copy brings it
            pos, _, step = leaving[-1]
            host = bound.resources[target].host
            after, start, service = _first_start(starts, writers.get(target, ()), pos)
            words = tuple(d.rebuild.split())
            by_plan = next((r for rpos, r in runs.get((host, words[0]) if words else ("", ""), ())
                            if rpos > pos and _words_in(r.command.value, words)), None)
            out.append(Rebuild(origin, d, target, host, step, service, after, start, by_plan))
    out.sort(key=lambda r: (r.after if r.after is not None else len(bound.steps), r.origin, r.derived.subpath))
    return Rebuilds(out)


def _first_start(starts, services, pos: int):
    """(top-level index, step, service) of the first start of one of `services` after position `pos`."""
    best = (None, None, None)
    best_pos = None
    for svc in services:
        got = starts.get(svc)
        if got is None:
            continue
        ps, ss = got
        i = bisect.bisect_right(ps, pos)
        if i < len(ps) and (best_pos is None or ps[i] < best_pos):
            best_pos, best = ps[i], (ss[i][0], ss[i][1], svc)
    return best


class Rebuilds(tuple):
    """The plan's rebuilds, in order, looked up by (origin, target) in constant time."""

    by_pair: Dict[Tuple[str, str], List[Rebuild]]

    def __new__(cls, items):
        self = super().__new__(cls, items)
        self.by_pair = {}
        for r in items:
            self.by_pair.setdefault((r.origin, r.target), []).append(r)
        return self


def find(rebuilds: Rebuilds, origin: str, subpath: Optional[str], target: str) -> Optional[Rebuild]:
    """The rebuild of the derived subpath of `origin` holding `subpath`, left behind for `target`."""
    if subpath is None:
        return None
    for r in rebuilds.by_pair.get((origin, target), ()):
        if subpath == r.derived.subpath or subpath.startswith(r.derived.subpath + "/"):
            return r
    return None


def implicit_after(rebuilds) -> Iterator[Tuple[int, List[Rebuild]]]:
    """Top-level index -> the rebuilds apply runs itself right after it, in plan order."""
    by: Dict[int, List[Rebuild]] = {}
    for r in rebuilds:
        if r.implicit:
            if any(x.derived.rebuild == r.command and x.host == r.host for x in by.get(r.after, ())):
                continue  # the same command on the same host once is enough
            by.setdefault(r.after, []).append(r)
    yield from sorted(by.items())
