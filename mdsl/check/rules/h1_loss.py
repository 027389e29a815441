"""H1: data loss. Judged when a step destroys or overwrites a place's content,
and at the end of the walk (what never reached its target). Each rule is
followed by its checks; `CHECKS` at the bottom lists them in order."""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional

from mdsl.check.rebuilds import find, plan_rebuilds
from mdsl.check.rules.base import ERROR, INFO, WARNING, Rule
from mdsl.check.rules.examples import MOVE, plan
from mdsl.check.state import ARCHIVE, Piece, Place, show_pieces
from mdsl.findings import Finding
from mdsl.model import Resource
from mdsl.stores.registry import store_of
from mdsl.syntax import ast as A

SEED = ("the seed (gianarb, 'From Ubuntu to NixOS, the story of a mastodon migration'): the `cache` folder "
        "of public/system looked ephemeral and was deleted; it held every avatar and header.")

# The steps that destroy what a place held.
DESTROYING = (A.Delete, A.Drop, A.Restore, A.Extract, A.Run, A.Sync)

_VERBS = {A.Delete: "`delete`", A.Drop: "`drop`", A.Restore: "`restore ... replace`",
          A.Extract: "`extract ... replace`", A.Run: "`run` with `deletes`",
          A.Sync: "a mirroring `sync` (`live`, or after a `live` pass: rsync --delete)"}


def _verb(step: A.Step) -> str:
    return _VERBS.get(type(step), f"`{step.keyword}`")


# ---------------------------------------------------------------- H101

H101 = Rule(
    "H101", "a step destroys data that has no other copy", ERROR,
    summary=(
        "`delete`, `drop`, `restore ... replace`, `extract ... replace` and a `run` declaring `deletes` "
        "destroy what the place held. When that was the only copy of some data (a database, a dir, or "
        "a subpath of one such as public/system/cache), the data is gone. The checker follows every "
        "piece of data through the plan and knows which places hold a copy when the step runs. Data "
        "of a resource declared `fresh = true` is disposable, and a subpath declared "
        "`derived \"SUB\" rebuild \"CMD\"` can be rebuilt, so destroying those is not a loss."),
    bad=plan(MOVE.replace('  archive', '  delete old:"/srv/app/files/cache"\n  archive', 1)),
    fixed=plan(MOVE),
    source=SEED + " Its author's advice: 'move the cache folder around, way easier than figure out how "
                  "to get it back.'",
)


@H101.on(*DESTROYING)
def only_copy_destroyed(facts, walk) -> Iterator[Finding]:
    """A destroyed piece had no copy anywhere else (and cannot be rebuilt)."""
    for survivors in facts.survivors:
        lost = [p for p, others in survivors.copies if not others and p.rebuild is None and not p.lost]
        if lost:
            yield _lost(walk, facts.step, survivors.place, lost)


def _lost(walk, step: A.Step, place: Place, lost: List[Piece]) -> Finding:
    names = show_pieces(lost, walk.pieces)
    label = f"{names} exists only here"
    if place.resource is not None and all(p.resource is not place.resource for p in lost):
        label += f" (in {place.resource.name})"
    return H101.finding(f"{_verb(step)} destroys data that has no other copy", step.span, label=label,
                        notes=_lost_notes(walk, lost), help=_lost_help(step, place, lost))


def _lost_notes(walk, lost: List[Piece]) -> List[str]:
    """Per resource: why no copy is left (excluded from a copy, never copied, or copies destroyed)."""
    notes = []
    for res_name in sorted({p.resource.name for p in lost}):
        ps = [p for p in lost if p.resource.name == res_name]
        res = ps[0].resource
        excluded = [p for p in ps if walk.left_out.get(p, (None, ""))[1] == "excluded"]
        if excluded:
            s = walk.left_out[excluded[0]][0]
            notes.append(f"{show_pieces(excluded, walk.pieces)} was excluded from the `{s.keyword}` at line "
                         f"{s.span.line}")
        elif not any(p.copied for p in ps):
            where = f"{res.host}:{res.path}" if getattr(res, "path", "") else res.host
            what = "dumped" if res.is_database else "archived, synced"
            notes.append(f"{res.name} ({where}) was never {what} or transferred before this step")
        else:
            notes.append(f"every other copy of {show_pieces(ps, walk.pieces)} was destroyed or overwritten "
                         f"before this step")
    return notes


