"""Issue 18: the downtime of a database move with `replicate ... live` against dump and restore, by size.

    python3 bench/replication.py                     # ~1 GB and ~3 GB databases, 1 round each (~30 minutes)
    python3 bench/replication.py --sizes 0.1 --runs 1   # ~100 MB (~3 minutes)
    python3 bench/replication.py --write-docs        # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a, the old box) and .3 (b, the new box) and two PostgreSQL 15
clusters (tests/e2e/hosts.py): the source with `wal_level = logical`, reached from a over TCP as
its superuser (the subscription logs in through mdsl's tunnel as that login), holding Mastodon-like
rows made by bench/database.py's `load_mastodon` (its two generator tables have no primary key:
the plan says `replica_identity = full`); the target, reached from b over its socket. The old app
is the e2e writer (tests/e2e/writer.py, 20 inserts a second into `writer_events`, each taking the
identity sequence) running on a while the live pass copies; the new app is the same writer on the
target.

Per size, the two ways alternate (each its own mdsl plan):

  replicate   replicate old_db to new_db live  replica_identity = full   (the app runs)
              stop old_app; replicate old_db to new_db; start new_app
  dump        stop old_app; dump old_db (zstd); transfer to b; restore into new_db; start new_app

The **downtime window** is from the start of `stop old_app` to the end of `start new_app` (the
journal's per-step seconds, summed over those steps; the steps run one after the other). After every
run (not timed) the target is compared with the source: every table's rows (count and a hash sum)
and every sequence; a run whose copy differs counts as failed. Between runs the target database is
dropped and the old app started again. Exits 1 if a copy differs, or if the 1 GB case's downtime
with replication is over 5 s (the issue's target).

    python3 bench/replication.py --kind mariadb --sizes 1,2      # MariaDB, ~1 GB and ~2 GB
    python3 bench/replication.py --kind mariadb --files 400000   # MariaDB, ~200 MB (~5 minutes)

With `--kind mariadb`: two MariaDB servers (tests/e2e/dbservers.py; the source with log_bin,
binlog_format = ROW, server_id 11), the source holding bench/mariadb.py's Nextcloud-like rows
(per size in `--sizes`, or `--files` oc_filecache rows: 2,300,000 is about 1.1 GB), reached from a
over TCP by a user with a password (the replica logs in through mdsl's tunnel as that login); the
target from b as root over its socket. The old app inserts a comment into the source every 20 ms; the new app is a marker file.
The same two ways, the same window; afterwards every table's CHECKSUM TABLE and row count are equal
and no replication connection is left on the target.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, journal_steps, load, machine, mdsl_apply, table,
    write_doc_block,
)
from hosts import Writer, plan_str

HERE = Path(__file__).resolve().parent
STATUSES_PER_GB = 1_100_000  # bench/database.py's rows: ~1 GB on disk per 1.1 M statuses, indexes included
SOURCE_DB, TARGET_DB = "mastodon_production", "mastodon"
PASSWORD_ENV = "MDSL_BENCH_REPL_PASSWORD"


def table_sums(pg, db: str, skip=()) -> dict:
    """{table: (rows, sum of a 64-bit hash of each row's text)} over every public table (order-free)."""
    tables = [t for t in pg.tables(db) if t not in skip]
    parts = [f"select '{t}', count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) from public.\"{t}\" t"
             for t in tables]
    out = pg.psql("set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set extra_float_digits = 3;\n"
                  + "\nunion all\n".join(parts) + ";", db=db)
    return {line.split("|")[0]: tuple(line.split("|")[1:]) for line in out.splitlines()}


def sequences(pg, db: str, skip=()) -> dict:
    out = pg.psql("select sequencename, last_value from pg_sequences where schemaname = 'public'", db=db)
    return {n: v for n, v in (line.split("|") for line in out.splitlines()) if not n.startswith(skip)}


def write_plans(base: Path, decls: str, a, b, dump_name: str, live_options: str = ""):
    """The two ways this bench compares, each a plan file: name -> (its steps, the journal numbers of the
    steps from `stop old_app` to `start new_app`, the downtime window), and name -> plan file."""
    plans = {
        "replicate": (f"""  replicate old_db to new_db live{live_options}
  stop old_app
  replicate old_db to new_db
  start new_app
""", ("2", "3", "4")),
        "dump": (f"""  stop old_app
  dump old_db to {a.name}:"{a.root}/{dump_name}"
  transfer {a.name}:"{a.root}/{dump_name}" to {b.name}:"{b.root}/{dump_name}"
  restore {b.name}:"{b.root}/{dump_name}" into new_db replace
  start new_app
""", ("1", "2", "3", "4", "5")),
    }
    files = {}
    for name, (steps, _) in plans.items():
        files[name] = base / f"{name}.plan"
        files[name].write_text(f'plan "{name}"\n{decls}\nsteps {{\n{steps}}}\n')
    return plans, files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=("postgres", "mariadb"), default="postgres")
    ap.add_argument("--files", type=int, default=None,
                    help="mariadb: oc_filecache rows, one size instead of --sizes (2.3 M: ~1.1 GB)")
    ap.add_argument("--sizes", default="1,3", help="database sizes in GB, comma-separated (default 1,3)")
    ap.add_argument("--runs", type=int, default=1, help="rounds per size (default 1)")
    ap.add_argument("--sides", default="replicate,dump")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if args.kind == "mariadb":
        return mariadb(args)
    sizes = [float(x) for x in args.sizes.split(",")]
    wanted = args.sides.split(",")
    compile_bytecode()
    print(f"start: {load()}", flush=True)
    results = []
    failed = False
    with contextlib.ExitStack() as stack:
        H = stack.enter_context(BenchHosts(2))
        a, b = H.cluster.a, H.cluster.b
        src, dst = H.postgres("source"), H.postgres("target")
        src.extra_conf = "wal_level = logical\nmax_wal_size = 4GB\n"
        src.restart()
        password = secrets.token_urlsafe(12)
        src.psql(f"alter role postgres password '{password}';")
        env = {**os.environ, PASSWORD_ENV: password}
        run_dir = H.base / "apps"
        old_w = Writer(run_dir / "old", src.dsn(SOURCE_DB), a.root / "old-files", rate=20, name="old-app")
        new_w = Writer(run_dir / "new", dst.dsn(TARGET_DB), b.root / "new-files", table="writer_events_new",
                       rate=20, name="new-app")
        stack.callback(old_w.close)
        stack.callback(new_w.close)
        decls = f"""
{H.host_decl(a)}
{H.host_decl(b)}
postgres old_db on {a.name} {{ database = "{SOURCE_DB}"  user = "postgres"  tcp = {plan_str(src.tcp)}
                        password = env("{PASSWORD_ENV}") }}
postgres new_db on {b.name} {{ database = "{TARGET_DB}"  user = "postgres"  socket = {plan_str(str(dst.sockdir))}
                        port = {dst.port}  fresh = true }}
service old_app on {a.name} {{ start = {plan_str(old_w.start_cmd)}  stop = {plan_str(old_w.stop_cmd)}
                       status = {plan_str(old_w.status_cmd)}  writes = [old_db] }}
service new_app on {b.name} {{ start = {plan_str(new_w.start_cmd)}  stop = {plan_str(new_w.stop_cmd)}
                       status = {plan_str(new_w.status_cmd)}  writes = [new_db]  initially = stopped }}
"""
        plans, files = write_plans(H.base, decls, a, b, "app.dump", live_options="  replica_identity = full")

        for size in sizes:
            with contextlib.suppress(Exception):
                old_w.stop()
            src.psql(f"drop database if exists {SOURCE_DB} with (force);")
            src.psql(f"create database {SOURCE_DB} template template0 encoding 'UTF8';")
            t = time.monotonic()
            sys.path.insert(0, str(HERE))
            from database import load_mastodon
            load_mastodon(src, SOURCE_DB, int(size * STATUSES_PER_GB))
            src.compact()
            db_bytes = int(src.psql(f"select pg_database_size('{SOURCE_DB}')"))
            print(f"database: {db_bytes / MiB:.0f} MiB in {time.monotonic() - t:.0f}s; {load()}", flush=True)

            def reset():
                with contextlib.suppress(Exception):
                    new_w.stop()
                dst.psql(f"drop database if exists {TARGET_DB} with (force);")
                dst.psql(f"create database {TARGET_DB} template template0 encoding 'UTF8';")
                for p in (a.root / "app.dump", b.root / "app.dump"):
                    p.unlink(missing_ok=True)
                if not old_w.running:
                    old_w.start()
                time.sleep(2)  # the app writes for a while before the move starts

            def side(name):
                def run(s: Side) -> float:
                    m = mdsl_apply(files[name], env=env)
                    steps = journal_steps(files[name])
                    window = sum(steps[i] for i in plans[name][1])
                    s.add("total", m.seconds)
                    s.parts = getattr(s, "parts", []) + [" + ".join(f"{steps[i]:.1f}" for i in plans[name][1])]
                    same = (table_sums(dst, TARGET_DB, skip=("writer_events_new",))
                            == table_sums(src, SOURCE_DB)
                            and sequences(dst, TARGET_DB, skip="writer_events_new")
                            == sequences(src, SOURCE_DB))
                    slots = src.psql("select count(*) from pg_replication_slots")
                    if not same or slots != "0":
                        print(f"  {name}: the target differs from the source, or slots are left ({slots})",
                              flush=True)
                        return float("nan")
                    return window
                return run

            out = alternate(args.runs, {n: side(n) for n in wanted}, before=reset)
            results.append((size, db_bytes, out))

        lines = [f"{machine()}; {load()} at the end.", "",
                 table(["database", "way", "downtime window s", "runs (s)", "its steps, last run (s)", "whole apply s"],
                       [(f"{db / MiB:,.0f} MiB", n, f"{s.med:.1f}", ", ".join(f"{x:.1f}" for x in s.seconds),
                         (getattr(s, "parts", None) or ["-"])[-1], f"{s.med_of('total'):.1f}")
                        for _, db, out in results for n, s in out.items()]),
                 "", f"command: `{command_line()}`"]
        text = "\n".join(lines)
        print(text)
        if args.write_docs:
            write_doc_block("replication", text)
        for size, _, out in results:
            for s in out.values():
                failed |= bool(s.failures)
            if size == 1 and "replicate" in out and not out["replicate"].med <= 5.0:
                failed = True
    return 1 if failed else 0


MARIA_DB, MARIA_USER = "nextcloud", "ncrepl"
FILES_PER_GB = 2_150_000  # bench/mariadb.py's rows: 2.3 M oc_filecache rows measure 1066 MiB with the others


def mariadb(args) -> int:
    """`--kind mariadb`: the same two ways for a MariaDB database, per size (see the module's docstring)."""
    import shlex

    from dbservers import MariaDbServer, sql_str
    q = shlex.quote
    sizes = [args.files] if args.files else [int(float(x) * FILES_PER_GB) for x in args.sizes.split(",")]
    compile_bytecode()
    print(f"start: {load()}", flush=True)
    results = []
    with contextlib.ExitStack() as stack:
        H = stack.enter_context(BenchHosts(2))
        a, b = H.cluster.a, H.cluster.b
        src = MariaDbServer(H.base, "source").install()
        stack.callback(src.destroy)
        dst = MariaDbServer(H.base, "target").install()
        stack.callback(dst.destroy)
        src.extra_args = [f"--log-bin={src.datadir}/binlog", "--binlog-format=ROW", "--server-id=11"]
        dst.extra_args = ["--server-id=12"]
        src.start()
        dst.start()
        password = secrets.token_urlsafe(12)
        src.create_user(MARIA_USER, password)
        src.sql(f"GRANT ALL PRIVILEGES ON *.* TO {sql_str(MARIA_USER)}@'127.0.0.1';")
        env = {**os.environ, PASSWORD_ENV: password}
        client = " ".join(q(w) for w in src.client_argv(MARIA_DB))
        insert = ("INSERT INTO oc_comments (actor_id, object_id, message, creation_timestamp) "
                  "VALUES ('writer', 'live', 'written live', NOW());")
        pid, marker = q(str(a.root / "writer.pid")), q(str(b.root / "new_app.running"))
        loop = f"while :; do {client} -e {q(insert)} || exit 1; sleep 0.02; done"
        start = f"nohup sh -c {q(loop)} >/dev/null 2>&1 & echo $! > {pid}"
        stop = f"kill $(cat {pid}); while kill -0 $(cat {pid}) 2>/dev/null; do sleep 0.05; done; rm -f {pid}"
        status = f"test -f {pid} && kill -0 $(cat {pid}) 2>/dev/null"
        stack.callback(lambda: subprocess.run(["sh", "-c", f"{status} && {{ {stop}; }}"], timeout=30))
        decls = f"""
{H.host_decl(a)}
{H.host_decl(b)}
{src.plan_decl("old_db", a.name, database=MARIA_DB, user=MARIA_USER, password_env=PASSWORD_ENV)}
{dst.plan_decl("new_db", b.name, database=MARIA_DB, socket=True, run_as="root", fresh=True)}
service old_app on {a.name} {{ start = {plan_str(start)}  stop = {plan_str(stop)}  status = {plan_str(status)}
                       writes = [old_db] }}
service new_app on {b.name} {{ start = {plan_str("touch " + marker)}  stop = {plan_str("rm -f " + marker)}
                       status = {plan_str("test -f " + marker)}  writes = [new_db]  initially = stopped }}
"""
        plans, files = write_plans(H.base, decls, a, b, "nc.sql.zst")

        def reset():
            subprocess.run(["sh", "-c", f"rm -f {marker} {q(str(a.root))}/nc.* {q(str(b.root))}/nc.*"], check=True)
            dst.sql(f"DROP DATABASE IF EXISTS {MARIA_DB}")
            if subprocess.run(["sh", "-c", status]).returncode != 0:
                subprocess.run(["sh", "-c", start], check=True)
            time.sleep(2)  # the app writes for a while before the move starts

        def side(name):
            def run(s: Side) -> float:
                if name == "dump":
                    dst.createdb(MARIA_DB)
                m = mdsl_apply(files[name], env=env)
                steps = journal_steps(files[name])
                s.add("total", m.seconds)
                s.parts = getattr(s, "parts", []) + [" + ".join(f"{steps[i]:.1f}" for i in plans[name][1])]
                if dst.table_sums(MARIA_DB) != src.table_sums(MARIA_DB) or dst.sql("SHOW ALL SLAVES STATUS"):
                    print(f"  {name}: the target differs from the source, or a connection is left", flush=True)
                    return float("nan")
                return sum(steps[i] for i in plans[name][1])
            return run

        for files_rows in sizes:
            subprocess.run(["sh", "-c", f"{status} && {{ {stop}; }}"], timeout=30)
            src.sql(f"DROP DATABASE IF EXISTS {MARIA_DB}")
            t = time.monotonic()
            src.createdb(MARIA_DB)
            src.load_nextcloud(MARIA_DB, files=files_rows)
            src.sql("ANALYZE TABLE " + ", ".join(src.tables(MARIA_DB)), db=MARIA_DB)  # sizes, as bench/mariadb.py
            db_bytes = int(src.sql("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES "
                                   f"WHERE TABLE_SCHEMA = '{MARIA_DB}'"))
            print(f"database: {files_rows:,} oc_filecache rows, {db_bytes / MiB:.0f} MiB in "
                  f"{time.monotonic() - t:.0f}s; {load()}", flush=True)
            out = alternate(args.runs, {n: side(n) for n in args.sides.split(",")}, before=reset)
            results.append((files_rows, db_bytes, out))
        version = src.version()
    lines = [f"MariaDB {version}, Nextcloud-like databases (oc_filecache rows as given); a writer inserting "
             f"50 rows/s until the stop. {machine()}; {load()} at the end.", "",
             table(["database", "way", "downtime window s", "runs (s)", "its steps, last run (s)", "whole apply s"],
                   [(f"{db / MiB:,.0f} MiB ({rows:,} files)", n, f"{s.med:.1f}",
                     ", ".join(f"{x:.1f}" for x in s.seconds), (getattr(s, "parts", None) or ["-"])[-1],
                     f"{s.med_of('total'):.1f}")
                    for rows, db, out in results for n, s in out.items()]),
             "", f"command: `{command_line()}`"]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        write_doc_block("replication-mariadb", text)
    return 1 if any(s.failures for _, _, out in results for s in out.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
