"""The symbolic walk: every step, in order, over the state of `state.py`.

For each step the walk resolves what the step reads, writes and destroys,
asks the rules of `rules/` whether that is a hazard in the current state, and
then applies the step's effect. A `parallel` block is checked as unordered:
every member sees the state before the block (with every service started
anywhere in the block possibly running) and the effects are applied after the
last member. Everything that needs the whole plan (which subpaths split a
dir, which later steps write into a resource) is precomputed in one pass, so
the walk costs a small constant per step.
"""

from __future__ import annotations

import bisect
from typing import Dict, Iterable, List, Optional, Set, Tuple

from mdsl.model import BoundPlan, Resource, normpath
from mdsl.check.rules import h1_loss, h2_order, h3_logins, h3_operations
from mdsl.check.state import (ARCHIVE, DIR_COPY, NEVER, Piece, Place, PlaceKey,
                              Provisional, State, covers)
from mdsl.findings import Finding
from mdsl.stores.registry import STORES
from mdsl.syntax import ast as A


class Ref:
    """A step's location, resolved once: a resource, a subpath inside a dir, or an artifact path."""

    __slots__ = ("host", "path", "resource", "sub", "key")

    def __init__(self, host: str, path: str, resource: Optional[Resource], sub: Optional[str]):
        self.host, self.path, self.resource, self.sub = host, path, resource, sub
        # the coarse key used to find conflicts in a parallel block
        self.key: PlaceKey = resource.name if resource is not None else (host, path)


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


