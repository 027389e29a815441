"""The walk through `parallel { }` blocks and their lanes (`sequence { }`).

A block is checked as unordered: every member sees the state before the block
(with every service started anywhere in the block possibly running), and the
members' effects are applied after the last one. A lane's steps see each other
in order; the rest of the block sees none of them until the block is over.
"""

from __future__ import annotations

from typing import Set, Tuple

from mdsl.check.index import names
from mdsl.check.state import NEVER
from mdsl.syntax import ast as A


def walk_parallel(walk, block: A.Parallel) -> None:
    """Walk a block's members against the state before it, then apply their effects."""
    if walk.deferred is not None:  # a nested block: its members are members of the outer one
        for m in block.steps:
            walk.dispatch(m)
        return
    running = walk.state.running
    started = {}
    for m in A.walk_steps(block.steps):
        if isinstance(m, (A.Start, A.Restart)):
            for name in walk.acted_on(m):
                if name not in running:
                    started.setdefault(name, m)
    # (a block inside a lane keeps what the rest of the lane's block started)
    outer_started, outer_checks = walk.block_started, walk.lane_checks
    walk.deferred, walk.block_started, walk.lane_checks = [], {**outer_started, **started}, []
    running.update(started)
    base = walk.pos
    try:
        for m in block.steps:
            walk.dispatch(m)
    finally:
        walk.pos = base
        running.difference_update(started)
        effects, walk.deferred, walk.block_started = walk.deferred, None, outer_started
    for fn, args in effects:
        fn(*args)
    if walk.lane_checks:
        _lanes_checked(walk, base)
    walk.lane_checks = outer_checks


def walk_lane(walk, lane: A.Sequence) -> None:
    """A lane of a parallel block: its steps in order, each seeing the effects of those before it.

    The block's other members and lanes see none of them until the block is over, as for a
    member: the lane is walked on the shared state (lanes touch disjoint data, H204), then
    what it changed beyond its own data (which services run, which hosts were verified) is
    put back and applied after the block. A service the lane starts is not running before
    that start, for the lane; for everything else in the block it may be running throughout.
    """
    if walk.deferred is None:  # not in a parallel block (the grammar allows none): plain steps
        for s in lane.steps:
            walk.pos = walk.index.positions[id(s)]
            walk.dispatch(s)
        return
    st = walk.state
    outer_started, outer_deferred, outer_pos = walk.block_started, walk.deferred, walk.pos
    mine = {n for s in lane.steps if isinstance(s, (A.Start, A.Restart)) for n in walk.acted_on(s)}
    mine &= set(outer_started)
    running0, started_by0 = set(st.running), dict(st.started_by)
    checked0, via0 = dict(st.checked_at), set(st.http_via)
    st.running.difference_update(mine)
    at_start = set(st.running)
    walk.block_started = {k: v for k, v in outer_started.items() if k not in mine}
    walk.deferred = None
    try:
        for s in lane.steps:
            walk.pos = walk.index.positions[id(s)]
            walk.dispatch(s)
    finally:
        running1, started_by1 = set(st.running), dict(st.started_by)
        checked1, via1 = dict(st.checked_at), set(st.http_via)
        _restore(st.running, running0)
        _restore(st.started_by, started_by0)
        _restore(st.checked_at, checked0)
        _restore(st.http_via, via0)
        walk.block_started, walk.deferred, walk.pos = outer_started, outer_deferred, outer_pos
    began = {n: started_by1.get(n) for n in running1 - at_start}
    walk.deferred.append((_lane_done, (walk, at_start - running1, began, via1 - via0)))
    checks = {h: t for h, t in checked1.items() if checked0.get(h) != t}
    if checks and lane.steps:
        ticks = [walk.index.positions[id(s)] for s in lane.steps]
        walk.lane_checks.append((ticks[0], ticks[-1], checks))


def _restore(live, saved) -> None:
    """Put a set or dict of the state back to what it was, in place (others hold references)."""
    live.clear()
    live.update(saved)


def _lane_done(walk, stopped, began, via) -> None:
    st = walk.state
    for n in stopped:
        st.running.discard(n)
        st.started_by.pop(n, None)
    for n, s in began.items():
        st.running.add(n)
        st.started_by.setdefault(n, s)
    st.http_via.update(via)


def _lanes_checked(walk, base: int) -> None:
    """After a block with lanes: a verify in a lane vouches for what was there before the block
    and for what its own lane wrote before it, never for what the rest of the block wrote."""
    st = walk.state
    for place in st.places.values():
        written = place.written_at
        if written <= base:  # before the block, or by a plain member (they share the block's position)
            continue
        for first, last, checks in walk.lane_checks:
            if first <= written <= last:
                t = checks.get(place.host)
                if t is not None and written < t:
                    place.written_at = base - 0.5  # checked by the block's verify, below
                break
    for _, _, checks in walk.lane_checks:
        for h in checks:
            if st.checked_at.get(h, NEVER) < base:
                st.checked_at[h] = base


def touches(walk, s: A.Step) -> Tuple[Set[object], Set[object]]:
    """What a step reads and writes, coarsely (resources, artifact paths, services), for H204."""
    kind = type(s)
    if kind is A.Parallel or kind is A.Sequence:  # a nested block or a lane: all its steps together
        reads, writes = set(), set()
        for m in s.steps:
            member_reads, member_writes = touches(walk, m)
            reads |= member_reads
            writes |= member_writes
        return reads, writes
    how = _TOUCHES.get(kind)
    return how(walk, s) if how is not None else (set(), set())


def _delete_touches(walk, s: A.Delete):
    ref = walk.ref(s.target)
    return set(), {ref.key, *walk.index.nested.get((ref.host, ref.path), ())}


_TOUCHES = {
    A.Start: lambda walk, s: (set(), {("service", n) for n in walk.acted_on(s)}),
    A.Stop: lambda walk, s: (set(), {("service", n) for n in walk.acted_on(s)}),
    A.Restart: lambda walk, s: (set(), {("service", n) for n in walk.acted_on(s)}),
    A.Dump: lambda walk, s: ({s.db.name}, {walk.ref(s.to).key}),
    A.Archive: lambda walk, s: ({s.dir.name}, {walk.ref(s.to).key}),
    A.Restore: lambda walk, s: ({walk.ref(s.source).key}, {s.db.name}),
    A.Extract: lambda walk, s: ({walk.ref(s.source).key}, {s.dir.name}),
    A.Sync: lambda walk, s: ({s.source.name}, {s.dest.name}),
    A.Replicate: lambda walk, s: ({s.source.name}, {s.dest.name}),
    A.Transfer: lambda walk, s: ({walk.ref(s.source).key}, {walk.ref(s.dest).key}),
    A.Move: lambda walk, s: (set(), {walk.ref(s.source).key, walk.ref(s.dest).key}),
    A.Delete: _delete_touches,
    A.Drop: lambda walk, s: (set(), {s.db.name}),
    A.Run: lambda walk, s: (set(names(s, "reads")), set(names(s, "writes") + names(s, "deletes"))),
}
