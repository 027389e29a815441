"""PostgreSQL: `replicate DB to DB live` and its final pass, by logical replication.

The live pass (the source's writers still run):
  1. on the target, what an earlier, killed live pass left: its subscription (disabled and dropped
     without touching the source), and the database it was filling (marked by a comment), dropped;
     then the database is created if missing, refused if it holds tables, and marked;
  2. on the source, what a killed pass left (our slot, orphaned table-sync slots, the publication),
     then the checks that make replication safe (a primary key or replica identity on every table,
     no large objects) and `CREATE PUBLICATION` for every table;
  3. the schema, `pg_dump --schema-only` on the source fed to psql on the target;
  4. a tunnel (mdsl's SSH connections) from 127.0.0.1:PORT on the target to the source's server;
  5. `CREATE SUBSCRIPTION ... copy_data`, which makes the slot on the source and copies every table;
     the step waits until the initial copy is done, and fails on the first replication error.

The final pass (every writer stopped): waits until the slot has confirmed the source's WAL position
taken at its start (the target applied everything), copies the sequences (logical replication does
not), drops the subscription (disabled, slot detached), then the slot and the publication on the source,
unmarks the target and closes the tunnel. Every part may run again after a kill.
"""

from __future__ import annotations

import hashlib
from typing import List, Optional

import attrs

from mdsl.check.rules.p_preflight import P413
from mdsl.compile.actions import Feed, ReplicationObjects, Tunnel
from mdsl.compile.context import DEFAULT_TIMEOUT, CompileContext, option_value, step_timeout
from mdsl.compile.parts import Arg, Lit, SecretArg, SecretText
from mdsl.findings import Finding
from mdsl.stores.postgres import Postgres
from mdsl.stores.postgres.commands import conninfo, libpq_quote, tool_command
from mdsl.stores.postgres.logins import sql_ident, sql_str
from mdsl.syntax import ast as A

# The tunnel's port on the target, unless the step says `port = N`: derived from the two names, so a
# resumed run (a new process) opens it where the subscription's connection string points.
PORT_BASE, PORT_SPAN = 41000, 8000
DEFAULT_PORT = 5432
MARK = "mdsl: replica being filled by `replicate ... live`"
ADMIN_FLAGS = "-X -w -q -A -t -v ON_ERROR_STOP=1 -f -"
USER_SCHEMAS = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"


def replication_name(src: Postgres, dst: Postgres) -> str:
    """The publication's, subscription's and slot's name: `mdsl_` and a hash of the two databases."""
    digest = hashlib.sha256(f"{src.host}/{src.name}/{src.database}->{dst.host}/{dst.name}".encode()).hexdigest()
    return "mdsl_" + digest[:16]


def tunnel_port(step: A.Replicate, src: Postgres, dst: Postgres) -> int:
    """Where the target's server finds the source's: `port = N`, else one derived from the names."""
    given = option_value(step, "port")
    if given:
        return int(given)
    name = replication_name(src, dst)
    return PORT_BASE + int(name[5:13], 16) % PORT_SPAN


def replication_user(src: Postgres) -> str:
    """The role the subscription logs in as on the source: the declared login's (peer: its OS user)."""
    return src.user or src.run_as or "postgres"


def _client(ctx: CompileContext, db: Postgres, program: str, flags: str, *args, database=None):
    """`program` (psql, pg_dump) on `database` (default: the declared one) of `db`'s server, as declared."""
    path = (db.bin.rstrip("/") + "/" + program) if db.bin else program
    return tool_command(ctx, db, (Lit(Arg(path).render()), Lit(flags), Arg(conninfo(db, database), "--dbname="),
                                  *args), (program,))


def _psql(ctx: CompileContext, db: Postgres, database: str, script, what: str, timeout=None) -> Feed:
    """psql on `database` of `db`'s server, as declared, running `script` (text, or parts with secrets; a
    Feed, so that `mdsl plan` and the fingerprint show it)."""
    cmd = _client(ctx, db, "psql", ADMIN_FLAGS, database=database)
    parts = script if isinstance(script, tuple) else (Lit(script),)
    return Feed(attrs.evolve(cmd, stdin=SecretText(parts)), what, timeout=timeout)


