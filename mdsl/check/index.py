"""What the walk knows about the whole plan before its first step, from one pass
over the steps: each step's position, which later steps bring data into each
resource, how every dir is split into pieces, and what lies under each path.
With it, the walk costs a small constant per step."""

from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, Optional, Set, Tuple

from mdsl.check.state import Piece, PlaceKey, covers
from mdsl.docker import runs_along
from mdsl.model import BoundPlan, Resource, normpath
from mdsl.syntax import ast as A


class Ref:
    """A step's location, resolved once: a resource, a subpath inside a dir, or an artifact path."""

    __slots__ = ("host", "path", "resource", "sub", "key")

    def __init__(self, host: str, path: str, resource: Optional[Resource], sub: Optional[str]):
        self.host, self.path, self.resource, self.sub = host, path, resource, sub
        # the coarse key used to find conflicts in a parallel block
        self.key: PlaceKey = resource.name if resource is not None else (host, path)


def excludes(step: A.Step) -> Tuple[str, ...]:
    """The subpaths an `archive` or `sync` leaves out (`exclude "a", "b"`), normalised."""
    opt = step.option("exclude")
    if opt is None or not isinstance(opt.value, A.ListValue):
        return ()
    return tuple(normpath(x.value) for x in opt.value.items)


def names(step: A.Step, key: str) -> List[str]:
    """The declared names an option lists (`deletes = [a, b]` of a `run`)."""
    opt = step.option(key)
    if opt is None or opt.value is None:
        return []
    items = opt.value.items if isinstance(opt.value, A.ListValue) else (opt.value,)
    return [i.name for i in items if isinstance(i, A.Ref)]


def _ancestors(path: str) -> Iterable[str]:
    while True:
        path = path.rpartition("/")[0]
        if not path:
            yield "/"
            return
        yield path


class _Subpaths:
    """Union-find over resources and artifacts that data flows between: dirs that exchange
    data must be split at the same subpaths, or a piece could not be followed across."""

    def __init__(self):
        self.parent: Dict[object, object] = {}

    def find(self, x):
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression keeps later finds O(1)
            nxt = parent.get(x, x)
            parent[x] = root
            x = nxt
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


