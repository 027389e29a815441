"""H2: consistency and order. Judged when a step copies or writes data while a
writer may run, reads an artifact, or starts a service; per parallel block; and
at the end for live passes never completed. Each rule is followed by its checks;
`CHECKS` at the bottom lists them in order."""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Set, Tuple

from mdsl.check.facts import FINAL_EXCLUDES, SOURCE_GONE, USED
from mdsl.check.rules.base import ERROR, INFO, Rule
from mdsl.check.rules.examples import DBS, FILES, HOSTS, MOVE, SERVICES, plan
from mdsl.check.state import ARCHIVE, show_pieces
from mdsl.findings import Finding
from mdsl.stores.registry import store_of
from mdsl.syntax import ast as A


def _why(svc: str, step: Optional[A.Step], in_block: bool) -> str:
    """Why `svc` may be running, from `Walk.started_how`."""
    if in_block:
        return f"{svc} is started in the same `parallel` block (line {step.span.line})"
    if step is None:
        return f"{svc} is running from the start (`initially` is `running` unless declared `stopped`)"
    return f"{svc} was started at line {step.span.line}"


def _why_running(walk, writers) -> Tuple[str, ...]:
    return tuple(_why(svc, *walk.started_how(svc)) for svc in writers)


# ---------------------------------------------------------------- H201

H201 = Rule(
    "H201", "a copy is made while a writer may run (torn copy)", ERROR,
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
    also=(INFO,),
)


@H201.on(A.Dump, A.Archive, A.Sync, A.Transfer, A.Move)
def torn_copy(facts, walk) -> Iterator[Finding]:
    """The data a step copies may be written by a running service (a live sync is judged below)."""
    res = facts.copied
    writers = walk.running_writers(res.name) if res is not None else ()
    if not writers:
        return
    step = facts.step
    yield H201.finding(
        f"`{step.keyword}` copies {res.name} while {', '.join(writers)} may be writing it: the copy is torn",
        step.span, label=f"{writers[0]} may still be writing {res.name}", notes=_why_running(walk, writers),
        help=f"stop {', '.join(writers)} before this step")


@H201.on(A.Sync)
def idle_live_pass(facts, walk) -> Iterator[Finding]:
    """(info) A `sync ... live` while no writer of its source runs: an ordinary, final pass."""
    step = facts.step
    name = step.source.name
    if not step.live or walk.running_writers(name):
        return
    writers = walk.index.writers.get(name, ())
    stopped = [walk.last_stop[x] for x in writers if x in walk.last_stop]
    yield H201.finding(
        f"`sync ... live` copies {name}, but no service writing it runs here: nothing to gain", step.span,
        label="this pass is already consistent", severity=INFO,
        notes=(f"{', '.join(writers)} stopped at line {max(x.span.line for x in stopped)}",) if stopped else (),
        help=("a live pass belongs before the step that stops the writers; here, drop `live`" if writers
              else f"no service declares `writes = [{name}]`: drop `live`"))


def _live_pass(prov, tail: str, notes=(), help: str = "") -> Finding:
    """H201 at a live sync whose provisional copy was not made consistent by a final sync."""
    writers = ", ".join(prov.writers)
    return H201.finding(
        f"`sync ... live` copies {prov.source} while {writers} may be writing it; {tail}", prov.step.span,
        label=f"{prov.dest} holds a torn copy until a final sync",
        notes=tuple(_why(*why) for why in prov.why) + tuple(notes),
        help=help or (f"after `stop {writers}`, add `sync {prov.source} to {prov.dest}` (without `live`): it "
                      f"copies what changed and deletes what was removed"))


@H201.on(A.Start, A.Restart, A.Archive, A.Extract, A.Sync, A.Transfer, A.Move, A.Delete, A.Run,
         A.VerifyHttp, A.VerifyRun)
def broken_live_pass(facts, walk) -> Iterator[Finding]:
    """A step uses a live pass's copy, or takes its source away, before a final sync completed it."""
    step = facts.step
    line = step.span.line
    for broken in facts.broken:
        prov = broken.prov
        if prov.replication:  # a replicated database: H206
            continue
        stop = f"after `stop {', '.join(prov.writers)}`"
        if broken.how == USED:
            yield _live_pass(
                prov, f"the `{step.keyword}` at line {line} {broken.what}, before any final sync made "
                      f"{prov.dest} consistent",
                notes=(f"line {line} uses the provisional copy: it may miss writes or hold half-written files",),
                help=f"{stop}, add `sync {prov.source} to {prov.dest}` (without `live`) before line {line}")
        elif broken.how == SOURCE_GONE:
            yield _live_pass(
                prov, f"the `{step.keyword}` at line {line} {broken.what}, before any final sync made "
                      f"{prov.dest} consistent",
                notes=(f"the final sync must read {prov.source} where it was: without it, {prov.dest} keeps "
                       f"the torn copy",),
                help=f"{stop}, add `sync {prov.source} to {prov.dest}` (without `live`) before line {line}")
        elif broken.how == FINAL_EXCLUDES:
            subs = ", ".join(f'"{x}"' for x in broken.what)
            yield _live_pass(
                prov, f"the final `sync` at line {line} excludes {subs}, which this pass copied: that part "
                      f"of {prov.dest} stays torn",
                help=f"exclude {subs} from this live pass too, or do not exclude it from the final sync")