# ---------------------------------------------------------------- SQL


def drop_subscription_sql(name: str) -> str:
    """In the target database: its subscription `name` disabled, detached from its slot (the source is not
    asked, so this works with the tunnel down), and dropped."""
    n = sql_str(name)
    return (f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
            f"WHERE s.subname = {n} AND d.datname = current_database()) THEN "
            f"EXECUTE format('ALTER SUBSCRIPTION %I DISABLE', {n}); "
            f"EXECUTE format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', {n}); "
            f"EXECUTE format('DROP SUBSCRIPTION %I', {n}); END IF; END $$;\n")


def drop_source_objects_sql(name: str) -> str:
    """In the source database: our slot (its WAL sender ended first), slots of table copies no subscription
    finishes any more, and the publication. Retried while the slot is still in use by a WAL sender that
    is ending."""
    n = sql_str(name)
    return (
        "DO $$ DECLARE i int; BEGIN FOR i IN 1..100 LOOP "
        f"PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {n} "
        "AND active_pid IS NOT NULL; "
        f"BEGIN PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {n}; "
        "EXIT; EXCEPTION WHEN object_in_use THEN PERFORM pg_sleep(0.1); END; END LOOP; "
        f"IF EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = {n}) THEN "
        f"RAISE EXCEPTION 'replication slot % is still in use', {n}; END IF; END $$;\n"
        # a table copy's temporary slot is pg_<subscription oid>_sync_<table oid>_<system id>
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database() "
        "AND slot_name ~ '^pg_[0-9]+_sync_[0-9]+_[0-9]+$' AND NOT active;\n"
        f"SELECT format('DROP PUBLICATION %I', {n}) FROM pg_publication WHERE pubname = {n} \\gexec\n")


def _drop_subscription_anywhere_sql(dst: Postgres, name: str) -> str:
    """Connected to `postgres` on the target's server: the subscription dropped, if its database exists."""
    d = sql_str(dst.database)
    return (
        f"SELECT count(*) > 0 AS mdsl_has_db FROM pg_database WHERE datname = {d} \\gset\n"
        "\\if :mdsl_has_db\n"
        f"\\connect {sql_ident(dst.database)}\n"
        + drop_subscription_sql(name) +
        "\\connect postgres\n"
        "\\endif\n")


def _prepare_target_sql(dst: Postgres, name: str) -> str:
    d = sql_str(dst.database)
    return (
        _drop_subscription_anywhere_sql(dst, name) +
        f"SELECT format('DROP DATABASE %I WITH (FORCE)', {d}) FROM pg_database WHERE datname = {d} "
        f"AND shobj_description(oid, 'pg_database') = {sql_str(MARK)} \\gexec\n"
        f"SELECT format('CREATE DATABASE %I', {d}) WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {d}) "
        "\\gexec\n"
        f"\\connect {sql_ident(dst.database)}\n"
        "DO $$ DECLARE t text; BEGIN "
        "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO t FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS}; "
        "IF t IS NOT NULL THEN RAISE EXCEPTION 'the target database % already holds tables (%): replication fills "
        "an empty database; drop it first (`drop DB`)', current_database(), left(t, 200); END IF; END $$;\n"
        f"SELECT format('COMMENT ON DATABASE %I IS %L', {d}, {sql_str(MARK)}) \\gexec\n")