class Walk:
    """One symbolic walk over a bound plan; `run()` returns the H1xx-H3xx findings."""

    def __init__(self, bound: BoundPlan):
        self.bound = bound
        self.findings: List[Finding] = []
        self.pos = 0
        self._refs: Dict[object, Ref] = {}
        self.deferred: Optional[list] = None  # effects of a parallel block, applied after its members
        self.block_started: Dict[str, A.Step] = {}  # services started inside the current parallel block
        self.lane_checks: list = []  # (first, last position, {host: position}) of the current block's verifying lanes
        self.left_out: Dict[Piece, Tuple[A.Step, str, A.Span]] = {}  # piece -> copy step that lacked it
        self.first_arrival: Dict[Tuple[str, str], A.Step] = {}  # (target, origin resource) -> step
        self.early_start: Dict[str, Set[str]] = {}  # service -> data it was started before (H205)
        self.last_stop: Dict[str, A.Step] = {}
        # (source, dest) of every `sync ... live` so far: later syncs of that pair mirror (rsync --delete)
        self.live_pairs: Set[Tuple[str, str]] = set()
        self.memo: Dict[str, object] = {}  # what rules precompute once per walk
        self.writers: Dict[str, List[str]] = {}
        for r in bound.resources.values():
            if r.kind == "service":
                for d in r.writes:
                    self.writers.setdefault(d, []).append(r.name)
        self._handlers = {kind: getattr(self, name) for kind, name in _HANDLERS.items()}
        self._precompute()
        self.state = State(bound.resources.values(), self.pieces)
        for r in bound.resources.values():
            if r.kind == "service" and r.initially_running:
                self.state.running.add(r.name)
                self.state.started_by[r.name] = None

    # ---------------------------------------------------------------- precompute

    def ref(self, t: A.Target) -> Ref:
        """The resolved location of a step's target (memoized: plans repeat locations)."""
        k = t.name if isinstance(t, A.Ident) else (t.host.name, t.path.value)
        r = self._refs.get(k)
        if r is None:
            p = self.bound.place(t)
            res = self.bound.resources[p.resource] if p.resource else None
            r = self._refs[k] = Ref(p.host, p.path, res, normpath(p.subpath) if p.subpath else None)
        return r

    def _precompute(self):
        bound = self.bound
        res = bound.resources
        uf = _Subpaths()
        named: Dict[str, Set[str]] = {}  # dir -> subpaths the plan names for it
        locations: Set[Tuple[str, str]] = set()
        self.arrivals: Dict[str, Tuple[List[int], List[A.Step]]] = {}
        self.runs: List[Tuple[int, str, A.Run]] = []  # (position, command, step) for H102's rebuild lookahead
        self.positions: Dict[int, int] = {}  # id(step) -> position

        def loc(t: A.Target) -> object:
            """Resolve a target; note the subpath it names and the artifact path it may be."""
            ref = self.ref(t)
            if ref.sub is not None:
                named.setdefault(ref.resource.name, set()).add(ref.sub)
            if ref.resource is None or ref.sub is not None:
                locations.add((ref.host, ref.path))
            return ref

        def node(ref: Ref) -> object:
            return ref.resource.name if ref.resource is not None else (ref.host, ref.path)

        def arrive(name: str, pos: int, step):
            ps, ss = self.arrivals.setdefault(name, ([], []))
            ps.append(pos)
            ss.append(step)

        for r in res.values():
            if r.kind == "dir":
                for d in r.derived:
                    named.setdefault(r.name, set()).add(d.subpath)

        # A step's position orders it: a top-level step and the members of a parallel block share
        # one; each step of a lane (`sequence`) gets its own, in order, after the block's and before
        # the next top-level step's (a block inside a lane: its own lanes' steps come in between).
        positions = self.positions
        tick, lanes = 0, False

        def place(s, pos):
            nonlocal tick, lanes
            positions[id(s)] = pos
            if type(s) is A.Parallel:
                for m in s.steps:
                    place(m, pos)
            elif type(s) is A.Sequence:
                lanes = True
                for m in s.steps:
                    tick += 1
                    place(m, tick)

        for top in bound.steps:
            tick += 1
            if type(top) is A.Parallel:
                place(top, tick)
            else:
                positions[id(top)] = tick
            todo = [top]
            while todo:
                s = todo.pop()
                pos = positions[id(s)]
                kind = type(s)
                if kind is A.Parallel or kind is A.Sequence:
                    todo.extend(reversed(s.steps))  # members in source order
                elif kind is A.Dump:
                    loc(s.to)
                elif kind is A.Archive:
                    uf.union(s.dir.name, node(loc(s.to)))
                    for sub in _excludes(s):
                        named.setdefault(s.dir.name, set()).add(sub)
                elif kind is A.Restore:
                    loc(s.source)
                    arrive(s.db.name, pos, s)
                elif kind is A.Extract:
                    uf.union(node(loc(s.source)), s.dir.name)
                    arrive(s.dir.name, pos, s)
                elif kind is A.Sync:
                    uf.union(s.source.name, s.dest.name)
                    arrive(s.dest.name, pos, s)
                    for sub in _excludes(s):
                        named.setdefault(s.source.name, set()).add(sub)
                elif kind is A.Transfer or kind is A.Move:
                    dst = loc(s.dest)
                    uf.union(node(loc(s.source)), node(dst))
                    if dst.resource is not None:
                        arrive(dst.resource.name, pos, s)
                elif kind is A.Delete:
                    loc(s.target)
                elif kind is A.Run:
                    self.runs.append((pos, " ".join(s.command.value.split()), s))
        if lanes:  # a member after a lane in its block comes earlier: keep the lists sorted for bisect
            for name, (ps, ss) in self.arrivals.items():
                order = sorted(range(len(ps)), key=ps.__getitem__)
                self.arrivals[name] = ([ps[i] for i in order], [ss[i] for i in order])
            self.runs.sort(key=lambda r: r[0])

        # Every dir is split at the union of the subpaths named anywhere in its component.
        by_root: Dict[object, Set[str]] = {}
        for d, subs in named.items():
            by_root.setdefault(uf.find(d), set()).update(subs)
        self.pieces: Dict[str, Tuple[Piece, ...]] = {}
        for r in res.values():
            if not r.is_data:
                continue
            if r.kind != "dir":
                self.pieces[r.name] = (Piece(r, None, None, rest=False),)
                continue
            subs = sorted(by_root.get(uf.find(r.name), ()))
            derived = [(d.subpath, d.rebuild) for d in r.derived]
            ps = [Piece(r, s, _rebuild_of(s, derived), rest=True) for s in subs]
            ps.append(Piece(r, None, None, rest=bool(subs)))
            self.pieces[r.name] = tuple(ps)

        # What lies under each path, so `delete` of a parent path destroys what is inside.
        self.nested: Dict[Tuple[str, str], List[PlaceKey]] = {}
        for r in res.values():
            p = getattr(r, "path", "")
            if r.is_data and p:
                for a in _ancestors(p):
                    self.nested.setdefault((r.host, a), []).append(r.name)
        for host, p in locations:
            for a in _ancestors(p):
                self.nested.setdefault((host, a), []).append((host, p))

    # ---------------------------------------------------------------- helpers for rules

    def report(self, finding: Finding) -> None:
        """Record a finding."""
        self.findings.append(finding)

    def next_arrival(self, name: str) -> Optional[A.Step]:
        """The first step after the current one that brings data into resource `name`."""
        got = self.arrivals.get(name)
        if not got:
            return None
        ps, ss = got
        i = bisect.bisect_right(ps, self.pos)
        return ss[i] if i < len(ps) else None

    def running_writers(self, name: str) -> List[str]:
        """Services that write resource `name` and may be running now."""
        running = self.state.running
        return [s for s in self.writers.get(name, ()) if s in running]

    def place_of(self, name: str) -> Place:
        """The place of a declared data resource."""
        return self.state.places[name]

    # ---------------------------------------------------------------- resolving places

    def source(self, step: A.Step, ref: Ref) -> Tuple[Place, Set[Piece]]:
        """The place a step reads and (a copy of) the pieces it finds there; H203 for a missing artifact."""
        st = self.state
        if ref.resource is not None:
            if ref.sub is None:
                place = st.places[ref.resource.name]
                return place, set(place.holds)
            art = st.places.get((ref.host, ref.path))
            if art is not None and art.exists:
                return art, set(art.holds)
            place = st.places[ref.resource.name]
            return place, st.content(place, ref.sub)
        place = st.artifact(ref.host, ref.path)
        if not place.exists:
            h2_order.missing_artifact(self, step, ref, place)
        return place, set(place.holds)

    def dest(self, ref: Ref, kind: Optional[str]) -> Place:
        """The place a step writes: a resource, or an artifact (also when the path lies inside a
        dir, unless a directory copy is put there, which merges into the dir)."""
        st = self.state
        if ref.resource is not None and (ref.sub is None or kind == DIR_COPY):
            return st.places[ref.resource.name]
        return st.artifact(ref.host, ref.path)

    def effect(self, fn, *args) -> None:
        """Apply a state change now, or after the current parallel block."""
        if self.deferred is not None:
            self.deferred.append((fn, args))
        else:
            fn(*args)

    # ---------------------------------------------------------------- the walk

    def run(self) -> List[Finding]:
        """Walk every step, then the end-of-plan checks."""
        h3_operations.literal_secrets(self)
        for step in self.bound.steps:
            self.pos = self.positions[id(step)]
            self.dispatch(step)
        h2_order.provisional_at_end(self)
        h1_loss.at_end(self)
        h3_operations.at_end(self)
        h3_logins.at_end(self)
        return self.findings

    def dispatch(self, step: A.Step) -> None:
        """Check and apply one step."""
        self._handlers[type(step)](step)

    # -- services

    def _stop(self, s: A.Stop):
        for ident in s.services:
            self.effect(self._apply_stop, ident.name, s)

    def _apply_stop(self, name, s):
        self.state.running.discard(name)
        self.state.started_by.pop(name, None)
        self.early_start.pop(name, None)
        self.last_stop[name] = s

    def _start(self, s: A.Step):
        for ident in s.services:
            name = ident.name
            if self.state.provisional:
                svc = self.bound.resources[name]
                for d in dict.fromkeys(svc.writes + svc.reads):
                    how = "writes" if d in svc.writes else "reads"
                    h2_order.provisional_used(self, d, s, f"starts {name}, which {how} {d}")
            if not (isinstance(s, A.Restart) and name in self.state.running and name not in self.block_started):
                h2_order.started_early(self, s, self.bound.resources[name])
            self.effect(self._apply_start, name, s)

    def _apply_start(self, name, s):
        self.state.running.add(name)
        self.state.started_by.setdefault(name, s)

    # -- databases

    def _dump(self, s: A.Dump):
        db = self.bound.resources[s.db.name]
        h2_order.torn_copy(self, s, db)
        store = STORES[db.kind]
        fmt = store.dump_format(s)
        if fmt is not None:
            h3_operations.dump_format(self, s, fmt)
        dst = self.dest(self.ref(s.to), None)
        h1_loss.overwrite(self, s, dst)
        self.effect(self._apply_copy, s, None, set(self.place_of(db.name).holds), dst, store.artifact, fmt, True)

    def _restore(self, s: A.Restore):
        db = self.bound.resources[s.db.name]
        ref = self.ref(s.source)
        src, pieces = self.source(s, ref)
        if src.exists:
            h2_order.wrong_kind(self, s, src, db)
            h3_operations.restore_format(self, s, src)
            h3_operations.cross_host_read(self, s, src, db)
        h2_order.write_while_running(self, s, db)
        if STORES[db.kind].is_file:
            h3_operations.unowned(self, s, db, pieces)
        h3_logins.restored(self, s, db, pieces)
        dbp = self.place_of(db.name)
        replace = s.option("replace") is not None
        if replace and dbp.holds:
            h1_loss.destroyed(self, s, [(dbp, dbp.holds)])
        self.effect(self._apply_fill, s, src, pieces, dbp, replace)

    def _drop(self, s: A.Drop):
        dbp = self.place_of(s.db.name)
        if dbp.holds:
            h1_loss.destroyed(self, s, [(dbp, dbp.holds)])
        self.effect(self._apply_destroy, s, [(dbp, set(dbp.holds))])

    # -- directories

    def _archive(self, s: A.Archive):
        d = self.bound.resources[s.dir.name]
        h2_order.torn_copy(self, s, d)
        h2_order.provisional_used(self, d.name, s, f"copies {d.name}")
        dst = self.dest(self.ref(s.to), None)
        h1_loss.overwrite(self, s, dst)
        pieces = self._left_out(s, d)
        self.effect(self._apply_copy, s, None, pieces, dst, ARCHIVE, None, True)

    def _extract(self, s: A.Extract):
        d = self.bound.resources[s.dir.name]
        src, pieces = self.source(s, self.ref(s.source))
        if src.exists:
            h2_order.wrong_kind(self, s, src, d)
            h3_operations.cross_host_read(self, s, src, d)
        h2_order.write_while_running(self, s, d)
        h2_order.provisional_used(self, d.name, s, f"writes into {d.name}")
        h3_operations.unowned(self, s, d, pieces)
        dp = self.place_of(d.name)
        replace = s.option("replace") is not None
        if replace and dp.holds:
            h1_loss.destroyed(self, s, [(dp, dp.holds)])
        self.effect(self._apply_fill, s, src, pieces, dp, replace)

    def _sync(self, s: A.Sync):
        src, dst = self.bound.resources[s.source.name], self.bound.resources[s.dest.name]
        st = self.state
        live = s.live
        pair = (src.name, dst.name)
        # A live pass and every later sync of the same pair mirror the source (rsync --delete).
        mirror = live or pair in self.live_pairs
        writers = tuple(self.running_writers(src.name))
        excludes = _excludes(s)
        h2_order.provisional_used(self, src.name, s, f"copies {src.name}")
        prov = st.provisional.get(dst.name)
        if prov is not None and prov.source != src.name:
            h2_order.provisional_used(self, dst.name, s, f"writes {src.name} into {dst.name}")
            prov = None
        new_prov = None
        if live:
            self.live_pairs.add(pair)
            if writers:  # torn, as H201 knows it, but provisional: a final sync must follow
                new_prov = Provisional(s, src.name, dst.name, writers, h2_order.why_running(self, writers), excludes)
            else:
                h2_order.live_idle(self, s, src)
        else:
            h2_order.torn_copy(self, s, src)
            if prov is not None:
                if writers:  # this pass is torn too, and H201 says so here
                    st.provisional.pop(dst.name, None)
                else:
                    h2_order.final_excludes(self, s, prov, excludes)
        h2_order.write_while_running(self, s, dst)
        h3_operations.unowned(self, s, dst, self.pieces[src.name])
        pieces = self._left_out(s, src)
        dp = self.place_of(dst.name)
        gone: Set[Piece] = set()
        if mirror:  # what the destination holds that the source lacks is deleted (excluded subpaths stay)
            gone = {p for p in dp.holds if p not in pieces and not any(covers(p.subpath, x) for x in excludes)}
            if gone:
                h1_loss.destroyed(self, s, [(dp, gone)])
        self.effect(self._apply_sync, s, pieces, dp, gone, new_prov)

    def _apply_sync(self, s, pieces, dst: Place, gone, prov: Optional[Provisional]):
        st = self.state
        if gone:
            st.remove(dst, gone)
        self._apply_fill(s, None, pieces, dst, False)
        if prov is not None:
            st.provisional[dst.key] = prov
        else:  # a consistent pass (or a torn one, reported as H201 where it runs)
            st.provisional.pop(dst.key, None)

    def _lose_sources(self, s: A.Step, targets) -> None:
        """A step that destroys a whole dir whose provisional copy still waits for its final sync."""
        if not self.state.provisional:
            return
        for place, pieces in targets:
            if place.resource is not None and place.holds and pieces >= place.holds:
                h2_order.source_lost(self, place.key, s, f"deletes {place.key}")

    def _left_out(self, s: A.Step, d: Resource) -> Set[Piece]:
        """What an archive or sync of `d` copies; remembers the pieces of `d` it leaves behind (H102)."""
        place = self.place_of(d.name)
        excludes = _excludes(s)
        if not excludes:
            pieces = place.holds
        else:
            pieces = {p for p in place.holds if not any(covers(p.subpath, x) for x in excludes)}
        if not d.fresh:  # a fresh dir holds no data of its own to leave behind
            for p in self.pieces[d.name]:
                if p in pieces:
                    self.left_out.pop(p, None)
                elif any(covers(p.subpath, x) for x in excludes):
                    self.left_out[p] = (s, "excluded", s.option("exclude").span)
                else:
                    self.left_out[p] = (s, "absent", s.span)
        return set(pieces)

    # -- artifacts

    def _transfer(self, s: A.Step):
        src_ref, dst_ref = self.ref(s.source), self.ref(s.dest)
        src, pieces = self.source(s, src_ref)
        if src.resource is not None:
            h2_order.torn_copy(self, s, src.resource)
            name = src.resource.name
            h2_order.provisional_used(self, name, s, f"{'moves' if isinstance(s, A.Move) else 'copies'} {name}")
            if isinstance(s, A.Move) and src_ref.sub is None:
                h2_order.source_lost(self, name, s, f"moves {name} away")
        kind = src.kind if src.resource is None else (DIR_COPY if src.resource.kind == "dir" else None)
        dst = self.dest(dst_ref, kind)
        if dst.resource is not None:
            h2_order.write_while_running(self, s, dst.resource)
            h2_order.provisional_used(self, dst.resource.name, s, f"writes into {dst.resource.name}")
        else:
            h1_loss.overwrite(self, s, dst)
        if isinstance(s, A.Move):
            self.effect(self._apply_move, s, src, pieces, dst, kind)
            return
        opt = s.option("verify")
        checksum = not (opt is not None and isinstance(opt.value, A.Bool) and not opt.value.value)
        if not checksum:
            h3_operations.unverified_transfer(self, s, opt)
        self.effect(self._apply_copy, s, src, pieces, dst, kind, src.fmt, checksum and src.verified)

    def _delete(self, s: A.Delete):
        ref = self.ref(s.target)
        st = self.state
        targets: List[Tuple[Place, Set[Piece]]] = []
        if ref.resource is not None and ref.sub is None:
            place = st.places[ref.resource.name]
            targets.append((place, set(place.holds)))
        else:
            art = st.places.get((ref.host, ref.path))
            if art is not None and art.exists:
                targets.append((art, set(art.holds)))
            elif ref.sub is not None:
                place = st.places[ref.resource.name]
                targets.append((place, st.content(place, ref.sub)))
        seen = {t.key for t, _ in targets}
        for key in self.nested.get((ref.host, ref.path), ()):
            place = st.places.get(key)
            if place is not None and place.exists and key not in seen:
                seen.add(key)
                targets.append((place, set(place.holds)))
        if any(pieces for _, pieces in targets):
            h1_loss.destroyed(self, s, targets)
        self._lose_sources(s, targets)
        self.effect(self._apply_destroy, s, targets)

    # -- opaque commands, checks, gates

    def _run(self, s: A.Run):
        h3_operations.opaque_run(self, s)
        deletes = _names(s, "deletes")
        if deletes:
            targets = [(self.place_of(n), set(self.place_of(n).holds)) for n in deletes]
            if any(pieces for _, pieces in targets):
                h1_loss.destroyed(self, s, targets)
            self._lose_sources(s, targets)
            self.effect(self._apply_destroy, s, targets)
        writes, reads = _names(s, "writes"), _names(s, "reads")
        if self.state.provisional:
            for n in dict.fromkeys(reads + writes):
                h2_order.provisional_used(self, n, s, f"{'writes' if n in writes else 'reads'} {n}")
        if writes or reads:
            self.effect(self._apply_run, writes, reads)

    def _apply_run(self, writes, reads):
        for n in writes:
            self.place_of(n).written_at = self.pos
        for n in reads:
            self.place_of(n).consumed = True

    def _verify_http(self, s: A.VerifyHttp):
        via = s.option("via")
        if via is not None and isinstance(via.value, A.Ref):
            hosts = (via.value.name,)
            self.effect(self.state.http_via.add, via.value.name)
        else:
            res = self.bound.resources
            hosts = tuple({res[n].host for n in self.state.running})
        self._verify_provisional(s, hosts)
        self.effect(self._apply_checked, hosts)

    def _verify_run(self, s: A.VerifyRun):
        self._verify_provisional(s, (s.host.name,))
        self.effect(self._apply_checked, (s.host.name,))

    def _verify_provisional(self, s: A.Step, hosts) -> None:
        """A verify of a host holding a provisional copy would vouch for a torn copy (H103 trusts it)."""
        st = self.state
        for name in [n for n in st.provisional if st.places[n].host in hosts]:
            h2_order.provisional_used(self, name, s, f"checks {st.places[name].host}, where {name} is still torn")

    def _apply_checked(self, hosts):
        for h in hosts:
            self.state.checked_at[h] = self.pos

    def _verify_dns(self, s: A.VerifyDns):
        h3_operations.dns_switch(self, s, s.host.name)

    def _confirm(self, s: A.Confirm):
        h3_operations.dns_confirm(self, s)

    # -- parallel blocks

    def _parallel(self, block: A.Parallel):
        h2_order.parallel_conflicts(self, block, [self.touches(m) for m in block.steps])
        if self.deferred is not None:  # a nested block: its members are members of the outer one
            for m in block.steps:
                self.dispatch(m)
            return
        running = self.state.running
        started = {}
        for m in A.walk_steps(block.steps):
            if isinstance(m, (A.Start, A.Restart)):
                for ident in m.services:
                    if ident.name not in running:
                        started.setdefault(ident.name, m)
        # (a block inside a lane keeps what the rest of the lane's block started)
        outer_started, outer_checks = self.block_started, self.lane_checks
        self.deferred, self.block_started, self.lane_checks = [], {**outer_started, **started}, []
        running.update(started)
        base = self.pos
        try:
            for m in block.steps:
                self.dispatch(m)
        finally:
            self.pos = base
            running.difference_update(started)
            effects, self.deferred, self.block_started = self.deferred, None, outer_started
        for fn, args in effects:
            fn(*args)
        if self.lane_checks:
            self._lanes_checked(base)
        self.lane_checks = outer_checks

    def _sequence(self, lane: A.Sequence):
        """A lane of a parallel block: its steps in order, each seeing the effects of those before it.

        The block's other members and lanes see none of them until the block is over, as for a
        member: the lane is walked on the shared state (lanes touch disjoint data, H204), then
        what it changed beyond its own data (which services run, which hosts were verified) is
        put back and applied after the block. A service the lane starts is not running before
        that start, for the lane; for everything else in the block it may be running throughout.
        """
        if self.deferred is None:  # not in a parallel block (the grammar allows none): plain steps
            for s in lane.steps:
                self.pos = self.positions[id(s)]
                self.dispatch(s)
            return
        st = self.state
        outer_started, outer_deferred, outer_pos = self.block_started, self.deferred, self.pos
        mine = {i.name for s in lane.steps if isinstance(s, (A.Start, A.Restart)) for i in s.services}
        mine &= set(outer_started)
        running0, started_by0 = set(st.running), dict(st.started_by)
        checked0, via0 = dict(st.checked_at), set(st.http_via)
        st.running.difference_update(mine)
        at_start = set(st.running)
        self.block_started = {k: v for k, v in outer_started.items() if k not in mine}
        self.deferred = None
        try:
            for s in lane.steps:
                self.pos = self.positions[id(s)]
                self.dispatch(s)
        finally:
            running1, started_by1 = set(st.running), dict(st.started_by)
            checked1, via1 = dict(st.checked_at), set(st.http_via)
            st.running.clear()
            st.running.update(running0)
            st.started_by.clear()
            st.started_by.update(started_by0)
            st.checked_at.clear()
            st.checked_at.update(checked0)
            st.http_via.clear()
            st.http_via.update(via0)
            self.block_started, self.deferred, self.pos = outer_started, outer_deferred, outer_pos
        began = {n: started_by1.get(n) for n in running1 - at_start}
        self.deferred.append((self._lane_done, (at_start - running1, began, via1 - via0)))
        checks = {h: t for h, t in checked1.items() if checked0.get(h) != t}
        if checks and lane.steps:
            ticks = [self.positions[id(s)] for s in lane.steps]
            self.lane_checks.append((ticks[0], ticks[-1], checks))

    def _lane_done(self, stopped, began, via):
        st = self.state
        for n in stopped:
            st.running.discard(n)
            st.started_by.pop(n, None)
        for n, s in began.items():
            st.running.add(n)
            st.started_by.setdefault(n, s)
        st.http_via.update(via)

    def _lanes_checked(self, base: int) -> None:
        """After a block with lanes: a verify in a lane vouches for what was there before the block
        and for what its own lane wrote before it, never for what the rest of the block wrote."""
        st = self.state
        for place in st.places.values():
            w = place.written_at
            if w <= base:  # before the block, or by a plain member (they share the block's position)
                continue
            for first, last, checks in self.lane_checks:
                if first <= w <= last:
                    t = checks.get(place.host)
                    if t is not None and w < t:
                        place.written_at = base - 0.5  # checked by the block's verify, below
                    break
        for _, _, checks in self.lane_checks:
            for h in checks:
                if st.checked_at.get(h, NEVER) < base:
                    st.checked_at[h] = base

    def touches(self, s: A.Step) -> Tuple[Set[object], Set[object]]:
        """What a step reads and writes, coarsely (resources, artifact paths, services), for H204."""
        if isinstance(s, (A.Parallel, A.Sequence)):  # a nested block or a lane: all its steps together
            reads, writes = set(), set()
            for m in s.steps:
                r, w = self.touches(m)
                reads |= r
                writes |= w
            return reads, writes
        if isinstance(s, (A.Start, A.Stop, A.Restart)):
            return set(), {("service", i.name) for i in s.services}
        if isinstance(s, A.Dump):
            return {s.db.name}, {self.ref(s.to).key}
        if isinstance(s, A.Archive):
            return {s.dir.name}, {self.ref(s.to).key}
        if isinstance(s, A.Restore):
            return {self.ref(s.source).key}, {s.db.name}
        if isinstance(s, A.Extract):
            return {self.ref(s.source).key}, {s.dir.name}
        if isinstance(s, A.Sync):
            return {s.source.name}, {s.dest.name}
        if isinstance(s, A.Transfer):
            return {self.ref(s.source).key}, {self.ref(s.dest).key}
        if isinstance(s, A.Move):
            return set(), {self.ref(s.source).key, self.ref(s.dest).key}
        if isinstance(s, A.Delete):
            ref = self.ref(s.target)
            return set(), {ref.key, *self.nested.get((ref.host, ref.path), ())}
        if isinstance(s, A.Drop):
            return set(), {s.db.name}
        if isinstance(s, A.Run):
            return set(_names(s, "reads")), set(_names(s, "writes") + _names(s, "deletes"))
        return set(), set()

    # ---------------------------------------------------------------- effects

    def _apply_copy(self, s, src: Optional[Place], pieces, dst: Place, kind, fmt, verified):
        st = self.state
        if src is not None:
            src.consumed = True
        if dst.resource is not None:
            self._arrive(s, dst, pieces)
            st.put(dst, pieces, self.pos, replace=dst.resource.kind != "dir")
        else:
            st.put(dst, pieces, self.pos, replace=True)
        dst.kind, dst.fmt, dst.producer, dst.verified, dst.gone = kind, fmt, s, verified, None

    def _apply_fill(self, s, src: Optional[Place], pieces, dst: Place, replace: bool):
        """restore / extract / sync: data arrives in a declared resource."""
        if src is not None:
            src.consumed = True
        self._arrive(s, dst, pieces)
        self.state.put(dst, pieces, self.pos, replace=replace)

    def _apply_move(self, s, src: Place, pieces, dst: Place, kind):
        st = self.state
        if dst.resource is not None:
            self._arrive(s, dst, pieces)
        elif dst.holds:
            st.remove(dst, dst.holds)
        copied = {p: p.copied for p in pieces}
        st.relocate(src, dst, list(pieces), self.pos)
        for p, was in copied.items():
            p.copied = was  # a rename is not a second copy
        if dst.resource is None:
            dst.kind, dst.fmt, dst.producer, dst.verified = kind, src.fmt, s, src.verified
        if src.resource is None:
            src.exists, src.gone = False, (s, "moved away")

    def _apply_destroy(self, s, targets):
        st = self.state
        for place, pieces in targets:
            st.remove(place, pieces)
            if place.resource is None:
                place.exists, place.gone = False, (s, "deleted")
            elif not place.holds:  # an emptied provisional copy is no longer torn
                st.provisional.pop(place.key, None)
            place.written_at = self.pos

    def _arrive(self, s, dst: Place, pieces):
        name = dst.resource.name
        for p in pieces:
            origin = p.resource.name
            if origin != name:
                self.first_arrival.setdefault((name, origin), s)


