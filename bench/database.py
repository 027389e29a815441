"""Target 4: dump + copy + restore of a PostgreSQL database, mdsl's way against the seed's.

    python3 bench/database.py                # pgbench scale 100 (~1.5 GB), 2 rounds (8-12 minutes here)
    python3 bench/database.py --quick        # scale 20 (~300 MB), 1 round
    python3 bench/database.py --write-docs   # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a) and .3 (b), and two PostgreSQL 15
clusters made with initdb (tests/e2e/hosts.py): the source, loaded with
`pgbench -i -s SCALE` (plus its indexes), reached from a; an empty target
reached from b. Both over their unix sockets as `postgres`. Before each run
the target database is dropped and created empty (not timed). Each round, in
turn:

  seed             pg_dump -Fc (default gzip) on a; scp to b; pg_restore (serial) on b
  mdsl-default     `mdsl apply`: dump (mdsl's defaults), transfer (stream, sha256 both
                   ends), restore replace; check, connect, preflight, journal included
  mdsl-dir-j2      the same plan with `format = directory jobs = 2` on the dump and
                   `jobs = 2` on the restore

and it prints both times, the ratios and the dump sizes; the restored
database is compared with the source (row counts of every table) at the end.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from _common import (
    MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, load, machine, mdsl_apply, table, timed,
    write_doc_block,
)
from hosts import PG_BIN


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=int, default=None, help="pgbench scale (default 100; 20 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    scale = args.scale or (20 if args.quick else 100)
    runs = args.runs or (1 if args.quick else 2)
    compile_bytecode()
    q = shlex.quote

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src, dst = H.postgres("source"), H.postgres("target")
        src.psql("create database bench;")
        print(f"loading pgbench scale {scale} into the source; {load()}")
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale), "-h", str(src.sockdir),
                        "-p", str(src.port), "-U", "postgres", "bench"], check=True, capture_output=True)
        db_bytes = int(src.psql("select pg_database_size('bench')", db="bench"))
        want = src.row_counts("bench")

        def pg_decl(name, host, pg, db, fresh=False):
            return (f'postgres {name} on {host} {{ database = "{db}"  user = "postgres"  socket = "{pg.sockdir}"  '
                    f'port = {pg.port}  bin = "{PG_BIN}"' + ("  fresh = true" if fresh else "") + " }")

        def plan_for(name, dump_opts="", restore_opts="", path="db.dump"):
            p = H.base / f"{name}.plan"
            p.write_text(f'''plan "database bench"
{H.host_decl("a")}
{H.host_decl("b")}
{pg_decl("old_db", "a", src, "bench")}
{pg_decl("new_db", "b", dst, "bench_new", fresh=True)}
steps {{
  dump old_db to a:"{a.root}/{path}"{dump_opts}
  transfer a:"{a.root}/{path}" to b:"{b.root}/{path}"
  restore b:"{b.root}/{path}" into new_db replace{restore_opts}
}}
''')
            return p

        plans = {"mdsl-default": plan_for("default"),
                 "mdsl-dir-j2": plan_for("dir", " format = directory jobs = 2", " jobs = 2", "db.dir")}
        sizes = {}
        dsn_src = f"host={src.sockdir} port={src.port} user=postgres dbname=bench"
        dsn_dst = f"host={dst.sockdir} port={dst.port} user=postgres dbname=bench_new"

        def clean():
            subprocess.run(f"rm -rf {q(str(a.root))}/db.* {q(str(b.root))}/db.*", shell=True, check=True)
            dst.psql("drop database if exists bench_new;")
            dst.psql("create database bench_new template template0;")

        def seed(side: Side) -> float:
            dump_a, dump_b = f"{a.root}/db.dump", f"{b.root}/db.dump"
            t = timed(H.ssh_base("a") + [f"{PG_BIN}/pg_dump -Fc -f {q(dump_a)} {q('--dbname=' + dsn_src)}"])
            sizes["seed"] = os.path.getsize(dump_a)
            t += timed(H.ssh_base("a") + [f"scp -q -F {q(str(H.cluster.ssh_config))} {q(dump_a)} {q('b:' + dump_b)}"])
            t += timed(H.ssh_base("b") + [f"{PG_BIN}/pg_restore --no-owner --clean --if-exists "
                                          f"{q('--dbname=' + dsn_dst)} {q(dump_b)}"])
            return t

        def mdsl(name):
            def run(side: Side) -> float:
                m = mdsl_apply(plans[name])
                out = subprocess.run(["du", "-sb", *(str(p) for p in b.root.glob("db.*"))], capture_output=True,
                                     text=True).stdout.split()
                sizes[name] = int(out[0]) if out else 0
                return m.seconds
            return run

        print(f"{runs} round(s); database {db_bytes / MiB:.0f} MiB; {load()}")
        res = alternate(runs, {"seed": seed, "mdsl-default": mdsl("mdsl-default"), "mdsl-dir-j2": mdsl("mdsl-dir-j2")},
                        before=clean)
        got = dst.row_counts("bench_new")
        assert got == want, (got, want)
        end_load = load()

    s = res["seed"]
    rows = [[f"`{x.name}`", f"{x.med:.1f}", ", ".join(f"{v:.1f}" for v in x.seconds), f"{sizes[x.name] / MiB:.0f} MiB",
             f"{x.med / s.med:.2f}"] for x in res.values()]
    text = "\n".join([
        f"pgbench scale {scale} ({db_bytes / MiB:.0f} MiB on disk), dump on a, copy a -> b, restore on b; median of "
        f"{runs} alternating round(s). {machine()}; {end_load} at the end.", "",
        table(["way", "median s", "runs (s)", "dump", "time / seed"], rows)])
    print()
    print(text)
    if args.write_docs:
        write_doc_block("database", f"`{command_line()}`\n\n" + text)
    return 0 if res["mdsl-default"].med < s.med else 1


if __name__ == "__main__":
    sys.exit(main())
