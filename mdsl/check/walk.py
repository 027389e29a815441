"""The symbolic walk: every step, in order, over the state of `state.py`.

For each step the walk resolves what the step reads, copies, writes and
destroys (`StepFacts`), hands those facts to every check that declared the
step's kind (the registry, `catalog.CHECKS`, read top to bottom), and then
applies the step's effect. The checks only judge; what the walk remembers
between steps (which data is lost for good, which service started before its
data, which live pass a step broke) it decides itself, here. A `parallel` block
is checked as unordered (`blocks.py`). Everything that needs the whole plan is
precomputed in one pass (`index.py`), so the walk costs a small constant per
step.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

from mdsl.check.blocks import touches, walk_lane, walk_parallel
from mdsl.check.catalog import AFTER_WALK, CHECKS
from mdsl.check.facts import FINAL_EXCLUDES, SOURCE_GONE, USED, BrokenLivePass, StepFacts, Survivors
from mdsl.check.index import PlanIndex, Ref, excludes, names
from mdsl.check.rules.base import PlanEnd, PlanText
from mdsl.check.state import ARCHIVE, DIR_COPY, Piece, Place, Provisional, State, covers
from mdsl.findings import Finding
from mdsl.model import BoundPlan, Resource
from mdsl.stores.registry import store_of
from mdsl.syntax import ast as A


def _by_step(checks) -> Dict[type, tuple]:
    """Step kind -> the judge functions of the checks that declared it, in registry order."""
    table: Dict[type, list] = {}
    for check in checks:
        for kind in check.steps:
            table.setdefault(kind, []).append(check.judge)
    return {kind: tuple(judges) for kind, judges in table.items()}


_JUDGES_BY_STEP = _by_step(CHECKS)


def _by_name(piece: Piece) -> str:
    return piece.name


class Walk:
    """One symbolic walk over a bound plan; `run()` returns the H1xx-H3xx findings."""

    def __init__(self, bound: BoundPlan, rollback: bool = False):
        self.bound = bound
        self.rollback = rollback  # the plan runs with rollback (`mdsl check --rollback`): H310 judges it
        self.index = PlanIndex(bound)
        self.pieces = self.index.pieces  # data resource name -> its pieces
        self.findings: List[Finding] = []
        self.pos = 0
        self.deferred: Optional[list] = None  # effects of a parallel block, applied after its members
        self.block_started: Dict[str, A.Step] = {}  # services started inside the current parallel block
        self.lane_checks: list = []  # (first, last position, {host: position}) of the current block's verifying lanes
        self.left_out: Dict[Piece, Tuple[A.Step, str, A.Span]] = {}  # piece -> copy step that lacked it
        self.first_arrival: Dict[Tuple[str, str], A.Step] = {}  # (target, origin resource) -> step
        self.early_start: Dict[str, Set[str]] = {}  # service -> data it was started before (H205)
        self.last_stop: Dict[str, A.Step] = {}
        # (source, dest) of every `sync ... live` so far: later syncs of that pair mirror (rsync --delete)
        self.live_pairs: Set[Tuple[str, str]] = set()
        # (source, dest) of every `replicate ... live` so far: a final pass without one is reported (H206)
        self.replicated: Set[Tuple[str, str]] = set()
        self.memo: Dict[str, object] = {}  # what checks precompute once per walk
        self._handlers = {kind: getattr(self, name) for kind, name in _HANDLERS.items()}
        self.state = State(bound.resources.values(), self.pieces)
        for r in bound.resources.values():
            if r.kind == "service" and r.initially_running:
                self.state.running.add(r.name)
                self.state.started_by[r.name] = None

    # ---------------------------------------------------------------- what checks ask

    def ref(self, t: A.Target) -> Ref:
        """The resolved location of a step's target."""
        return self.index.ref(t)

    def next_arrival(self, name: str) -> Optional[A.Step]:
        """The first step after the current one that brings data into resource `name`."""
        return self.index.next_arrival(name, self.pos)

    def running_writers(self, name: str) -> List[str]:
        """Services that write resource `name` and may be running now."""
        running = self.state.running
        return [s for s in self.index.writers.get(name, ()) if s in running]

    def started_how(self, svc: str) -> Tuple[Optional[A.Step], bool]:
        """Why `svc` may be running now: the step that started it (None: it runs from the start), and
        whether that step is in the current `parallel` block."""
        if svc in self.block_started:
            return self.block_started[svc], True
        return self.state.started_by.get(svc), False

    def place_of(self, name: str) -> Place:
        """The place of a declared data resource."""
        return self.state.places[name]

    def touches(self, s: A.Step):
        """What a step reads and writes, coarsely (resources, artifact paths, services), for H204."""
        return touches(self, s)

    # ---------------------------------------------------------------- the walk

    def run(self) -> List[Finding]:
        """Check the plan as written, walk every step, then the end-of-plan checks."""
        for judge in _JUDGES_BY_STEP.get(PlanText, ()):
            self.findings.extend(judge(self))
        for step in self.bound.steps:
            self.pos = self.index.positions[id(step)]
            self.dispatch(step)
        for judge in _JUDGES_BY_STEP.get(PlanEnd, ()):
            self.findings.extend(judge(self))
        for judge in AFTER_WALK:  # the app's own hazards (A1xx), on the walk's results
            self.findings.extend(judge(self))
        self.state.provisional.clear()
        return self.findings

    def dispatch(self, step: A.Step) -> None:
        """Check and apply one step."""
        kind = type(step)
        if kind is A.Parallel:
            self._judge(StepFacts(step))
            walk_parallel(self, step)
            return
        if kind is A.Sequence:
            walk_lane(self, step)
            return
        facts = self._handlers[kind](step)
        if facts.destroys:
            facts.survivors = self._survivors(facts.destroys)
        self._judge(facts)
        for survivors in facts.survivors:  # the last copy destroyed: gone for good (H102 stays quiet)
            for piece, others in survivors.copies:
                if not others and piece.rebuild is None:
                    piece.lost = True
        if self.deferred is not None:  # in a parallel block: after its last member
            self.deferred.extend(facts.effects)
        else:
            for fn, args in facts.effects:
                fn(*args)

    def _judge(self, facts: StepFacts) -> None:
        found = self.findings.extend
        for judge in _JUDGES_BY_STEP.get(type(facts.step), ()):
            found(judge(facts, self))

    # ---------------------------------------------------------------- resolving places

    def source(self, ref: Ref) -> Tuple[Place, Set[Piece]]:
        """The place a step reads and (a copy of) the pieces it finds there (an artifact that does
        not exist at this point holds none)."""
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
        return place, set(place.holds)

    def dest(self, ref: Ref, kind: Optional[str]) -> Place:
        """The place a step writes: a resource, or an artifact (also when the path lies inside a
        dir, unless a directory copy is put there, which merges into the dir)."""
        st = self.state
        if ref.resource is not None and (ref.sub is None or kind == DIR_COPY):
            return st.places[ref.resource.name]
        return st.artifact(ref.host, ref.path)

    def _read(self, facts: StepFacts, target: A.Target) -> None:
        facts.src_ref = self.ref(target)
        facts.src, facts.pieces = self.source(facts.src_ref)

    def _survivors(self, targets) -> List[Survivors]:
        """For each destroyed place, each piece first seen there and the places keeping a copy."""
        removal: Dict[Piece, Set[object]] = {}
        for place, pieces in targets:
            for p in pieces:
                removal.setdefault(p, set()).add(place.key)
        seen: Set[Piece] = set()
        out = []
        for place, pieces in targets:
            copies = []
            for p in sorted(pieces, key=_by_name):  # in order, so messages do not depend on set order
                if p not in seen:
                    seen.add(p)
                    copies.append((p, p.holders - removal[p]))
            out.append(Survivors(place, copies))
        return out

    # ---------------------------------------------------------------- live passes (H201)

    def _use(self, facts: StepFacts, name: str, what: str) -> None:
        """The step uses `name`: if that holds a live pass's provisional copy, the step breaks it."""
        prov = self.state.provisional.get(name)
        if prov is None or facts.step is prov.step:
            return
        del self.state.provisional[name]  # broken once, reported once
        facts.broken.append(BrokenLivePass(prov, USED, what))

    def _lose_source(self, facts: StepFacts, source: str, what: str) -> None:
        """The step takes `source` away: every provisional copy of it can no longer be completed."""
        for dest in [d for d, p in self.state.provisional.items() if p.source == source]:
            facts.broken.append(BrokenLivePass(self.state.provisional.pop(dest), SOURCE_GONE, what))

    def _lose_sources(self, facts: StepFacts, targets) -> None:
        """A step that destroys a whole dir whose provisional copy still waits for its final sync."""
        if not self.state.provisional:
            return
        for place, pieces in targets:
            if place.resource is not None and place.holds and pieces >= place.holds:
                self._lose_source(facts, place.key, f"deletes {place.key}")

    # ---------------------------------------------------------------- each kind of step

    def acted_on(self, s: A.Step) -> List[str]:
        """The services a stop or start acts on: those it names, and the declarations of the same Compose
        project that it takes along (`docker compose stop`/`up -d` of a whole project stops/starts every part)."""
        out = {ident.name: None for ident in s.services}
        for ident in s.services:
            out.update(dict.fromkeys(self.index.along.get(ident.name, ())))
        return list(out)

    def _stop(self, s: A.Stop) -> StepFacts:
        facts = StepFacts(s)
        for name in self.acted_on(s):
            facts.then(self._apply_stop, name, s)
        return facts

    def _start(self, s: A.Step) -> StepFacts:
        facts = StepFacts(s)
        for name in self.acted_on(s):
            svc = self.bound.resources[name]
            if self.state.provisional:
                for d in dict.fromkeys(svc.writes + svc.reads):
                    self._use(facts, d, f"starts {name}, which {'writes' if d in svc.writes else 'reads'} {d}")
            # restarting a service that runs starts nothing new
            if not (isinstance(s, A.Restart) and name in self.state.running and name not in self.block_started):
                late = [(d, nxt) for d in dict.fromkeys(svc.writes + svc.reads)
                        if (nxt := self.next_arrival(d)) is not None]
                if late:
                    facts.late.append((name, late))
                    # the data it runs on is reported once, here (H205), not again where it arrives (H202)
                    self.early_start.setdefault(name, set()).update(d for d, _ in late)
            facts.then(self._apply_start, name, s)
        return facts

    def _dump(self, s: A.Dump) -> StepFacts:
        facts = StepFacts(s)
        db = self.bound.resources[s.db.name]
        store = store_of(db)
        facts.copied = db
        self._use(facts, db.name, f"dumps {db.name}")
        facts.fmt = store.dump_format(s)
        facts.dst = self.dest(self.ref(s.to), None)
        facts.then(self._apply_copy, s, None, set(self.place_of(db.name).holds), facts.dst, store.artifact,
                   facts.fmt, True)
        return facts

    def _restore(self, s: A.Restore) -> StepFacts:
        facts = StepFacts(s)
        self._read(facts, s.source)
        facts.into = self.bound.resources[s.db.name]
        self._use(facts, s.db.name, f"restores into {s.db.name}")
        self._fill(facts, self.place_of(s.db.name))
        return facts

    def _fill(self, facts: StepFacts, place: Place) -> None:
        """restore / extract: the data read arrives in a declared resource (replacing it with `replace`)."""
        replace = facts.step.option("replace") is not None
        if replace and place.holds:
            facts.destroys = [(place, set(place.holds))]
        facts.then(self._apply_fill, facts.step, facts.src, facts.pieces, place, replace)

    def _drop(self, s: A.Drop) -> StepFacts:
        facts = StepFacts(s)
        dbp = self.place_of(s.db.name)
        facts.destroys = [(dbp, set(dbp.holds))]
        self._use(facts, s.db.name, f"drops {s.db.name}")
        self._lose_sources(facts, facts.destroys)
        facts.then(self._apply_destroy, s, [(dbp, set(dbp.holds))])
        return facts

    def _archive(self, s: A.Archive) -> StepFacts:
        facts = StepFacts(s)
        d = self.bound.resources[s.dir.name]
        facts.copied = d
        self._use(facts, d.name, f"copies {d.name}")
        facts.dst = self.dest(self.ref(s.to), None)
        pieces = self._left_out(s, d)
        facts.then(self._apply_copy, s, None, pieces, facts.dst, ARCHIVE, None, True)
        return facts

    def _extract(self, s: A.Extract) -> StepFacts:
        facts = StepFacts(s)
        self._read(facts, s.source)
        d = facts.into = self.bound.resources[s.dir.name]
        self._use(facts, d.name, f"writes into {d.name}")
        self._fill(facts, self.place_of(d.name))
        return facts

    def _sync(self, s: A.Sync) -> StepFacts:
        facts = StepFacts(s)
        src, dst = self.bound.resources[s.source.name], self.bound.resources[s.dest.name]
        pair = (src.name, dst.name)
        # A live pass and every later sync of the same pair mirror the source (rsync --delete).
        mirror = s.live or pair in self.live_pairs
        writers = tuple(self.running_writers(src.name))
        dropped = excludes(s)
        self._use(facts, src.name, f"copies {src.name}")
        new_prov = self._sync_provisional(facts, src, dst, writers, dropped)
        facts.into = dst
        pieces = self._left_out(s, src)
        dp = self.place_of(dst.name)
        gone: Set[Piece] = set()
        if mirror:  # what the destination holds that the source lacks is deleted (excluded subpaths stay)
            gone = {p for p in dp.holds if p not in pieces and not any(covers(p.subpath, x) for x in dropped)}
            if gone:
                facts.destroys = [(dp, gone)]
        facts.then(self._apply_sync, s, pieces, dp, gone, new_prov)
        return facts

    def _sync_provisional(self, facts: StepFacts, src: Resource, dst: Resource, writers,
                          dropped) -> Optional[Provisional]:
        """What a sync does to the provisional copy in its destination; the one a live pass makes."""
        s = facts.step
        st = self.state
        prov = st.provisional.get(dst.name)
        if prov is not None and prov.source != src.name:
            self._use(facts, dst.name, f"writes {src.name} into {dst.name}")
            prov = None
        if s.live:
            self.live_pairs.add((src.name, dst.name))
            if writers:  # torn, as H201 knows it, but provisional: a final sync must follow
                why = tuple((svc, *self.started_how(svc)) for svc in writers)
                return Provisional(s, src.name, dst.name, writers, why, dropped)
            return None
        facts.copied = src
        if prov is not None:
            if writers:  # this pass is torn too, and H201 says so here
                st.provisional.pop(dst.name, None)
            else:
                extra = [x for x in dropped if not any(x == y or x.startswith(y + "/") for y in prov.excludes)]
                if extra:  # the final pass leaves torn what the live pass copied
                    del st.provisional[prov.dest]
                    facts.broken.append(BrokenLivePass(prov, FINAL_EXCLUDES, extra))
        return None

    def _replicate(self, s: A.Replicate) -> StepFacts:
        """`replicate ... live` makes the target a provisional copy that follows its source; the final
        pass (with every writer stopped, H206 judges it) makes it whole."""
        facts = StepFacts(s)
        src, dst = self.bound.resources[s.source.name], self.bound.resources[s.dest.name]
        st = self.state
        facts.copied, facts.into = src, dst
        prov = st.provisional.get(dst.name)
        if prov is not None and not (prov.replication and prov.source == src.name):
            self._use(facts, dst.name, f"replicates {src.name} into {dst.name}")
            prov = None
        pieces = set(self.place_of(src.name).holds)
        dp = self.place_of(dst.name)
        if s.live:
            if prov is not None:  # started twice: the second start is the one the final pass ends
                self._use(facts, dst.name, f"starts replicating {src.name} into {dst.name} again")
            writers = tuple(self.running_writers(src.name))
            why = tuple((svc, *self.started_how(svc)) for svc in writers)
            new = Provisional(s, src.name, dst.name, writers, why, (), replication=True)
            self.replicated.add((src.name, dst.name))
            facts.then(self._apply_replicate, s, pieces, dp, new)
        else:
            facts.replication = prov
            facts.then(self._apply_replicate, s, pieces, dp, None)
        return facts

    def _left_out(self, s: A.Step, d: Resource) -> Set[Piece]:
        """What an archive or sync of `d` copies; remembers the pieces of `d` it leaves behind (H102)."""
        place = self.place_of(d.name)
        dropped = excludes(s)
        if not dropped:
            pieces = place.holds
        else:
            pieces = {p for p in place.holds if not any(covers(p.subpath, x) for x in dropped)}
        if not d.fresh:  # a fresh dir holds no data of its own to leave behind
            for p in self.pieces[d.name]:
                if p in pieces:
                    self.left_out.pop(p, None)
                elif any(covers(p.subpath, x) for x in dropped):
                    self.left_out[p] = (s, "excluded", s.option("exclude").span)
                else:
                    self.left_out[p] = (s, "absent", s.span)
        return set(pieces)

    def _transfer(self, s: A.Step) -> StepFacts:
        facts = StepFacts(s)
        self._read(facts, s.source)
        src = facts.src
        moves = isinstance(s, A.Move)
        if src.resource is not None:
            name = src.resource.name
            facts.copied = src.resource
            self._use(facts, name, f"{'moves' if moves else 'copies'} {name}")
            if moves and facts.src_ref.sub is None:
                self._lose_source(facts, name, f"moves {name} away")
        kind = src.kind if src.resource is None else (DIR_COPY if src.resource.is_dir else None)
        dst = facts.dst = self.dest(self.ref(s.dest), kind)
        if dst.resource is not None:
            facts.into = dst.resource
            self._use(facts, dst.resource.name, f"writes into {dst.resource.name}")
        if moves:
            facts.then(self._apply_move, s, src, facts.pieces, dst, kind)
            return facts
        opt = s.option("verify")
        checksum = not (opt is not None and isinstance(opt.value, A.Bool) and not opt.value.value)
        if not checksum:
            facts.unverified = opt
        facts.then(self._apply_copy, s, src, facts.pieces, dst, kind, src.fmt, checksum and src.verified)
        return facts

    def _delete(self, s: A.Delete) -> StepFacts:
        facts = StepFacts(s)
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
        for key in self.index.nested.get((ref.host, ref.path), ()):
            place = st.places.get(key)
            if place is not None and place.exists and key not in seen:
                seen.add(key)
                targets.append((place, set(place.holds)))
        facts.destroys = targets
        self._lose_sources(facts, targets)
        facts.then(self._apply_destroy, s, targets)
        return facts

    def _run(self, s: A.Run) -> StepFacts:
        facts = StepFacts(s)
        deletes = names(s, "deletes")
        if deletes:
            targets = [(self.place_of(n), set(self.place_of(n).holds)) for n in deletes]
            facts.destroys = targets
            self._lose_sources(facts, targets)
            facts.then(self._apply_destroy, s, targets)
        writes, reads = names(s, "writes"), names(s, "reads")
        if self.state.provisional:
            facts.writes_replicated = [p for p in self.state.provisional.values()
                                       if p.replication and p.source in writes and p.source not in deletes
                                       # MariaDB's binlog carries schema changes (DDL); logical replication not
                                       and self.bound.resources[p.source].kind != "mysql"]
            for n in dict.fromkeys(reads + writes):
                if n not in deletes:  # what it deletes whole holds no torn copy any more
                    self._use(facts, n, f"{'writes' if n in writes else 'reads'} {n}")
        if writes or reads:
            facts.then(self._apply_run, writes, reads)
        return facts

    def _verify_http(self, s: A.VerifyHttp) -> StepFacts:
        facts = StepFacts(s)
        via = s.option("via")
        if via is not None and isinstance(via.value, A.Ref):
            facts.then(self.state.http_via.add, via.value.name)
            return self._verify(facts, (via.value.name,))
        res = self.bound.resources
        return self._verify(facts, tuple({res[n].host for n in self.state.running}))

    def _verify_run(self, s: A.VerifyRun) -> StepFacts:
        return self._verify(StepFacts(s), (s.host.name,))

    def _verify(self, facts: StepFacts, hosts) -> StepFacts:
        """A verify checks what is on `hosts`; one of a provisional copy would vouch for a torn copy."""
        st = self.state
        for name in [n for n in st.provisional if st.places[n].host in hosts]:
            self._use(facts, name, f"checks {st.places[name].host}, where {name} is still torn")
        facts.then(self._apply_checked, hosts)
        return facts

    def _judged_only(self, s: A.Step) -> StepFacts:
        """`verify dns`, `confirm`: the checks judge them; the data does not change."""
        return StepFacts(s)

    # ---------------------------------------------------------------- effects

    def _apply_stop(self, name, s):
        self.state.running.discard(name)
        self.state.started_by.pop(name, None)
        self.early_start.pop(name, None)
        self.last_stop[name] = s

    def _apply_start(self, name, s):
        self.state.running.add(name)
        self.state.started_by.setdefault(name, s)

    def _apply_copy(self, s, src: Optional[Place], pieces, dst: Place, kind, fmt, verified):
        st = self.state
        if src is not None:
            src.consumed = True
        if dst.resource is not None:
            self._arrive(s, dst, pieces)
            st.put(dst, pieces, self.pos, replace=not dst.resource.is_dir)
        else:
            st.put(dst, pieces, self.pos, replace=True)
        dst.kind, dst.fmt, dst.producer, dst.verified, dst.gone = kind, fmt, s, verified, None

    def _apply_fill(self, s, src: Optional[Place], pieces, dst: Place, replace: bool):
        """restore / extract / sync: data arrives in a declared resource."""
        if src is not None:
            src.consumed = True
        self._arrive(s, dst, pieces)
        self.state.put(dst, pieces, self.pos, replace=replace)

    def _apply_sync(self, s, pieces, dst: Place, gone, prov: Optional[Provisional]):
        st = self.state
        if gone:
            st.remove(dst, gone)
        self._apply_fill(s, None, pieces, dst, False)
        if prov is not None:
            st.provisional[dst.key] = prov
        else:  # a consistent pass (or a torn one, reported as H201 where it runs)
            st.provisional.pop(dst.key, None)

    def _apply_replicate(self, s, pieces, dst: Place, prov: Optional[Provisional]):
        self._apply_fill(s, None, pieces, dst, False)
        if prov is not None:
            self.state.provisional[dst.key] = prov
        else:
            self.state.provisional.pop(dst.key, None)

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

    def _apply_run(self, writes, reads):
        for n in writes:
            self.place_of(n).written_at = self.pos
        for n in reads:
            self.place_of(n).consumed = True

    def _apply_checked(self, hosts):
        for h in hosts:
            self.state.checked_at[h] = self.pos

    def _arrive(self, s, dst: Place, pieces):
        name = dst.resource.name
        for p in pieces:
            origin = p.resource.name
            if origin != name:
                self.first_arrival.setdefault((name, origin), s)


_HANDLERS = {
    A.Stop: "_stop", A.Start: "_start", A.Restart: "_start", A.Dump: "_dump", A.Restore: "_restore",
    A.Archive: "_archive", A.Extract: "_extract", A.Sync: "_sync", A.Replicate: "_replicate",
    A.Transfer: "_transfer",
    A.Move: "_transfer", A.Delete: "_delete", A.Drop: "_drop", A.Run: "_run",
    A.VerifyHttp: "_verify_http", A.VerifyDns: "_judged_only", A.VerifyRun: "_verify_run",
    A.Confirm: "_judged_only",
}
