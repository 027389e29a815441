"""H206: a database replicated while its writers run (`replicate DB to DB live`) is provisional
until the final `replicate DB to DB` ran with every writer of the source stopped. Judged where
a step uses the target first, at the final pass, at a `run` that writes the source meanwhile,
and at the end for replications still running. `CHECKS` at the bottom lists the checks."""

from __future__ import annotations

from typing import Iterator

from mdsl.check.facts import SOURCE_GONE
from mdsl.check.rules.base import ERROR, Rule
from mdsl.check.rules.examples import HOSTS, SERVICES, plan
from mdsl.findings import Finding
from mdsl.syntax import ast as A

_DBS = '''postgres old_db on old { database = "app"  user = "app"  password = env("APP_DB_PASSWORD") }
postgres new_db on new { database = "app"  run_as = "postgres" }
'''

_FILES = '''dir old_files on old { path = "/srv/app/files"  owner = "app:app" }
dir new_files on new { path = "/srv/app/files"  owner = "app:app"  fresh = true }
'''

_REPLICATED = '''  replicate old_db to new_db live
  sync old_files to new_files live
  stop old_app
  replicate old_db to new_db
  sync old_files to new_files
  start new_app
'''

H206 = Rule(
    "H206", "a replicated database is used before its final pass", ERROR,
    summary=(
        "`replicate DB to DB live` copies a database while its writers run and keeps the target "
        "following the source's changes (PostgreSQL logical replication; MariaDB binlog replication), "
        "so the stop only has to wait for the last seconds of changes. Until the final `replicate DB to DB` "
        "ran with every "
        "writer of the source stopped, the target is provisional: it lags the source, and its "
        "sequences are not copied yet (logical replication does not carry them). Reported at the "
        "live pass: a step that uses the target before the final pass (starts a service on it, "
        "dumps, restores into or drops it, verifies its host), a step that takes the source away, "
        "a final pass while a writer may still run or without a live pass before it, a `run` that "
        "writes the source meanwhile (PostgreSQL: logical replication carries no schema changes: a "
        "migration run there never reaches the target; MariaDB's binlog carries them), and a plan "
        "that ends with the replication running (its slot keeps the source's WAL until the disk "
        "fills)."),
    bad=plan(_REPLICATED.replace("  replicate old_db to new_db\n", "", 1),
             HOSTS + "\n" + _DBS + "\n" + _FILES + "\n" + SERVICES),
    fixed=plan(_REPLICATED, HOSTS + "\n" + _DBS + "\n" + _FILES + "\n" + SERVICES),
    source="PostgreSQL's documentation, Logical Replication: Restrictions (no DDL, no sequence data, "
           "no large objects); pgcopydb's --follow and its cutover.",
)


def _final(prov) -> str:
    return f"replicate {prov.source} to {prov.dest}"


@H206.on(A.Start, A.Restart, A.Dump, A.Restore, A.Drop, A.Archive, A.Extract, A.Sync, A.Replicate,
         A.Transfer, A.Move, A.Delete, A.Run, A.VerifyHttp, A.VerifyRun)
def used_before_final(facts, walk) -> Iterator[Finding]:
    """A step uses the provisional target, or takes its source away, before the final pass."""
    step = facts.step
    line = step.span.line
    for broken in facts.broken:
        prov = broken.prov
        if not prov.replication:
            continue
        gone = broken.how == SOURCE_GONE
        yield H206.finding(
            f"`replicate ... live` makes {prov.dest} a follower of {prov.source}; the `{step.keyword}` at line "
            f"{line} {broken.what} before the final pass", prov.step.span,
            label=f"{prov.dest} is provisional until `{_final(prov)}`",
            notes=((f"the final pass reads {prov.source}: without it, {prov.dest} misses the last changes and "
                    f"every sequence",) if gone else
                   (f"line {line} uses {prov.dest} while it lags {prov.source} and has no sequence values yet",)),
            help=f"after `stop {', '.join(prov.writers) or 'the writers'}`, add `{_final(prov)}` before line {line}")


@H206.on(A.Replicate)
def final_pass(facts, walk) -> Iterator[Finding]:
    """The final pass while a writer may still run, or with no live pass to finish."""
    step = facts.step
    if step.live:
        return
    src, dst = step.source.name, step.dest.name
    if facts.replication is None and (src, dst) not in walk.replicated:
        yield H206.finding(
            f"`replicate {src} to {dst}` is a final pass, but no `replicate {src} to {dst} live` started one",
            step.span, label="nothing to finish",
            help=f"start it with `replicate {src} to {dst} live` while the app runs, or copy with dump and restore")
        return
    writers = walk.running_writers(src)
    if writers:
        yield H206.finding(
            f"the final `replicate {src} to {dst}` runs while {', '.join(writers)} may write {src}", step.span,
            label="the writers still run", notes=(f"what {writers[0]} writes after this pass never reaches {dst}",),
            help=f"`stop {', '.join(writers)}` before this step")


@H206.on(A.Run)
def schema_change_during(facts, walk) -> Iterator[Finding]:
    """A `run` writes a database whose replication runs: logical replication carries no DDL."""
    step = facts.step
    for prov in facts.writes_replicated:
        yield H206.finding(
            f"the `run` at line {step.span.line} writes {prov.source} while it is replicated into {prov.dest}",
            step.span, label=f"{prov.source} is replicated since line {prov.step.span.line}",
            notes=("logical replication carries rows, not schema changes (DDL): a migration run here leaves "
                   f"{prov.dest} with the old schema and stops the replication at its first new column",),
            help=(f"run it before `replicate {prov.source} to {prov.dest} live`, or on {prov.dest} after the final "
                  "pass; if it writes rows only, say so: `# mdsl: allow H206 \"rows only\"`"))


@H206.at_end
def running_at_end(walk) -> Iterator[Finding]:
    """Every replication the plan leaves running."""
    for prov in sorted(walk.state.provisional.values(), key=lambda p: (p.step.span.line, p.step.span.col)):
        if prov.replication:
            yield H206.finding(
                f"the plan ends with {prov.source} still replicated into {prov.dest}", prov.step.span,
                label="no final pass follows",
                notes=(f"{prov.dest} lags and has no sequence values; the replication slot on {prov.source}'s "
                       "server keeps its WAL until the disk fills",),
                help=f"after `stop {', '.join(prov.writers) or 'the writers'}`, add `{_final(prov)}`")


# The checks of this rule, in the order they judge a step (mdsl.check.catalog.CHECKS).
CHECKS = (used_before_final, final_pass, schema_change_during, running_at_end)
