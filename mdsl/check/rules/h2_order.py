"""H2: consistency and order. Judged when a step copies or writes data while a
writer may run, reads an artifact, or starts a service; and per parallel block."""

from __future__ import annotations

from typing import Dict, List, Set, Tuple

from mdsl.check.rules.base import E, I, Rule
from mdsl.check.rules.examples import DBS, FILES, HOSTS, MOVE, SERVICES, plan
from mdsl.check.state import ARCHIVE, Place, show_pieces
from mdsl.stores.registry import STORES
from mdsl.syntax import ast as A

H201 = Rule(
    "H201", "a copy is made while a writer may run (torn copy)", E,
    summary=(
        "`dump`, `archive`, `sync` (and `transfer`/`move` of a declared resource) read data that a "
        "running service may be writing at the same time. PostgreSQL's pg_dump is consistent on its "
        "own, but the database and the files dir are then copied at different moments, so rows point "
        "at media that are not in the archive (or the other way round); a tar or rsync of a dir being "
        "written, or a copy of a live SQLite file, is torn. Stop every service that `writes` the data "
        "first. To shorten the downtime, `sync DIR to DIR live` may copy a dir while its writers run: "
        "that copy is provisional, and a final `sync` of the same dirs after the writers stop (which "
        "copies only what changed and deletes what was removed) makes it consistent. The live sync is "
        "reported when its copy is used before that final sync (copied on, read or written by a "
        "started service, verified, its source deleted) or when the plan ends without one; a live "
        "sync while no writer runs gains nothing and is an info."),
    bad=plan(MOVE.replace("  stop old_app\n", "", 1).replace("  start new_app\n", "  stop old_app\n  start new_app\n")),
    fixed=plan(MOVE),
    source="Mastodon's migration guide: stop Mastodon before the dump; the seed's plan, step 2.",
    also=(I,),
)

_RUNNING_NEW = SERVICES.replace("  initially = stopped", "")
H202 = Rule(
    "H202", "data is restored or extracted while a writer may run", E,
    summary=(
        "`restore`, `extract` and `sync` write into data that a running service may be writing or "
        "has open: the restore races the app, and the app keeps caches and connections to what was "
        "replaced. A freshly provisioned host often starts its services on deploy (the NixOS "
        "Mastodon module does), so the target's services must be stopped first."),
    bad=plan(MOVE.replace("  start new_app\n", "  restart new_app\n"), HOSTS + "\n" + DBS + "\n" + FILES + "\n" + _RUNNING_NEW),
    fixed=plan(MOVE.replace("  stop old_app\n", "  stop old_app, new_app\n"),
               HOSTS + "\n" + DBS + "\n" + FILES + "\n" + _RUNNING_NEW),
    source="the seed, step 8: 'stop the mastodon systemd services, drop the mastodon database from "
           "beetroot and replace it with the backup'.",
)

H203 = Rule(
    "H203", "a step reads an artifact no earlier step produced there", E,
    summary=(
        "A `restore`, `extract`, `transfer` or `move` reads a path where, at that point of the plan, "
        "no earlier step put anything: the steps are out of order (restore before transfer), the "
        "location names the wrong host, or the file was already deleted or moved away. Also "
        "reported when the artifact there is of the wrong kind (restoring an archive, extracting a "
        "database dump)."),
    bad=plan(MOVE.replace('  transfer old:"/root/app.dump" to new:"/root/app.dump"\n', "", 1).replace(
        '  restore new:"/root/app.dump" into new_db replace\n',
        '  restore new:"/root/app.dump" into new_db replace\n'
        '  transfer old:"/root/app.dump" to new:"/root/app.dump"\n', 1)),
    fixed=plan(MOVE),
    source="the seed, steps 5-6: files sent with `tailscale file cp` have to be fetched on the other side "
           "before anything can use them.",
)