def _prepare_source_sql(src: Postgres, name: str, identity_full: bool) -> str:
    n = sql_str(name)
    no_key = ("FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
              f"AND {USER_SCHEMAS} AND c.relreplident = 'd' AND NOT EXISTS (SELECT FROM pg_index i "
              "WHERE i.indrelid = c.oid AND i.indisprimary)")
    keys = (f"SELECT format('ALTER TABLE %I.%I REPLICA IDENTITY FULL', n.nspname, c.relname) {no_key} \\gexec\n"
            if identity_full else
            f"DO $$ DECLARE t text; BEGIN SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO t "
            f"{no_key}; IF t IS NOT NULL THEN RAISE EXCEPTION 'tables without a primary key or replica identity "
            "(their UPDATE and DELETE would fail once published): %; add a primary key, or write "
            "`replica_identity = full` on the step', left(t, 400); END IF; END $$;\n")
    return (
        drop_source_objects_sql(name)
        + "DO $$ BEGIN IF EXISTS (SELECT FROM pg_largeobject_metadata) THEN RAISE EXCEPTION "
          "'the source database holds large objects, which logical replication does not copy; move it with "
          "dump and restore'; END IF; END $$;\n"
        + keys
        + "SELECT CASE WHEN count(*) = 0 THEN format('CREATE PUBLICATION %I', " + n + ") "
          "ELSE format('CREATE PUBLICATION %I FOR TABLE %s', " + n + ", string_agg(format('%I.%I', n.nspname, "
          "c.relname), ', ')) END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
          f"WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {USER_SCHEMAS} \\gexec\n")


# Errors a replication may have while it runs without anything being wrong: its worker's connection ends
# when a run ends and its tunnel closes, and the worker retries (every wal_retrieve_retry_interval, 5 s by
# default). A real error (a row the target refuses) repeats at every retry: more than this many during one
# wait fails the step. And a slot that no WAL sender uses for this long while the final pass waits means
# the target does not apply the changes.
TRANSIENT_ERRORS = 3
IDLE_SLOT_SECONDS = 60


def wait_copied_sql(name: str) -> str:
    """In the target database: wait until every table's initial copy is done; fail on repeated replication
    errors (counted from the start of the wait)."""
    n = sql_str(name)
    errors = ("SELECT coalesce(sum(sync_error_count + apply_error_count), 0) INTO {var} "
              f"FROM pg_stat_subscription_stats WHERE subname = {n}; ")
    return (
        "DO $$ DECLARE left_ int; errs bigint; first bigint; BEGIN "
        + errors.format(var="first") +
        "LOOP "
        "SELECT count(*) INTO left_ FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
        f"WHERE s.subname = {n} AND r.srsubstate NOT IN ('r', 's'); "
        "EXIT WHEN left_ = 0; "
        "PERFORM pg_stat_clear_snapshot(); "
        + errors.format(var="errs") +
        f"IF errs - first > {TRANSIENT_ERRORS} THEN RAISE EXCEPTION 'the replication into % failed % times in a "
        "row: the target server''s log says why', current_database(), errs - first; END IF; "
        "PERFORM pg_sleep(0.2); END LOOP; END $$;\n")


def wait_caught_up_sql(name: str) -> str:
    """In the source database: wait until the slot confirms the WAL position of now (its writers stopped,
    that is everything they wrote). A slot already gone (a resumed final pass dropped it) waits for nothing;
    one no WAL sender uses for IDLE_SLOT_SECONDS fails the step."""
    n = sql_str(name)
    return (
        "DO $$ DECLARE goal pg_lsn := pg_current_wal_insert_lsn(); got pg_lsn; busy bool; "
        "seen timestamptz := clock_timestamp(); BEGIN LOOP "
        f"SELECT confirmed_flush_lsn, active INTO got, busy FROM pg_replication_slots WHERE slot_name = {n}; "
        "EXIT WHEN NOT FOUND OR got >= goal; "
        "IF busy THEN seen := clock_timestamp(); "
        f"ELSIF clock_timestamp() - seen > interval '{IDLE_SLOT_SECONDS} seconds' THEN "
        "RAISE EXCEPTION 'the target has not read from replication slot % for % s: its server''s log says why', "
        f"{n}, {IDLE_SLOT_SECONDS}; END IF; "
        "PERFORM pg_sleep(0.05); END LOOP; END $$;\n")