def _lost_help(step: A.Step, place: Place, lost: List[Piece]) -> str:
    res = lost[0].resource
    if isinstance(step, A.Sync):
        target = place.resource.name
        return (f"a `live` sync and the syncs after it make {target} a mirror of {step.source.name}, deleting "
                f"what it holds that {step.source.name} lacks: if that is disposable, declare `fresh = true` "
                f"on {target}; otherwise copy it elsewhere first")
    if isinstance(step, (A.Restore, A.Extract)) or (place.resource is not None and place.resource is not res
                                                   and isinstance(step, A.Run)):
        target = place.resource.name
        return (f"if the current content of {target} is disposable, declare `fresh = true` on {target}; "
                f"otherwise copy it somewhere first")
    if place.resource is None:
        return "restore, extract or transfer this artifact before deleting it"
    if any(p.subpath is not None for p in lost) and res.is_dir and place.resource is res:
        sub = min(p.subpath for p in lost if p.subpath is not None)
        return (f"archive or move it first (`move` keeps it on the host), or, if it can be rebuilt where the "
                f"data goes, declare `derived \"{sub}\" rebuild \"CMD\"` on {res.name} and exclude it from "
                f"the copy")
    copy = "dump" if res.is_database else "archive or sync"
    return (f"{copy} and transfer it first; if its content is disposable, declare `fresh = true` "
            f"on {place.resource.name if place.resource else res.name}")


# ---------------------------------------------------------------- H102

H102 = Rule(
    "H102", "a subpath never reaches the target", WARNING,
    summary=(
        "An `archive` or `sync` that excludes a subpath, or a copy made after the subpath was moved "
        "away, leaves that part of the data behind: the target never gets it, and once the old host "
        "is gone it is lost. When the subpath is declared `derived \"SUB\" rebuild \"CMD\"` on the "
        "dir, leaving it behind is intended: apply runs CMD on the host where the data went, right after "
        "the service writing it starts (an implicit step, shown by `mdsl plan`), unless the plan runs CMD "
        "itself; this is then an info. It stays a warning when CMD can never run: no service writing "
        "the target starts after the copy."),
    bad=plan(MOVE.replace('"/root/files.tar.gz"\n', '"/root/files.tar.gz" exclude "cache"\n', 1)),
    fixed=plan(MOVE),
    source=SEED + " Excluding it from the archive would have lost the same avatars more quietly.",
    also=(INFO,),
)


@H102.at_end
def left_behind(walk) -> Iterator[Finding]:
    """Pieces of a dir that reached a target only in part, once the plan is over."""
    st = walk.state
    reported = set()
    for name, r in walk.bound.resources.items():
        if not r.is_data:
            continue
        place = st.places[name]
        origins = {p.resource.name for p in place.holds if p.resource is not r and p.resource.is_dir}
        for origin in sorted(origins):
            if walk.bound.resources[origin].fresh:
                continue
            for p in walk.pieces[origin]:
                if p in place.holds or p.lost or p in reported or _carried_by_its_store(walk, p, place):
                    continue
                reported.add(p)
                yield _left_behind(walk, p, place, origin)


def store_in_dir(walk, p: Piece) -> Optional[Resource]:
    """The file database (or one of its companion files, a SQLite `-wal`) a dir's piece is: declared at that
    path inside the dir, it is that store's piece, which its own dump and restore carry."""
    d = p.resource
    if p.subpath is None or not d.is_dir:
        return None
    files = walk.memo.get("store files")
    if files is None:  # (host, path) -> the file database there, and (host, path + companion) too
        files = walk.memo["store files"] = {}
        for r in walk.bound.resources.values():
            if r.is_database and getattr(r, "path", ""):
                for suffix in ("",) + store_of(r).companions:
                    files[(r.host, r.path + suffix)] = r
    return files.get((d.host, d.path.rstrip("/") + "/" + p.subpath)) if files else None


def _carried_by_its_store(walk, p: Piece, target: Place) -> bool:
    """The piece is a store's file, and that store's data reached a database on the target's host."""
    store = store_in_dir(walk, p)
    if store is None:
        return False
    st = walk.state
    return any(r.is_database and r.host == target.host and any(q.resource is store for q in st.places[n].holds)
               for n, r in walk.bound.resources.items())