H204 = Rule(
    "H204", "steps in one parallel block conflict", E,
    summary=(
        "The steps of a `parallel { }` block run at the same time, in no particular order. Two of "
        "them that write the same place, or one that reads what another writes (a transfer and the "
        "restore of what it transfers), race: the result depends on timing. Move one of them out of "
        "the block, in the order they must run."),
    bad=plan(MOVE.replace(
        '  transfer old:"/root/app.dump" to new:"/root/app.dump"\n', "", 1).replace(
        '  restore new:"/root/app.dump" into new_db replace\n',
        '  parallel {\n    transfer old:"/root/app.dump" to new:"/root/app.dump"\n'
        '    restore new:"/root/app.dump" into new_db replace\n  }\n', 1)),
    fixed=plan(MOVE.replace(
        '  dump old_db to old:"/root/app.dump"\n  archive old_files to old:"/root/files.tar.gz"\n',
        '  parallel {\n    dump old_db to old:"/root/app.dump"\n'
        '    archive old_files to old:"/root/files.tar.gz"\n  }\n', 1)),
    source="the language reference's own example dumps the database and archives the files in parallel: "
           "independent copies may overlap, a copy and its consumer may not.",
)

H205 = Rule(
    "H205", "a service starts before its data has arrived", E,
    summary=(
        "A service is started while a later step still restores, extracts, syncs or transfers data "
        "it reads or writes. Started on empty data, services initialise it: the NixOS Mastodon "
        "module generates fresh secrets and loads an empty schema, Nextcloud runs its installer. "
        "The later restore then either fails on the existing schema or silently mixes the two."),
    bad=plan(MOVE.replace("  start new_app\n", "", 1).replace(
        '  restore new:', '  start new_app\n  restore new:', 1)),
    fixed=plan(MOVE),
    source="the seed: the NixOS module configures PostgreSQL and Mastodon on first deploy; "
           "start the services only once the data is in place.",
)

RULES = (H201, H202, H203, H204, H205)


def why_running(w, writers) -> Tuple[str, ...]:
    """Why each of `writers` may be running now, one note each."""
    return tuple(_why_running(w, s) for s in writers)


def _why_running(w, svc: str) -> str:
    if svc in w.block_started:
        return f"{svc} is started in the same `parallel` block (line {w.block_started[svc].span.line})"
    by = w.state.started_by.get(svc)
    if by is None:
        return f"{svc} is running from the start (`initially` is `running` unless declared `stopped`)"
    return f"{svc} was started at line {by.span.line}"


def torn_copy(w, step: A.Step, res) -> None:
    """H201: the data a step copies may be written by a running service."""
    writers = w.running_writers(res.name)
    if not writers:
        return
    svc = writers[0]
    w.report(H201.finding(
        step.span, f"`{step.keyword}` copies {res.name} while {', '.join(writers)} may be writing it: "
                   f"the copy is torn",
        label=f"{svc} may still be writing {res.name}",
        notes=tuple(_why_running(w, s) for s in writers),
        help=f"stop {', '.join(writers)} before this step"))


def write_while_running(w, step: A.Step, res) -> None:
    """H202: a step writes into data a running service writes too."""
    writers = [s for s in w.running_writers(res.name) if res.name not in w.early_start.get(s, ())]
    if not writers:
        return
    svc = writers[0]
    w.report(H202.finding(
        step.span, f"`{step.keyword}` writes into {res.name} while {', '.join(writers)} may be running",
        label=f"{svc} writes {res.name} too",
        notes=tuple(_why_running(w, s) for s in writers),
        help=f"stop {', '.join(writers)} before this step, and start it once the data is in place"))


def missing_artifact(w, step: A.Step, ref, place: Place) -> None:
    """H203: nothing was put at the location a step reads."""
    notes = []
    if place.gone is not None:
        by, how = place.gone
        notes.append(f"it was {how} by the `{by.keyword}` at line {by.span.line}")
    elif w.deferred and any(place in args for _, args in w.deferred):
        notes.append("another step of the same `parallel` block writes it, and may not have finished")
    else:
        elsewhere = sorted(k[0] for k, p in w.state.places.items()
                           if isinstance(k, tuple) and k[1] == ref.path and k[0] != ref.host and p.exists)
        if elsewhere:
            notes.append(f"at this point a file with this path exists on {', '.join(elsewhere)}")
        notes.append("no earlier step dumps, archives, transfers or moves anything to this location")
    w.report(H203.finding(
        step.span, f"`{step.keyword}` reads {ref.host}:{ref.path}, but no earlier step put anything there",
        label="nothing is here at this point", notes=notes,
        help="put the artifact there first (usually a `transfer`), or read it on the host where it was written"))