def while_subscribed_sql(name: str, sql: str) -> str:
    """In the target database: a query printing `sql` while the subscription `name` exists, else a no-op."""
    n = sql_str(name)
    return (f"SELECT CASE WHEN EXISTS (SELECT FROM pg_subscription WHERE subname = {n}) THEN $mdsl${sql}$mdsl$ "
            "ELSE 'SELECT 1;' END")


SEQUENCES_SQL = (
    "SELECT format('SELECT pg_catalog.setval(%L, %s, %s);', format('%I.%I', schemaname, sequencename), "
    "coalesce(last_value, start_value), (last_value IS NOT NULL)::text) FROM pg_sequences "
    "WHERE schemaname !~ '^pg_' AND schemaname <> 'information_schema' ORDER BY 1")


# ---------------------------------------------------------------- the steps


def _tunnel(step: A.Replicate, src: Postgres, dst: Postgres, close: bool = False) -> Tunnel:
    return Tunnel(src.host, src.tcp_host or "127.0.0.1", src.tcp_port or DEFAULT_PORT, dst.host,
                  tunnel_port(step, src, dst), close)


def objects(ctx: CompileContext, src: Postgres, dst: Postgres) -> ReplicationObjects:
    """The subscription, slot and publication of this replication, and the commands that remove them with
    no plan (journaled: a plan edited between the two passes still has them removed)."""
    name = replication_name(src, dst)
    cleanup = [_psql(ctx, dst, "postgres", _drop_subscription_anywhere_sql(dst, name), "").command,
               _psql(ctx, src, src.database, drop_source_objects_sql(name), "").command]
    return ReplicationObjects(name, cleanup)


def live(ctx: CompileContext, step: A.Replicate, src: Postgres, dst: Postgres) -> List:
    """`replicate SRC to DST live`: the actions of the live pass (see the module's docstring)."""
    name = replication_name(src, dst)
    timeout = step_timeout(step, DEFAULT_TIMEOUT)
    identity_full = option_value(step, "replica_identity") == "full"
    schema = _client(ctx, src, "pg_dump", "-w --schema-only --no-owner --no-privileges --no-publications "
                     "--no-subscriptions")
    load = _client(ctx, dst, "psql", ADMIN_FLAGS)
    user = replication_user(src)
    info = f"host=127.0.0.1 port={tunnel_port(step, src, dst)} user={_conn_value(user)} " \
           f"dbname={_conn_value(src.database)}"
    create = [Lit(f"CREATE SUBSCRIPTION {sql_ident(name)} CONNECTION '{info}")]
    if src.password is not None and isinstance(src.password, A.Secret):
        create += [Lit(" password="), SecretArg(src.password, escape="pg-conninfo")]
    create.append(Lit(f"' PUBLICATION {sql_ident(name)} WITH (copy_data = true, slot_name = {sql_str(name)}, "
                      "binary = true);\n"))
    return [
        _psql(ctx, dst, "postgres", _prepare_target_sql(dst, name), f"prepare {dst.name} for replication", 600.0),
        attrs.evolve(_psql(ctx, src, src.database, _prepare_source_sql(src, name, identity_full),
                           f"publish {src.name}'s tables", 600.0), creates=objects(ctx, src, dst)),
        Feed(load, f"copy {src.name}'s schema into {dst.name}", schema, timeout=3600.0,
             limit=256 << 20),
        _tunnel(step, src, dst),
        _psql(ctx, dst, dst.database, tuple(create), f"subscribe {dst.name} to {src.name}", 600.0),
        _psql(ctx, dst, dst.database, wait_copied_sql(name), f"copy {src.name}'s rows into {dst.name}", timeout),
    ]