def _left_behind(walk, p: Piece, target: Place, origin: str) -> Finding:
    rec = walk.left_out.get(p)
    if rec is None:
        step = walk.first_arrival[(target.resource.name, origin)]
        rec = (step, "partial", step.span)
    step, why, span = rec
    tname = target.resource.name
    if p.rebuild is not None:
        return _rebuild_reminder(walk, p, target, step, span)
    if why == "excluded":
        label = f'excludes "{p.subpath}"'
        notes = (f"this `{step.keyword}` leaves {p.name} out, so {tname} never gets it",)
    elif why == "absent":
        label = f"{p.name} is no longer in {origin} here"
        notes = (f"{p.name} was moved or deleted before this `{step.keyword}`, so {tname} never gets it",)
    else:
        label = f"only part of {origin} arrives here"
        notes = (f"{p.name} is not copied into {tname} by any step",)
    store = store_in_dir(walk, p)
    if store is not None:
        notes += (f"it is {store.name}'s file: `dump {store.name}` and a `restore` on {target.host} carry it "
                  f"(then leaving it out of the copy is right)",)
    sub = p.subpath or "SUB"
    return H102.finding(
        f"{p.name} never reaches {tname}", span, label=label, notes=notes,
        help=(f"copy it too, or, if it can be rebuilt where the data goes, declare "
              f"`derived \"{sub}\" rebuild \"CMD\"` on {origin} and run CMD after the service starts"))


def _rebuild_reminder(walk, p: Piece, target: Place, step: A.Step, span: A.Span) -> Finding:
    """A derived subpath left behind: an info when its rebuild runs (the plan's `run`, or apply's own
    step after the service starts: mdsl.check.rebuilds), a warning when it can never run."""
    got = walk.memo.get("rebuilds")
    if got is None:
        got = walk.memo["rebuilds"] = plan_rebuilds(walk.bound)
    rb = find(got, p.resource.name, p.subpath, target.resource.name)
    tname = target.resource.name
    if rb is not None and rb.by_plan is not None:
        return H102.finding(f"{p.name} is left behind: `{p.rebuild}` rebuilds it on {target.host}", span,
                            label=f"leaves {p.name} behind", severity=INFO,
                            notes=(f"the `run` at line {rb.by_plan.span.line} rebuilds it",))
    if rb is not None and rb.after is not None:
        return H102.finding(
            f"{p.name} is left behind: apply runs `{p.rebuild}` on {target.host} after {rb.service} starts",
            span, label=f"leaves {p.name} behind", severity=INFO,
            notes=(f"`mdsl plan` shows it as step {rb.after + 1}+1, after the `{rb.start.keyword}` at line "
                   f"{rb.start.span.line}; it is journaled and resumed like any step",))
    writers = walk.index.writers.get(tname) or []
    why = (f"no service declares `writes = [{tname}]`" if not writers
           else f"no `start` of {' or '.join(writers)} follows this step")
    return H102.finding(
        f"{p.name} is left behind and `{p.rebuild}` can never run on {target.host}", span,
        label=f"leaves {p.name} behind",
        notes=(f"apply runs a derived rebuild after the service writing {tname} starts, and {why}",),
        help=(f"start the service writing {tname} after this step, or add `run {target.host} \"{p.rebuild}\"` "
              f"where it can run"))


# ---------------------------------------------------------------- H103

H103 = Rule(
    "H103", "source data destroyed before a copy of it was proven", ERROR,
    summary=(
        "Dropping or deleting the original data leaves no way back unless some copy of it has been "
        "proven: restored or extracted into declared data (a database, a dir) and checked there by a "
        "`verify` step. A dump or an archive that nobody has restored yet is not a way back, wherever "
        "it lies: it may be truncated, or fail to restore (a version mismatch, a missing role), and "
        "that is found out only when it is needed. Nor is a restored copy that no `verify` checked: a "
        "transfer's checksum proves the bytes arrived, not that the service works on them. Restore, "
        "then run `verify http ... via = HOST` or `verify run HOST ...` there, before the original "
        "goes. (When no other copy exists at all, H101 is reported instead.)"),
    bad=plan(MOVE + '  drop old_db\n'),
    fixed=plan(MOVE + '  verify http "https://app.example.net/health" via = new status = 200\n  drop old_db\n'),
    source="Mastodon's migration guide (docs.joinmastodon.org/admin/migrating): keep the old server "
           "until the new one works.",
)