def wrong_kind(w, step: A.Step, src: Place, into) -> None:
    """H203 (kind): a restore reads an archive, an extract reads a dump, and so on."""
    want = STORES[into.kind].artifact if into.is_database else ARCHIVE
    if src.kind is None or src.kind == want:
        return
    w.report(H203.finding(
        step.span, f"`{step.keyword}` into {into.name} needs {want}, but {src.show()} holds {src.kind}"
                   + (f" of {show_pieces(src.holds, w.pieces)}" if src.holds else ""),
        label="the wrong kind of artifact",
        help="read the artifact that the matching `dump` or `archive` wrote"))


def _show_key(w, k) -> str:
    if isinstance(k, tuple) and k[0] == "service":
        return f"service {k[1]}"
    if isinstance(k, tuple):
        return f"{k[0]}:{k[1]}"
    return k


def parallel_conflicts(w, block: A.Parallel, touches: List[Tuple[Set[object], Set[object]]]) -> None:
    """H204: two members of one parallel block touch the same place and one of them writes it."""
    index: Dict[object, List[Tuple[int, bool]]] = {}
    for i, (reads, writes) in enumerate(touches):
        for k in reads:
            index.setdefault(k, []).append((i, False))
        for k in writes:
            index.setdefault(k, []).append((i, True))
    pairs: Dict[Tuple[int, int], Tuple[object, bool]] = {}
    for k, uses in index.items():
        if len(uses) < 2:
            continue
        for j, wj in uses:
            if not wj:
                continue
            for i, wi in uses:
                if i != j:
                    pairs.setdefault((min(i, j), max(i, j)), (k, wi and wj))
    members = block.steps
    for (i, j), (k, both) in sorted(pairs.items()):
        a, b = _touching(w, members[i], k), _touching(w, members[j], k)
        how = "both write it" if both else "one writes what the other reads"
        lanes = isinstance(members[i], A.Sequence) or isinstance(members[j], A.Sequence)
        w.report(H204.finding(
            b.span, f"`{a.keyword}` (line {a.span.line}) and `{b.keyword}` (line {b.span.line}) run in "
                    f"parallel and both touch {_show_key(w, k)}: {how}",
            label=f"races with line {a.span.line}",
            help=("put both in one `sequence`, in the order they must run, or take one of them out of the "
                  "`parallel` block" if lanes else
                  "take one of them out of the `parallel` block, in the order they must run")))


def _touching(w, member: A.Step, key) -> A.Step:
    """The step of a lane (or a nested block) that touches `key`, for the message; else the member."""
    if isinstance(member, (A.Sequence, A.Parallel)):
        for s in A.walk_steps(member.steps):
            if not isinstance(s, (A.Sequence, A.Parallel)):
                reads, writes = w.touches(s)
                if key in reads or key in writes:
                    return s
    return member


def started_early(w, step: A.Step, svc) -> None:
    """H205: a service starts while a later step still brings in data it reads or writes."""
    late = []
    for d in dict.fromkeys(svc.writes + svc.reads):
        nxt = w.next_arrival(d)
        if nxt is not None:
            late.append((d, nxt))
    if not late:
        return
    w.early_start.setdefault(svc.name, set()).update(d for d, _ in late)
    names = " and ".join(d for d, _ in late)
    last = max(s.span.line for _, s in late)
    w.report(H205.finding(
        step.span, f"`{step.keyword} {svc.name}` comes before {names} {'has' if len(late) == 1 else 'have'} arrived",
        label=f"{svc.name} starts on data that is not there yet",
        notes=tuple(f"{d} is written later by the `{s.keyword}` at line {s.span.line}" for d, s in late)
        + ("a service started on empty data may initialise it (the NixOS Mastodon module generates "
           "fresh secrets and loads an empty schema)",),
        help=f"start {svc.name} after line {last}"))