def final(ctx: CompileContext, step: A.Replicate, src: Postgres, dst: Postgres) -> List:
    """`replicate SRC to DST`: the final pass (see the module's docstring)."""
    name = replication_name(src, dst)
    timeout = step_timeout(step, DEFAULT_TIMEOUT)
    sequences = _client(ctx, src, "psql", "-X -w -q -A -t", Arg(SEQUENCES_SQL, "--command="))
    load = _client(ctx, dst, "psql", ADMIN_FLAGS)
    return [
        _tunnel(step, src, dst),
        _psql(ctx, dst, dst.database, wait_copied_sql(name), f"finish copying {src.name}'s rows", timeout),
        # asked of the target first: once its subscription is gone (a resumed final pass dropped it), the slot
        # has no reader any more and there is nothing to wait for
        Feed(_client(ctx, src, "psql", ADMIN_FLAGS), f"wait until {dst.name} has caught up",
             _client(ctx, dst, "psql", "-X -w -q -A -t", Arg(while_subscribed_sql(name, wait_caught_up_sql(name)),
                                                             "--command=")), timeout=timeout),
        Feed(load, f"copy {src.name}'s sequences into {dst.name}", sequences, timeout=600.0,
             limit=64 << 20),
        _psql(ctx, dst, dst.database, drop_subscription_sql(name)
              + f"SELECT format('COMMENT ON DATABASE %I IS NULL', {sql_str(dst.database)}) \\gexec\n",
              f"end {dst.name}'s subscription", 600.0),
        attrs.evolve(_psql(ctx, src, src.database, drop_source_objects_sql(name), f"remove the slot and "
                           f"publication of {src.name}", 600.0), removes=name),
        _tunnel(step, src, dst, close=True),
    ]


def _conn_value(value: str) -> str:
    """A libpq value inside a SQL literal: libpq-quoted when needed, quotes doubled."""
    return libpq_quote(value).replace("'", "''")


# ---------------------------------------------------------------- preflight (P413)

SEPARATOR = "\x1f"


def _p413(step: A.Replicate, message: str, help: str, notes=(), label: str = "") -> Finding:
    return P413.finding(message, step.span, label=label, notes=tuple(notes), help=help)


def _ask(ctx, run, db: Postgres, database: str, fields: List[str]) -> Optional[List[str]]:
    """One row of `fields` (SQL expressions) read as `db`'s login on `database`; None when psql fails (the
    login itself is P406's)."""
    sql = "SELECT concat_ws(chr(31), " + ", ".join(f"({f})::text" for f in fields) + ")"
    r = run(_client(ctx, db, "psql", "-X -w -q -A -t", Arg(sql, "--command="), database=database))
    row = r.stdout.strip().split(SEPARATOR) if r.ok else []
    return row if len(row) == len(fields) else None


def preflight(ctx, run, step: A.Replicate, src: Postgres, dst: Postgres, side: str) -> List[Finding]:
    """P413 on the `side` ("source" or "target") of a live pass, asked on that database's host."""
    return _source_findings(ctx, run, step, src, dst) if side == "source" else _target_findings(ctx, run, step, dst)