@H103.on(*DESTROYING)
def original_destroyed_unproven(facts, walk) -> Iterator[Finding]:
    """The original goes while no copy of it is in declared data that a `verify` checked since."""
    st = walk.state
    for survivors in facts.survivors:
        unproven: List[Piece] = []
        copies: Dict[object, Place] = {}
        for p, others in survivors.copies:
            # (the original is always one of a piece's holders: destroyed here when no longer among them)
            if not others or p.origin is None or p.origin in others:
                continue
            there = [st.places[k] for k in others]
            if not any(c.resource is not None and st.checked(c) for c in there):
                unproven.append(p)
                for c in there:
                    copies[c.key] = c
        if unproven:
            yield _unproven(walk, facts.step, unproven, sorted(copies.values(), key=Place.show))


def _unproven(walk, step, pieces: List[Piece], copies: List[Place]) -> Finding:
    names = show_pieces(pieces, walk.pieces)
    restored = [c for c in copies if c.resource is not None]
    if restored:  # in declared data, but not checked since
        hosts = sorted({c.host for c in restored})
        return H103.finding(
            f"{_verb(step)} destroys {names} before any `verify` checked its copies on {', '.join(hosts)}",
            step.span, label="no step has checked the other copies yet",
            notes=("other copies: " + ", ".join(c.show() for c in copies),
                   "a transfer's checksum proves the bytes arrived, not that the service works there"),
            help=(f'add `verify http "URL" via = {hosts[0]}` or `verify run {hosts[0]} "CMD"` before this step, '
                  f"and keep the old data until the new host works"))
    one = len(copies) == 1
    what = ("copy is " if one else "copies are ") + ", ".join(_artifact(c) for c in copies)
    restored = "extracted" if all(c.kind == ARCHIVE for c in copies) else "restored"
    return H103.finding(
        f"{_verb(step)} destroys {names} while its only other {what}, which no step has {restored} yet",
        step.span, label="no copy has been restored and checked yet",
        notes=tuple(f"{c.show()} was written by the `{c.producer.keyword}` at line {c.producer.span.line}"
                    for c in copies if c.producer is not None) + (
            "a dump or archive is not a way back until it was restored and a `verify` checked the result: "
            "it may be truncated, or fail to restore (a version mismatch, a missing role)",),
        help=(f"restore {'it' if one else 'one of them'} where the data goes and check it there "
              f"(`verify http \"URL\" via = HOST` or `verify run HOST \"CMD\"`) before this step; until then "
              f"keep {names}"))


def _artifact(place: Place) -> str:
    """`old:/root/app.dump (a PostgreSQL dump)`: an artifact and what it holds, as far as the walk knows."""
    return f"{place.show()} ({place.kind})" if place.kind else place.show()


# ---------------------------------------------------------------- H104

H104 = Rule(
    "H104", "an artifact is written twice before it was used", ERROR,
    summary=(
        "Two steps write the same artifact path (a dump, an archive, a transferred copy) and nothing "
        "read, copied or moved the first content in between: the first is silently overwritten. "
        "Usually two steps were meant to write different files."),
    bad=plan('  stop old_app\n'
             '  dump old_db to old:"/root/app.dump"\n'
             '  archive old_files to old:"/root/app.dump"\n'
             '  transfer old:"/root/app.dump" to new:"/root/app.dump"\n'
             '  restore new:"/root/app.dump" into new_db replace\n'
             '  start new_app\n'),
    fixed=plan(MOVE),
    source="a common slip when copying a plan's steps and editing only the first line.",
)


@H104.on(A.Dump, A.Archive, A.Transfer, A.Move)
def artifact_overwritten(facts, walk) -> Iterator[Finding]:
    """An artifact is written again before anything used what was written there."""
    dst = facts.dst
    if dst.resource is not None or not dst.exists or dst.consumed or dst.producer is None:
        return
    step, prev = facts.step, dst.producer
    what = show_pieces(dst.holds, walk.pieces) or "its content"
    yield H104.finding(
        f"`{step.keyword}` overwrites {dst.show()} before its content was used", step.span,
        label="written here a second time",
        notes=(f"line {prev.span.line}: `{prev.keyword}` put {what} there, and no step restored, "
               f"extracted, transferred or moved it since",),
        help="write each artifact to its own path, or use the first one before writing the path again")


# The checks of this family, in the order they judge a step (mdsl.check.catalog.CHECKS).
CHECKS = (only_copy_destroyed, left_behind, original_destroyed_unproven, artifact_overwritten)