class PlanIndex:
    """The whole-plan facts the walk looks up at each step (built once, read only afterwards)."""

    def __init__(self, bound: BoundPlan):
        self.bound = bound
        self._refs: Dict[object, Ref] = {}
        self.positions: Dict[int, int] = {}  # id(step) -> position
        # resource -> (positions, steps) of the steps that bring data into it, in order
        self.arrivals: Dict[str, Tuple[List[int], List[A.Step]]] = {}
        # data resource -> services that declare `writes` on it
        self.writers: Dict[str, List[str]] = {}
        for r in bound.resources.values():
            if r.kind == "service":
                for d in r.writes:
                    self.writers.setdefault(d, []).append(r.name)
        # service -> the other services a stop or start of it acts on too (one Compose project's declarations)
        services = [r for r in bound.resources.values() if r.kind == "service"]
        self.along: Dict[str, Tuple[str, ...]] = {s.name: runs_along(s, services) for s in services if s.compose}
        self._named: Dict[str, Set[str]] = {}  # dir -> subpaths the plan names for it
        self._locations: Set[Tuple[str, str]] = set()  # artifact paths and paths inside dirs
        self._links = _Subpaths()
        self._lanes = False
        for r in bound.resources.values():
            if r.is_dir:
                for d in r.derived:
                    self._named.setdefault(r.name, set()).add(d.subpath)
        self._number(bound.steps)
        for step in A.walk_steps(bound.steps):
            scan = _SCANS.get(type(step))
            if scan is not None:
                scan(self, step, self.positions[id(step)])
        if self._lanes:  # a member after a lane in its block comes earlier: keep the lists sorted for bisect
            for name, (ps, ss) in self.arrivals.items():
                order = sorted(range(len(ps)), key=ps.__getitem__)
                self.arrivals[name] = ([ps[i] for i in order], [ss[i] for i in order])
        self.pieces: Dict[str, Tuple[Piece, ...]] = self._split_dirs()
        # What lies under each path, so `delete` of a parent path destroys what is inside.
        self.nested: Dict[Tuple[str, str], List[PlaceKey]] = self._nest()

    def ref(self, t: A.Target) -> Ref:
        """The resolved location of a step's target (memoized: plans repeat locations)."""
        k = t.name if isinstance(t, A.Ident) else (t.host.name, t.path.value)
        r = self._refs.get(k)
        if r is None:
            p = self.bound.place(t)
            res = self.bound.resources[p.resource] if p.resource else None
            r = self._refs[k] = Ref(p.host, p.path, res, normpath(p.subpath) if p.subpath else None)
        return r

    def next_arrival(self, name: str, pos: int) -> Optional[A.Step]:
        """The first step after position `pos` that brings data into resource `name`."""
        got = self.arrivals.get(name)
        if not got:
            return None
        ps, ss = got
        i = bisect.bisect_right(ps, pos)
        return ss[i] if i < len(ps) else None

    # ---------------------------------------------------------------- positions

    def _number(self, steps) -> None:
        """A step's position orders it: a top-level step and the members of a parallel block share
        one; each step of a lane (`sequence`) gets its own, in order, after the block's and before
        the next top-level step's (a block inside a lane: its own lanes' steps come in between)."""
        tick = 0
        for top in steps:
            tick += 1
            if type(top) is A.Parallel:
                tick = self._number_member(top, tick, tick)
            else:
                self.positions[id(top)] = tick

    def _number_member(self, step, pos: int, tick: int) -> int:
        self.positions[id(step)] = pos
        if type(step) is A.Parallel:
            for m in step.steps:
                tick = self._number_member(m, pos, tick)
        elif type(step) is A.Sequence:
            self._lanes = True
            for m in step.steps:
                tick += 1
                tick = self._number_member(m, tick, tick)
        return tick

    # ---------------------------------------------------------------- what each step names

    def _loc(self, t: A.Target) -> Ref:
        """Resolve a target; note the subpath it names and the artifact path it may be."""
        ref = self.ref(t)
        if ref.sub is not None:
            self._named.setdefault(ref.resource.name, set()).add(ref.sub)
        if ref.resource is None or ref.sub is not None:
            self._locations.add((ref.host, ref.path))
        return ref

    def _node(self, t: A.Target) -> object:
        ref = self._loc(t)
        return ref.resource.name if ref.resource is not None else (ref.host, ref.path)

    def _arrive(self, name: str, pos: int, step: A.Step) -> None:
        ps, ss = self.arrivals.setdefault(name, ([], []))
        ps.append(pos)
        ss.append(step)

    def _name_excluded(self, dir_name: str, step: A.Step) -> None:
        for sub in excludes(step):
            self._named.setdefault(dir_name, set()).add(sub)

    def _scan_dump(self, s: A.Dump, pos: int) -> None:
        self._loc(s.to)

    def _scan_archive(self, s: A.Archive, pos: int) -> None:
        self._links.union(s.dir.name, self._node(s.to))
        self._name_excluded(s.dir.name, s)

    def _scan_restore(self, s: A.Restore, pos: int) -> None:
        self._loc(s.source)
        self._arrive(s.db.name, pos, s)

    def _scan_extract(self, s: A.Extract, pos: int) -> None:
        self._links.union(self._node(s.source), s.dir.name)
        self._arrive(s.dir.name, pos, s)

    def _scan_sync(self, s: A.Sync, pos: int) -> None:
        self._links.union(s.source.name, s.dest.name)
        self._arrive(s.dest.name, pos, s)
        self._name_excluded(s.source.name, s)

    def _scan_replicate(self, s: A.Replicate, pos: int) -> None:
        self._links.union(s.source.name, s.dest.name)
        if s.live:  # the data arrives with the live pass; the final pass only completes it (H206)
            self._arrive(s.dest.name, pos, s)

    def _scan_transfer(self, s: A.Step, pos: int) -> None:
        src = self._node(s.source)
        dst = self._loc(s.dest)
        self._links.union(src, dst.resource.name if dst.resource is not None else (dst.host, dst.path))
        if dst.resource is not None:
            self._arrive(dst.resource.name, pos, s)

    def _scan_delete(self, s: A.Delete, pos: int) -> None:
        self._loc(s.target)

    # ---------------------------------------------------------------- pieces and nesting

    def _split_dirs(self) -> Dict[str, Tuple[Piece, ...]]:
        """Every dir is split at the union of the subpaths named anywhere in its component."""
        by_root: Dict[object, Set[str]] = {}
        for d, subs in self._named.items():
            by_root.setdefault(self._links.find(d), set()).update(subs)
        pieces: Dict[str, Tuple[Piece, ...]] = {}
        for r in self.bound.resources.values():
            if not r.is_data:
                continue
            if not r.is_dir:
                pieces[r.name] = (Piece(r, None, None, rest=False),)
                continue
            subs = sorted(by_root.get(self._links.find(r.name), ()))
            derived = [(d.subpath, d.rebuild) for d in r.derived]
            ps = [Piece(r, s, _rebuild_of(s, derived), rest=True) for s in subs]
            ps.append(Piece(r, None, None, rest=bool(subs)))
            pieces[r.name] = tuple(ps)
        return pieces

    def _nest(self) -> Dict[Tuple[str, str], List[PlaceKey]]:
        nested: Dict[Tuple[str, str], List[PlaceKey]] = {}
        for r in self.bound.resources.values():
            p = getattr(r, "path", "")
            if r.is_data and p:
                for a in _ancestors(p):
                    nested.setdefault((r.host, a), []).append(r.name)
        for host, p in self._locations:
            for a in _ancestors(p):
                nested.setdefault((host, a), []).append((host, p))
        return nested


_SCANS = {
    A.Dump: PlanIndex._scan_dump, A.Archive: PlanIndex._scan_archive, A.Restore: PlanIndex._scan_restore,
    A.Extract: PlanIndex._scan_extract, A.Sync: PlanIndex._scan_sync, A.Replicate: PlanIndex._scan_replicate,
    A.Transfer: PlanIndex._scan_transfer,
    A.Move: PlanIndex._scan_transfer, A.Delete: PlanIndex._scan_delete,
}


def _rebuild_of(sub: str, derived) -> Optional[str]:
    for d, cmd in derived:
        if covers(sub, d):
            return cmd
    return None
