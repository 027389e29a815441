"""Issue 12: a MariaDB database dumped, copied and restored by mdsl, by hand as guides do, and by mydumper.

    python3 bench/mariadb.py                 # ~1 GB Nextcloud-like database, 2 rounds of 3 ways
    python3 bench/mariadb.py --quick         # ~150 MB, 1 round
    python3 bench/mariadb.py --write-docs    # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a) and .3 (b) (tests/e2e/hosts.py) and two
MariaDB servers made with mariadb-install-db (tests/e2e/dbservers.py): the
source, reached from a, and the target, reached from b, both over their socket
as root (unix_socket auth), both with the same InnoDB settings (1 GiB buffer
pool, 256 MiB redo log: a small server's, not the test suite's 64 MiB). The
source holds Nextcloud's busiest tables (oc_filecache with its unique path
hash, oc_activity with JSON parameters, comments with a trigger, preview
BLOBs of random bytes, a view and a procedure), utf8mb4 text with emoji; rows
come from MariaDB's SEQUENCE engine, MD5/SHA1 and RANDOM_BYTES, so they
compress like real rows do and not like blank filler. Before each run the
target database is dropped and made again, and the dumps are removed (not
timed). Each round, in turn (the order rotates):

  by-hand     `mysqldump --single-transaction DB | gzip > F` on a; scp a -> b;
              `gunzip < F | mysql DB` on b (the guides' way; with --routines --events,
              so that it moves what the others do)
  mdsl        `mdsl apply` of dump, transfer, restore replace with mdsl's defaults:
              check, connect, preflight, journal, the dump's read-back and the
              stream copy's sha256 on both ends included
  mydumper    `mydumper -t 2 -c -r 250000 -G -E -R` (per table and chunk, gzip) on a;
              the directory copied by scp -r; `myloader -t 2 -o` on b

After every run the target's row counts must equal the source's; after each
way's last run every table's CHECKSUM TABLE too, and the view, trigger and
procedure must exist. mariadb-backup (physical) is not measured: it restores a
whole server's data directory of the same version, with the target server
stopped, which a plan for one database does not do. Exits 1 when mdsl is not
at most 0.6 of the by-hand time.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict

from _common import (
    MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, hand_made_access, load, machine, mdsl_apply,
    table, timed,
    write_doc_block,
)
from database import journal_seconds
from dbservers import MariaDbServer

DB = "nextcloud"


class BenchMariaDb(MariaDbServer):
    """A test server with a small production server's InnoDB memory, so loading is not the redo log's."""

    @staticmethod
    def _small_innodb() -> list[str]:
        return ["--innodb-log-file-size=256M", "--innodb-buffer-pool-size=1G"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=None,
                    help="oc_filecache rows (default 2,300,000: about 1.1 GB with the other tables; 400,000 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    ap.add_argument("--no-mydumper", action="store_true", help="leave mydumper/myloader out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    files = args.files or (400_000 if args.quick else 2_300_000)
    runs = args.runs or (1 if args.quick else 2)
    with_mydumper = not args.no_mydumper and shutil.which("mydumper") and shutil.which("myloader")
    compile_bytecode()
    q = shlex.quote
    started = time.perf_counter()
    print(f"start: {load()}", flush=True)

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src = BenchMariaDb(H.base, "source").install()
        dst = BenchMariaDb(H.base, "target").install()
        try:
            src.start()
            dst.start()
            t0 = time.perf_counter()
            src.createdb(DB)
            src.load_nextcloud(DB, files=files)
            src.sql("ANALYZE TABLE " + ", ".join(src.tables(DB)), db=DB)
            db_bytes = int(src.sql("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES "
                                   f"WHERE TABLE_SCHEMA = '{DB}'"))
            print(f"loaded {files:,} files' rows: {db_bytes / MiB:.0f} MiB in {time.perf_counter() - t0:.0f} s; "
                  f"{load()}", flush=True)
            want_sums = src.table_sums(DB)
            want_counts = {t: s.rows for t, s in want_sums.items()}
            want_objects = sorted(src.routines(DB))
            version = src.version()

            plan = H.base / "mariadb.plan"
            plan.write_text(f'''plan "MariaDB bench"
{H.host_decl("a")}
{H.host_decl("b")}
mysql old_db on a {{ database = "{DB}"  socket = "{src.socket}" }}
mysql new_db on b {{ database = "{DB}"  socket = "{dst.socket}"  fresh = true }}
steps {{
  dump old_db to a:"{a.root}/nc.sql.zst"
  transfer a:"{a.root}/nc.sql.zst" to b:"{b.root}/nc.sql.zst"
  restore b:"{b.root}/nc.sql.zst" into new_db replace
}}
''')
            sizes: Dict[str, int] = {}
            checked = set()
            split_said: list[str] = []  # what mdsl's restore step said about the tables it split, each run
            # the hosts share nothing: a gets its own key for b, as an admin would make (not timed)
            hand_made_access(a, b)
            scp_opts = f"-o BatchMode=yes -P {b.port}"
            sock_a, sock_b = f"--socket={q(str(src.socket))}", f"--socket={q(str(dst.socket))}"

            def clean():
                subprocess.run(f"rm -rf {q(str(a.root))}/nc.* {q(str(b.root))}/nc.*", shell=True, check=True)
                dst.sql(f"DROP DATABASE IF EXISTS {DB}")
                dst.createdb(DB)

            def verify(name: str, side: Side) -> None:
                got = {t: s.rows for t, s in dst.table_sums(DB, checksum=False).items()}
                assert got == want_counts, (name, got, want_counts)
                if len(side.seconds) == runs - 1:  # its last run: every table's checksum and the objects
                    sums = dst.table_sums(DB)
                    assert sums == want_sums, (name, sums, want_sums)
                    assert sorted(dst.routines(DB)) == want_objects, (name, dst.routines(DB))
                    checked.add(name)

            def by_hand(side: Side) -> float:
                f_a, f_b = f"{a.root}/nc.sql.gz", f"{b.root}/nc.sql.gz"
                t1 = timed(H.ssh_base("a") + [f"mysqldump {sock_a} -u root --single-transaction --routines --events "
                                              f"{DB} | gzip > {q(f_a)}"])
                sizes["by-hand"] = os.path.getsize(f_a)
                t2 = timed(H.ssh_base("a") + [f"scp -q {scp_opts} {q(f_a)} {q(f'root@{b.address}:{f_b}')}"])
                t3 = timed(H.ssh_base("b") + [f"gunzip < {q(f_b)} | mysql {sock_b} -u root {DB}"])
                for k, v in (("dump", t1), ("copy", t2), ("restore", t3)):
                    side.add(k, v)
                verify("by-hand", side)
                return t1 + t2 + t3

            def mydumper(side: Side) -> float:
                d_a, d_b = f"{a.root}/nc.mydumper", f"{b.root}/nc.mydumper"
                t1 = timed(H.ssh_base("a") + [f"mydumper {sock_a} -u root -B {DB} -t 2 -c -r 250000 -G -E -R "
                                              f"--trx-consistency-only -o {q(d_a)}"])
                sizes["mydumper"] = int(subprocess.run(["du", "-sb", d_a], capture_output=True, text=True,
                                                       check=True).stdout.split()[0])
                t2 = timed(H.ssh_base("a") + [f"scp -q -r {scp_opts} {q(d_a)} {q(f'root@{b.address}:{d_b}')}"])
                t3 = timed(H.ssh_base("b") + [f"myloader {sock_b} -u root -B {DB} -t 2 -o -d {q(d_b)}"])
                for k, v in (("dump", t1), ("copy", t2), ("restore", t3)):
                    side.add(k, v)
                verify("mydumper", side)
                return t1 + t2 + t3

            def mdsl(side: Side) -> float:
                m = mdsl_apply(plan)
                said = [x.strip(" |") for x in m.stdout.splitlines() if "loaded by several clients at once" in x]
                split_said.extend(said[-1:])
                for k, v in journal_seconds(plan).items():
                    side.add(k, v)
                sizes["mdsl"] = os.path.getsize(f"{b.root}/nc.sql.zst")
                verify("mdsl", side)
                return m.seconds

            sides = {"by-hand": by_hand, "mdsl": mdsl, **({"mydumper": mydumper} if with_mydumper else {})}
            print(f"{runs} round(s) of {len(sides)} ways; database {db_bytes / MiB:.0f} MiB; {load()}", flush=True)
            res = alternate(runs, sides, before=clean)
            end_load = load()
        finally:
            src.destroy()
            dst.destroy()

    explain = {
        "by-hand": "`mysqldump --single-transaction --routines --events \\| gzip`; scp; `gunzip \\| mysql`",
        "mdsl": "`mariadb-dump --single-transaction ... \\| zstd -T0 -1`, read back; stream copy; restore by "
                "2 clients at once (a table each, a big table's rows in 16 MiB parts across both; secondary keys "
                "after the rows)",
        "mydumper": "`mydumper -t 2 -c -r 250000` (gzip per chunk); `scp -r`; `myloader -t 2`",
    }
    hand, ours = res["by-hand"], res["mdsl"]
    rows = []
    for x in res.values():
        split = " / ".join(f"{x.med_of(k):.1f}" for k in ("dump", "copy", "restore"))
        rows.append([f"`{x.name}`", explain[x.name], f"**{x.med:.1f}**" if x.name == "mdsl" else f"{x.med:.1f}",
                     ", ".join(f"{v:.1f}" for v in x.seconds), split, f"{sizes[x.name] / MiB:.0f} MiB",
                     f"{x.med / hand.med:.2f}"])
    lines = [
        f"Nextcloud-like database ({files:,} oc_filecache rows, {sum(want_counts.values()):,} rows in all), "
        f"{db_bytes / MiB:.0f} MiB on disk with its indexes; MariaDB {version}; "
        f"dump on a, copy a -> b, restore on b; median of {runs} alternating round(s). {machine()}; "
        f"{end_load} at the end; {(time.perf_counter() - started) / 60:.1f} minutes in all.", "",
        table(["way", "what", "median s", "runs (s)", "dump / copy / restore s", "dump size", "time / by-hand"],
              rows, align="llrrrrr"), "",
        f"- mdsl / by hand: **{ours.med / hand.med:.2f}** ({ours.med:.1f} s vs {hand.med:.1f} s; target <= 0.6)",
    ]
    if "mydumper" in res:
        lines.append(f"- mdsl / mydumper+myloader (2 threads): **{ours.med / res['mydumper'].med:.2f}** "
                     f"(target <= 1.1)")
    else:
        lines.append("- mydumper/myloader not installed here (Debian 12: `apt install mydumper`): not measured")
    lines += [
        f"- the restored database equals the source: row counts after every run; every table's CHECKSUM TABLE "
        f"and the view, trigger and procedure after the last run of {'; '.join(sorted(checked))}",
        f"- mdsl's restore, last run: {split_said[-1] if split_said else 'no table split'}",
        "- mdsl's time includes `mdsl apply`'s own cost (check, connect, preflight, journal), the dump's "
        "read-back and the copy's sha256 on both ends; the other ways' parts are timed alone",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    if args.write_docs:
        write_doc_block("mariadb", f"`{command_line()}`\n\n" + text)
    return 0 if ours.med <= 0.6 * hand.med else 1


if __name__ == "__main__":
    sys.exit(main())