# ---------------------------------------------------------------- live syncs (H201)


def live_idle(w, step: A.Sync, res) -> None:
    """H201 (info): a `sync ... live` while no writer of its source runs: an ordinary, final pass."""
    writers = w.writers.get(res.name, ())
    stopped = [w.last_stop[x] for x in writers if x in w.last_stop]
    w.report(H201.finding(
        step.span, f"`sync ... live` copies {res.name}, but no service writing it runs here: nothing to gain",
        label="this pass is already consistent", severity=I,
        notes=(f"{', '.join(writers)} stopped at line {max(x.span.line for x in stopped)}",) if stopped else (),
        help=("a live pass belongs before the step that stops the writers; here, drop `live`" if writers
              else f"no service declares `writes = [{res.name}]`: drop `live`")))


def _report_live(w, prov, tail: str, notes=(), help: str = "") -> None:
    step = prov.step
    writers = ", ".join(prov.writers)
    w.report(H201.finding(
        step.span, f"`sync ... live` copies {prov.source} while {writers} may be writing it; {tail}",
        label=f"{prov.dest} holds a torn copy until a final sync",
        notes=tuple(prov.why) + tuple(notes),
        help=help or (f"after `stop {writers}`, add `sync {prov.source} to {prov.dest}` (without `live`): it "
                      f"copies what changed and deletes what was removed")))


def provisional_used(w, name: str, step: A.Step, what: str) -> None:
    """H201 at a live sync whose provisional copy (in `name`) is used before its final sync."""
    prov = w.state.provisional.get(name)
    if prov is None or step is prov.step:
        return
    del w.state.provisional[name]  # reported once
    line = step.span.line
    _report_live(
        w, prov, f"the `{step.keyword}` at line {line} {what}, before any final sync made {prov.dest} consistent",
        notes=(f"line {line} uses the provisional copy: it may miss writes or hold half-written files",),
        help=(f"after `stop {', '.join(prov.writers)}`, add `sync {prov.source} to {prov.dest}` (without "
              f"`live`) before line {line}"))


def source_lost(w, source: str, step: A.Step, what: str) -> None:
    """H201 at a live sync whose source goes away before the final sync could complete the copy."""
    for dest in [d for d, p in w.state.provisional.items() if p.source == source]:
        prov = w.state.provisional.pop(dest)
        line = step.span.line
        _report_live(
            w, prov, f"the `{step.keyword}` at line {line} {what}, before any final sync made {dest} consistent",
            notes=(f"the final sync must read {source} where it was: without it, {dest} keeps the torn copy",),
            help=(f"after `stop {', '.join(prov.writers)}`, add `sync {source} to {dest}` (without `live`) "
                  f"before line {line}"))


def final_excludes(w, step: A.Sync, prov, excludes) -> None:
    """H201 at a live sync when the final sync leaves out a subpath the live pass copied (it stays torn)."""
    extra = [x for x in excludes if not any(x == y or x.startswith(y + "/") for y in prov.excludes)]
    if not extra:
        return
    del w.state.provisional[prov.dest]
    subs = ", ".join(f'"{x}"' for x in extra)
    _report_live(
        w, prov, f"the final `sync` at line {step.span.line} excludes {subs}, which this pass copied: "
                 f"that part of {prov.dest} stays torn",
        help=f"exclude {subs} from this live pass too, or do not exclude it from the final sync")


def provisional_at_end(w) -> None:
    """H201 at every live sync whose copy no final sync completed."""
    for prov in sorted(w.state.provisional.values(), key=lambda p: (p.step.span.line, p.step.span.col)):
        _report_live(w, prov, f"no final `sync {prov.source} to {prov.dest}` follows with "
                              f"{', '.join(prov.writers)} stopped, so {prov.dest} stays torn")
    w.state.provisional.clear()