@H201.at_end
def torn_at_end(walk) -> Iterator[Finding]:
    """Every live sync whose copy no final sync completed."""
    for prov in sorted(walk.state.provisional.values(), key=lambda p: (p.step.span.line, p.step.span.col)):
        if prov.replication:  # a replication still running: H206
            continue
        yield _live_pass(prov, f"no final `sync {prov.source} to {prov.dest}` follows with "
                               f"{', '.join(prov.writers)} stopped, so {prov.dest} stays torn")


# ---------------------------------------------------------------- H202

_RUNNING_NEW = SERVICES.replace("  initially = stopped", "")
H202 = Rule(
    "H202", "data is restored or extracted while a writer may run", ERROR,
    summary=(
        "`restore`, `extract` and `sync` write into data that a running service may be writing or "
        "has open: the restore races the app, and the app keeps caches and connections to what was "
        "replaced. A freshly provisioned host often starts its services on deploy (the NixOS "
        "Mastodon module does), so the target's services must be stopped first."),
    bad=plan(MOVE.replace("  start new_app\n", "  restart new_app\n"),
             HOSTS + "\n" + DBS + "\n" + FILES + "\n" + _RUNNING_NEW),
    fixed=plan(MOVE.replace("  stop old_app\n", "  stop old_app, new_app\n"),
               HOSTS + "\n" + DBS + "\n" + FILES + "\n" + _RUNNING_NEW),
    source="the seed, step 8: 'stop the mastodon systemd services, drop the mastodon database from "
           "beetroot and replace it with the backup'.",
)


@H202.on(A.Restore, A.Extract, A.Sync, A.Replicate, A.Transfer, A.Move)
def write_while_running(facts, walk) -> Iterator[Finding]:
    """A step writes into data a running service writes too (unless H205 said so at its start)."""
    res = facts.into
    if res is None or isinstance(facts.step, A.Replicate) and not facts.step.live:
        return  # a final pass into a database already in use: H206 said so at the live pass
    writers = [s for s in walk.running_writers(res.name) if res.name not in walk.early_start.get(s, ())]
    if not writers:
        return
    step = facts.step
    yield H202.finding(
        f"`{step.keyword}` writes into {res.name} while {', '.join(writers)} may be running", step.span,
        label=f"{writers[0]} writes {res.name} too", notes=_why_running(walk, writers),
        help=f"stop {', '.join(writers)} before this step, and start it once the data is in place")


# ---------------------------------------------------------------- H203

H203 = Rule(
    "H203", "a step reads an artifact no earlier step produced there", ERROR,
    summary=(
        "A `restore`, `extract`, `transfer` or `move` reads a path where, at that point of the plan, "
        "no earlier step put anything: the steps are out of order (restore before transfer), the "
        "location names the wrong host, or the file was already deleted or moved away. A file that is "
        "there before the plan runs (a backup made by hand) is not something a step produced: declare "
        "it as a `file` and use it by name (`restore backup into new_db`). Also reported when the "
        "artifact there is of the wrong kind (restoring an archive, extracting a database dump)."),
    bad=plan(MOVE.replace('  transfer old:"/root/app.dump" to new:"/root/app.dump"\n', "", 1).replace(
        '  restore new:"/root/app.dump" into new_db replace\n',
        '  restore new:"/root/app.dump" into new_db replace\n'
        '  transfer old:"/root/app.dump" to new:"/root/app.dump"\n', 1)),
    fixed=plan(MOVE),
    source="the seed, steps 5-6: files sent with `tailscale file cp` have to be fetched on the other side "
           "before anything can use them.",
)