def _source_findings(ctx, run, step: A.Replicate, src: Postgres, dst: Postgres) -> List[Finding]:
    name = replication_name(src, dst)
    user = replication_user(src)
    no_key = ("SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') FROM pg_class c JOIN pg_namespace n "
              f"ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS} AND c.relreplident = 'd' "
              "AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)")
    row = _ask(ctx, run, src, src.database, [
        "current_setting('wal_level')",
        "current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots "
        f"WHERE slot_name <> {sql_str(name)})",
        "current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)",
        f"(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = {sql_str(user)})",
        "(SELECT count(*) FROM pg_largeobject_metadata)",
        f"coalesce(({no_key}), '')",
    ])
    if row is None:
        return []
    wal_level, slots, senders, may_replicate, large_objects, keyless = row
    out = []
    if wal_level != "logical":
        out.append(_p413(step, f"`{src.name}`'s server runs with wal_level = {wal_level}: logical replication "
                               "needs `logical`", label="wal_level is not logical",
                         notes=("changing wal_level takes effect only after a restart of the server (a short stop "
                                "of every app on it)",),
                         help="`ALTER SYSTEM SET wal_level = logical;` then restart the source's server, in a "
                              "maintenance window before the move"))
    if slots.lstrip("-").isdigit() and int(slots) < 1:
        out.append(_p413(step, f"`{src.name}`'s server has no free replication slot", label="no free slot",
                         help="raise max_replication_slots (a restart), or drop an unused slot "
                              "(pg_replication_slots, pg_drop_replication_slot)"))
    if senders.lstrip("-").isdigit() and int(senders) < 1:
        out.append(_p413(step, f"`{src.name}`'s server has no free WAL sender", label="no free WAL sender",
                         help="raise max_wal_senders (a restart)"))
    if may_replicate != "true":
        out.append(_p413(step, f"role `{user}` may not replicate `{src.name}`: it has neither REPLICATION nor "
                               "superuser", label="no REPLICATION",
                         help=f"`ALTER ROLE {sql_ident(user)} REPLICATION;` on the source, or declare a login "
                              "that has it"))
    if large_objects not in ("0", ""):
        out.append(_p413(step, f"`{src.name}` holds {large_objects} large object(s), which logical replication "
                               "does not copy", label="large objects",
                         help="move this database with `dump` and `restore` after the stop"))
    if keyless and step.option("replica_identity") is None:
        out.append(_p413(step, f"tables of `{src.name}` have no primary key or replica identity: {keyless}",
                         label="UPDATE/DELETE would fail",
                         notes=("once they are published, the source refuses UPDATE and DELETE on them: the app "
                                "would fail",),
                         help="add a primary key, or write `replica_identity = full` on the step (whole rows "
                              "identify them; mdsl sets REPLICA IDENTITY FULL on those tables)"))
    if not src.tcp_host:  # the tunnel arrives at 127.0.0.1: the server must take the login over TCP there
        tcp = attrs.evolve(src, tcp_host="127.0.0.1", tcp_port=src.tcp_port or DEFAULT_PORT, socket=None,
                           run_as=None, container=None, user=user)
        r = run(_client(ctx, tcp, "psql", "-X -w -q -A -t", Arg("SELECT 1", "--command=")))
        if not r.ok:
            err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"psql exited with {r.exit}"
            out.append(_p413(step, f"`{src.name}`'s server refuses `{user}` over TCP from 127.0.0.1, where the "
                                   f"replication arrives: {err}", label="no TCP login",
                             help="a `host DB USER 127.0.0.1/32 scram-sha-256` line in pg_hba.conf (and a password "
                                  "on the declaration), or declare `tcp` and `password` for this database"))
    return out


def _target_findings(ctx, run, step: A.Replicate, dst: Postgres) -> List[Finding]:
    row = _ask(ctx, run, dst, "postgres", [
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
        "current_setting('max_logical_replication_workers')::int - (SELECT count(*) FROM pg_stat_subscription "
        "WHERE pid IS NOT NULL)",
        "current_setting('max_replication_slots')::int",
    ])
    if row is None:
        return []
    superuser, workers, origins = row
    out = []
    if superuser != "true":
        out.append(_p413(step, f"`{dst.name}`'s login is not a superuser: PostgreSQL lets only a superuser "
                               "create a subscription", label="not a superuser",
                         help="declare the target with an administrative login (e.g. `run_as = \"postgres\"`)"))
    if workers.lstrip("-").isdigit() and int(workers) < 2:
        out.append(_p413(step, f"`{dst.name}`'s server has {workers} free logical replication worker(s): the "
                               "replication needs one, and one more per table copied at once",
                         label="no free workers", help="raise max_logical_replication_workers (a restart)"))
    if origins == "0":
        out.append(_p413(step, f"`{dst.name}`'s server has max_replication_slots = 0, which also bounds its "
                               "subscriptions' replication origins", label="no replication origins",
                         help="raise max_replication_slots on the target (a restart)"))
    return out