_HANDLERS = {
    A.Stop: "_stop", A.Start: "_start", A.Restart: "_start", A.Dump: "_dump", A.Restore: "_restore",
    A.Archive: "_archive", A.Extract: "_extract", A.Sync: "_sync", A.Transfer: "_transfer",
    A.Move: "_transfer", A.Delete: "_delete", A.Drop: "_drop", A.Run: "_run",
    A.VerifyHttp: "_verify_http", A.VerifyDns: "_verify_dns", A.VerifyRun: "_verify_run",
    A.Confirm: "_confirm", A.Parallel: "_parallel", A.Sequence: "_sequence",
}


def _excludes(s: A.Step) -> Tuple[str, ...]:
    opt = s.option("exclude")
    if opt is None or not isinstance(opt.value, A.ListValue):
        return ()
    return tuple(normpath(x.value) for x in opt.value.items)


def _names(s: A.Step, key: str) -> List[str]:
    opt = s.option(key)
    if opt is None or opt.value is None:
        return []
    items = opt.value.items if isinstance(opt.value, A.ListValue) else (opt.value,)
    return [i.name for i in items if isinstance(i, A.Ref)]


def _rebuild_of(sub: str, derived) -> Optional[str]:
    for d, cmd in derived:
        if covers(sub, d):
            return cmd
    return None


def walk(bound: BoundPlan) -> List[Finding]:
    """The H1xx-H3xx findings of a bound plan without E1xx errors."""
    return Walk(bound).run()