@H203.on(A.Restore, A.Extract, A.Transfer, A.Move)
def missing_artifact(facts, walk) -> Iterator[Finding]:
    """Nothing was put at the location a step reads."""
    place, ref, step = facts.src, facts.src_ref, facts.step
    if place.exists:
        return
    notes = []
    if place.gone is not None:
        by, how = place.gone
        notes.append(f"it was {how} by the `{by.keyword}` at line {by.span.line}")
    elif walk.deferred and any(place in args for _, args in walk.deferred):
        notes.append("another step of the same `parallel` block writes it, and may not have finished")
    else:
        elsewhere = sorted(k[0] for k, p in walk.state.places.items()
                           if isinstance(k, tuple) and k[1] == ref.path and k[0] != ref.host and p.exists)
        if elsewhere:
            notes.append(f"at this point a file with this path exists on {', '.join(elsewhere)}")
        notes.append("no earlier step dumps, archives, transfers or moves anything to this location")
    yield H203.finding(
        f"`{step.keyword}` reads {ref.host}:{ref.path}, but no earlier step put anything there", step.span,
        label="nothing is here at this point", notes=notes,
        help=(f"put the artifact there first (usually a `transfer`), or read it on the host where it was "
              f"written; a file that exists before the plan runs is declared as a `file` and used by name: "
              f"`file NAME on {ref.host} {{ path = \"{ref.path}\" }}`, then `{step.keyword} NAME ...`"))


@H203.on(A.Restore, A.Extract)
def wrong_kind(facts, walk) -> Iterator[Finding]:
    """A restore reads an archive, an extract reads a dump, and so on."""
    src, into, step = facts.src, facts.into, facts.step
    want = store_of(into).artifact if into.is_database else ARCHIVE
    if not src.exists or src.kind is None or src.kind == want:
        return
    yield H203.finding(
        f"`{step.keyword}` into {into.name} needs {want}, but {src.show()} holds {src.kind}"
        + (f" of {show_pieces(src.holds, walk.pieces)}" if src.holds else ""), step.span,
        label="the wrong kind of artifact",
        help="read the artifact that the matching `dump` or `archive` wrote")


# ---------------------------------------------------------------- H204

H204 = Rule(
    "H204", "steps in one parallel block conflict", ERROR,
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


@H204.on(A.Parallel)
def parallel_conflicts(facts, walk) -> Iterator[Finding]:
    """Two members of one parallel block touch the same place and one of them writes it."""
    members = facts.step.steps
    for (i, j), (key, both) in sorted(_conflicts([walk.touches(m) for m in members]).items()):
        a, b = _touching(walk, members[i], key), _touching(walk, members[j], key)
        how = "both write it" if both else "one writes what the other reads"
        lanes = isinstance(members[i], A.Sequence) or isinstance(members[j], A.Sequence)
        yield H204.finding(
            f"`{a.keyword}` (line {a.span.line}) and `{b.keyword}` (line {b.span.line}) run in "
            f"parallel and both touch {_show_key(key)}: {how}", b.span,
            label=f"races with line {a.span.line}",
            help=("put both in one `sequence`, in the order they must run, or take one of them out of the "
                  "`parallel` block" if lanes else
                  "take one of them out of the `parallel` block, in the order they must run"))


def _conflicts(touches: List[Tuple[Set[object], Set[object]]]) -> Dict[Tuple[int, int], Tuple[object, bool]]:
    """(member i, member j) -> (a key both touch, whether both write it), for pairs where one writes."""
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
    return pairs


def _show_key(k) -> str:
    if isinstance(k, tuple) and k[0] == "service":
        return f"service {k[1]}"
    if isinstance(k, tuple):
        return f"{k[0]}:{k[1]}"
    return k


def _touching(walk, member: A.Step, key) -> A.Step:
    """The step of a lane (or a nested block) that touches `key`, for the message; else the member."""
    if isinstance(member, (A.Sequence, A.Parallel)):
        for s in A.walk_steps(member.steps):
            if not isinstance(s, (A.Sequence, A.Parallel)):
                reads, writes = walk.touches(s)
                if key in reads or key in writes:
                    return s
    return member


# ---------------------------------------------------------------- H205

H205 = Rule(
    "H205", "a service starts before its data has arrived", ERROR,
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


@H205.on(A.Start, A.Restart)
def started_early(facts, walk) -> Iterator[Finding]:
    """A service starts while a later step still brings in data it reads or writes."""
    step = facts.step
    for name, late in facts.late:
        names = " and ".join(d for d, _ in late)
        last = max(s.span.line for _, s in late)
        yield H205.finding(
            f"`{step.keyword} {name}` comes before {names} {'has' if len(late) == 1 else 'have'} arrived",
            step.span, label=f"{name} starts on data that is not there yet",
            notes=tuple(f"{d} is written later by the `{s.keyword}` at line {s.span.line}" for d, s in late)
            + ("a service started on empty data may initialise it (the NixOS Mastodon module generates "
               "fresh secrets and loads an empty schema)",),
            help=f"start {name} after line {last}")


# The checks of this family, in the order they judge a step (mdsl.check.catalog.CHECKS).
CHECKS = (torn_copy, idle_live_pass, broken_live_pass, torn_at_end, write_while_running, missing_artifact,
          wrong_kind, parallel_conflicts, started_early)
