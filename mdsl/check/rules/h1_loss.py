"""H1: data loss. Judged when a step destroys or overwrites a place's content,
and at the end of the walk (what never reached its target)."""

from __future__ import annotations

import bisect
from typing import Dict, List, Set, Tuple

from mdsl.check.rules.base import E, I, W, Rule
from mdsl.check.rules.examples import MOVE, plan
from mdsl.check.state import Piece, Place, show_pieces
from mdsl.syntax import ast as A

SEED = ("the seed (gianarb, 'From Ubuntu to NixOS, the story of a mastodon migration'): the `cache` folder "
        "of public/system looked ephemeral and was deleted; it held every avatar and header.")

H101 = Rule(
    "H101", "a step destroys data that has no other copy", E,
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

H102 = Rule(
    "H102", "a subpath never reaches the target", W,
    summary=(
        "An `archive` or `sync` that excludes a subpath, or a copy made after the subpath was moved "
        "away, leaves that part of the data behind: the target never gets it, and once the old host "
        "is gone it is lost. When the subpath is declared `derived \"SUB\" rebuild \"CMD\"` on the "
        "dir, leaving it behind is intended and this is an info reminder that CMD must run where the "
        "data goes after the service starts (a warning when no later `run` step runs CMD)."),
    bad=plan(MOVE.replace('"/root/files.tar.gz"\n', '"/root/files.tar.gz" exclude "cache"\n', 1)),
    fixed=plan(MOVE),
    source=SEED + " Excluding it from the archive would have lost the same avatars more quietly.",
    also=(I,),
)

H103 = Rule(
    "H103", "source data destroyed before the target was verified", E,
    summary=(
        "Dropping or deleting the original data while its only other copies are on the new host, "
        "and no `verify` step has yet checked that host, leaves no way back if the new host does not "
        "work: a dump that does not restore, an app that will not start on the new schema. A "
        "transfer's checksum proves the bytes arrived, not that the service works. Run `verify http "
        "... via = HOST` or `verify run HOST ...` first. (When no other copy exists at all, H101 "
        "is reported instead.)"),
    bad=plan(MOVE + '  drop old_db\n'),
    fixed=plan(MOVE + '  verify http "https://app.example.net/health" via = new status = 200\n  drop old_db\n'),
    source="Mastodon's migration guide (docs.joinmastodon.org/admin/migrating): keep the old server "
           "until the new one works.",
)

H104 = Rule(
    "H104", "an artifact is written twice before it was used", E,
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

RULES = (H101, H102, H103, H104)

_VERBS = {A.Delete: "`delete`", A.Drop: "`drop`", A.Restore: "`restore ... replace`",
          A.Extract: "`extract ... replace`", A.Run: "`run` with `deletes`",
          A.Sync: "a mirroring `sync` (`live`, or after a `live` pass: rsync --delete)"}


def _names(w, pieces) -> str:
    return show_pieces(pieces, w.pieces)


def destroyed(w, step: A.Step, targets: List[Tuple[Place, Set[Piece]]]) -> None:
    """H101 when a destroyed piece has no other copy; else H103 when the original goes before the
    copies on another host were verified."""
    st = w.state
    removal: Dict[Piece, Set[object]] = {}
    for place, pieces in targets:
        for p in pieces:
            removal.setdefault(p, set()).add(place.key)
    seen: Set[Piece] = set()
    for place, pieces in targets:
        lost, unverified = [], []
        others_all: Dict[object, Place] = {}
        for p in pieces:
            if p in seen:
                continue
            seen.add(p)
            gone = removal[p]
            others = p.holders - gone
            if not others:
                if p.rebuild is None and not p.lost:
                    lost.append(p)
            elif p.origin is not None and p.origin in gone:
                copies = [st.places[k] for k in others]
                if any(c.host != place.host for c in copies) and not any(st.checked(c) for c in copies):
                    unverified.append(p)
                    for c in copies:
                        others_all[c.key] = c
        if lost:
            for p in lost:
                p.lost = True
            _report_lost(w, step, place, lost)
        if unverified:
            _report_unverified(w, step, place, unverified, list(others_all.values()))


def _report_lost(w, step, place: Place, lost: List[Piece]) -> None:
    names = _names(w, lost)
    verb = _VERBS.get(type(step), f"`{step.keyword}`")
    label = f"{names} exists only here"
    if place.resource is not None and all(p.resource is not place.resource for p in lost):
        label += f" (in {place.resource.name})"
    notes = []
    for res_name in sorted({p.resource.name for p in lost}):
        ps = [p for p in lost if p.resource.name == res_name]
        res = ps[0].resource
        excluded = [p for p in ps if w.left_out.get(p, (None, ""))[1] == "excluded"]
        if excluded:
            s = w.left_out[excluded[0]][0]
            notes.append(f"{_names(w, excluded)} was excluded from the `{s.keyword}` at line {s.span.line}")
        elif not any(p.copied for p in ps):
            where = f"{res.host}:{res.path}" if getattr(res, "path", "") else res.host
            what = "dumped" if res.is_database else "archived, synced"
            notes.append(f"{res.name} ({where}) was never {what} or transferred before this step")
        else:
            notes.append(f"every other copy of {_names(w, ps)} was destroyed or overwritten before this step")
    res = lost[0].resource
    if isinstance(step, A.Sync):
        target = place.resource.name
        help = (f"a `live` sync and the syncs after it make {target} a mirror of {step.source.name}, deleting "
                f"what it holds that {step.source.name} lacks: if that is disposable, declare `fresh = true` "
                f"on {target}; otherwise copy it elsewhere first")
    elif isinstance(step, (A.Restore, A.Extract)) or (place.resource is not None and place.resource is not res
                                                     and isinstance(step, A.Run)):
        target = place.resource.name
        help = (f"if the current content of {target} is disposable, declare `fresh = true` on {target}; "
                f"otherwise copy it somewhere first")
    elif place.resource is None:
        help = "restore, extract or transfer this artifact before deleting it"
    elif any(p.subpath is not None for p in lost) and res.is_dir and place.resource is res:
        sub = next(p.subpath for p in lost if p.subpath is not None)
        help = (f"archive or move it first (`move` keeps it on the host), or, if it can be rebuilt where the "
                f"data goes, declare `derived \"{sub}\" rebuild \"CMD\"` on {res.name} and exclude it from "
                f"the copy")
    else:
        copy = "dump" if res.is_database else "archive or sync"
        help = (f"{copy} and transfer it first; if its content is disposable, declare `fresh = true` "
                f"on {place.resource.name if place.resource else res.name}")
    w.report(H101.finding(step.span, f"{verb} destroys data that has no other copy", label=label,
                          notes=notes, help=help))


def _report_unverified(w, step, place: Place, pieces: List[Piece], copies: List[Place]) -> None:
    verb = _VERBS.get(type(step), f"`{step.keyword}`")
    hosts = sorted({c.host for c in copies if c.host != place.host})
    host = hosts[0]
    w.report(H103.finding(
        step.span, f"{verb} destroys {_names(w, pieces)} before any `verify` checked its copies on "
                   f"{', '.join(hosts)}",
        label="no step has checked the other copies yet",
        notes=("other copies: " + ", ".join(sorted(c.show() for c in copies)),
               "a transfer's checksum proves the bytes arrived, not that the service works there"),
        help=(f'add `verify http "URL" via = {host}` or `verify run {host} "CMD"` before this step, '
              f"and keep the old data until the new host works")))


def overwrite(w, step: A.Step, dst: Place) -> None:
    """H104: an artifact is written again before anything used what was written there."""
    if dst.resource is not None or not dst.exists or dst.consumed or dst.producer is None:
        return
    prev = dst.producer
    what = _names(w, dst.holds) or "its content"
    w.report(H104.finding(
        step.span, f"`{step.keyword}` overwrites {dst.show()} before its content was used",
        label="written here a second time",
        notes=(f"line {prev.span.line}: `{prev.keyword}` put {what} there, and no step restored, "
               f"extracted, transferred or moved it since",),
        help="write each artifact to its own path, or use the first one before writing the path again"))


def at_end(w) -> None:
    """H102: pieces of a dir that reached a target only in part."""
    st = w.state
    reported: Set[Piece] = set()
    for name, r in w.bound.resources.items():
        if not r.is_data:
            continue
        place = st.places[name]
        origins = {p.resource.name for p in place.holds if p.resource is not r and p.resource.is_dir}
        for origin in sorted(origins):
            if w.bound.resources[origin].fresh:
                continue
            for p in w.pieces[origin]:
                if p in place.holds or p.lost or p in reported:
                    continue
                reported.add(p)
                _left_behind(w, p, place, origin)


def _rebuilt_after(w, rebuild: str, pos: int):
    """The first `run` after position `pos` whose command contains `rebuild` (word-aligned)."""
    index = w.memo.get("h102")
    if index is None:
        # Every rebuild command, found in every run command in one pass over the runs' words:
        # candidates are looked up by their first word, so the cost is the runs' length.
        by_first: Dict[str, List[Tuple[str, ...]]] = {}
        for r in w.bound.resources.values():
            for d in getattr(r, "derived", ()):
                words = tuple(d.rebuild.split())
                if words and words not in by_first.get(words[0], ()):
                    by_first.setdefault(words[0], []).append(words)
        index = {}
        for rp, cmd, run in w.runs:
            words = cmd.split()
            for i, word in enumerate(words):
                for cand in by_first.get(word, ()):
                    if tuple(words[i:i + len(cand)]) == cand:
                        ps, rs = index.setdefault(cand, ([], []))
                        if not rs or rs[-1] is not run:
                            ps.append(rp)
                            rs.append(run)
        w.memo["h102"] = index
    got = index.get(tuple(rebuild.split()))
    if not got:
        return None
    ps, rs = got
    i = bisect.bisect_right(ps, pos)
    return rs[i] if i < len(rs) else None


def _left_behind(w, p: Piece, target: Place, origin: str) -> None:
    rec = w.left_out.get(p)
    if rec is None:
        step = w.first_arrival[(target.resource.name, origin)]
        rec = (step, "partial", step.span)
    step, why, span = rec
    tname = target.resource.name
    if p.rebuild is not None:
        run = _rebuilt_after(w, p.rebuild, w.positions[id(step)])
        svc = (w.writers.get(tname) or ["the service"])[0]
        msg = f"{p.name} is left behind: `{p.rebuild}` must rebuild it on {target.host} after {svc} starts"
        if run is not None:
            line = run.span.line
            w.report(H102.finding(span, msg, label=f"leaves {p.name} behind", severity=I,
                                  notes=(f"the `run` at line {line} rebuilds it",)))
        else:
            w.report(H102.finding(span, msg, label=f"leaves {p.name} behind",
                                  notes=(f"no later `run` step runs `{p.rebuild}`",),
                                  help=f'add `run {target.host} "{p.rebuild}"` after `start {svc}`'))
        return
    if why == "excluded":
        label = f'excludes "{p.subpath}"'
        notes = (f"this `{step.keyword}` leaves {p.name} out, so {tname} never gets it",)
    elif why == "absent":
        label = f"{p.name} is no longer in {origin} here"
        notes = (f"{p.name} was moved or deleted before this `{step.keyword}`, so {tname} never gets it",)
    else:
        label = f"only part of {origin} arrives here"
        notes = (f"{p.name} is not copied into {tname} by any step",)
    sub = p.subpath or "SUB"
    w.report(H102.finding(
        span, f"{p.name} never reaches {tname}", label=label, notes=notes,
        help=(f"copy it too, or, if it can be rebuilt where the data goes, declare "
              f"`derived \"{sub}\" rebuild \"CMD\"` on {origin} and run CMD after the service starts")))
