"""Issue 12: a MariaDB database moved by mdsl, by hand as guides do, by mydumper and by mariadb-backup.

    python3 bench/mariadb.py                 # ~1 GB Nextcloud-like database, 2 rounds of 4 ways
    python3 bench/mariadb.py --quick         # ~150 MB, 1 round
    python3 bench/mariadb.py --backup-way both # mariadb-backup streamed, and into a directory copied by scp -r
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
  mariadb-backup
              the physical copy, as MariaDB's "Full Backup and Restore" page moves a
              server: `mariadb-backup --backup --parallel=2 --stream=mbstream` on a, piped
              through ssh into `mbstream -x` on b (dump and copy at once: the dump
              column holds both); on b `--prepare`, the target server stopped,
              its data directory emptied, `--move-back` into it, `chown -R mysql`,
              the server started, until it answers. `--backup-way dir` writes the
              backup into a directory on a and copies it by `scp -r` instead: that
              writes and reads the whole server once more on a, and was slower
              side by side (`--backup-way both`; figures in docs/performance.md),
              so the stream is the default. `--move-back` (a rename on the same
              file system) rather than `--copy-back`: the backup on b is thrown
              away after the move anyway

After every run the target's row counts must equal the source's; after each
way's last run every table's CHECKSUM TABLE too, and the view, trigger and
procedure must exist. After a mariadb-backup run the target holds the source's
whole server (its users too): before the next way's run its pristine data
directory is put back (not timed), so every way restores into the same server.

mariadb-backup moves a whole server's data directory into a stopped server of
the identical version. That is not safe for a plan's case: one database, into
a running target server that may hold other databases and may be a newer
version. mdsl never uses it: it is here only as the physical floor to compare
with, and the target of at most 10% slower than the best safe reference is
measured against mydumper/myloader. Exits 1 when mdsl is not at most 0.6 of
the by-hand time.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict

from _common import (
    MiB, BenchHosts, Side, add_runs, alternate, bench_parser, bench_start, hand_made_access, hand_made_scp,
    journal_seconds, load, machine, mdsl_apply, parse_bench_args, report, running, table, timed,
)
from dbservers import MariaDbServer

DB = "nextcloud"
# the mariadb-backup sides: streamed through ssh (the default), or into a directory copied by scp -r
BACKUP_WAYS = {"mariadb-backup": "stream", "mariadb-backup, dir": "dir"}


class BenchMariaDb(MariaDbServer):
    """A test server with a small production server's InnoDB memory, so loading is not the redo log's."""

    @staticmethod
    def _small_innodb() -> list[str]:
        return ["--innodb-log-file-size=256M", "--innodb-buffer-pool-size=1G"]


def quiet(argv: list[str]) -> float:
    """Run a command whose stderr is a log (mariadb-backup's); its wall seconds, or its log's end if it fails."""
    t = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[-1]} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--files", type=int, default=None,
                    help="oc_filecache rows (default 2,300,000: about 1.1 GB with the other tables; 400,000 with --quick)")
    add_runs(ap)
    ap.add_argument("--no-mydumper", action="store_true", help="leave mydumper/myloader out")
    ap.add_argument("--no-backup", action="store_true", help="leave mariadb-backup out")
    ap.add_argument("--backup-way", choices=("stream", "dir", "both"), default="stream",
                    help="mariadb-backup streamed through ssh into mbstream on b (default), into a directory on a "
                         "copied by scp -r, or both side by side")
    args = parse_bench_args(ap)
    files = args.files or (400_000 if args.quick else 2_300_000)
    runs = args.runs
    with_mydumper = not args.no_mydumper and shutil.which("mydumper") and shutil.which("myloader")
    with_backup = not args.no_backup and shutil.which("mariadb-backup") and shutil.which("mbstream")
    q = shlex.quote
    started = bench_start()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src = BenchMariaDb(H.base, "source").install()
        dst = BenchMariaDb(H.base, "target").install()
        # the target as made, to put back after mariadb-backup replaced it with the source's whole server
        pristine = H.base / "mariadb" / "target-pristine"
        subprocess.run(["cp", "-a", str(dst.datadir), str(pristine)], check=True)
        with running(src, dst):
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
            replaced = []  # set when mariadb-backup has put the source's whole server in the target's place
            # the hosts share nothing: a gets its own key for b, as an admin would make (not timed)
            rsh = hand_made_access(a, b)
            scp_opts = hand_made_scp(a, b)
            sock_a, sock_b = f"--socket={q(str(src.socket))}", f"--socket={q(str(dst.socket))}"

            def clean():
                subprocess.run(f"rm -rf {q(str(a.root))}/nc.* {q(str(b.root))}/nc.*", shell=True, check=True)
                if replaced:  # the target as it was made, not the source's server (its users, its system tables)
                    dst.stop()
                    subprocess.run(["rm", "-rf", "--", str(dst.datadir)], check=True)
                    subprocess.run(["cp", "-a", str(pristine), str(dst.datadir)], check=True)
                    dst.start(timeout=600)
                    replaced.clear()
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

            def three_parts(name: str, dump: str, copy: str, restore: str, dump_path: str, side: Side) -> float:
                """Dump and copy on a, restore on b: ssh commands timed one by one; the copy verified."""
                t1 = timed(H.ssh_base("a") + [dump])
                sizes[name] = du(dump_path)
                t2 = timed(H.ssh_base("a") + [copy])
                t3 = timed(H.ssh_base("b") + [restore])
                for k, v in (("dump", t1), ("copy", t2), ("restore", t3)):
                    side.add(k, v)
                verify(name, side)
                return t1 + t2 + t3

            f_a, f_b = f"{a.root}/nc.sql.gz", f"{b.root}/nc.sql.gz"
            by_hand = functools.partial(
                three_parts, "by-hand",
                f"mysqldump {sock_a} -u root --single-transaction --routines --events {DB} | gzip > {q(f_a)}",
                f"scp -q {scp_opts} {q(f_a)} {q(f'root@{b.address}:{f_b}')}",
                f"gunzip < {q(f_b)} | mysql {sock_b} -u root {DB}", f_a)
            m_a, m_b = f"{a.root}/nc.mydumper", f"{b.root}/nc.mydumper"
            mydumper = functools.partial(
                three_parts, "mydumper",
                f"mydumper {sock_a} -u root -B {DB} -t 2 -c -r 250000 -G -E -R --trx-consistency-only -o {q(m_a)}",
                f"scp -q -r {scp_opts} {q(m_a)} {q(f'root@{b.address}:{m_b}')}",
                f"myloader {sock_b} -u root -B {DB} -t 2 -o -d {q(m_b)}", m_a)

            def backup(name: str, way: str, side: Side) -> float:
                d_a, d_b = f"{a.root}/nc.backup", f"{b.root}/nc.backup"
                datadir = q(str(dst.datadir))
                # --no-defaults, as the test servers run: Debian's /etc/mysql files name the system server's
                # datadir and socket
                mb = "mariadb-backup --no-defaults"
                backup_cmd = (f"{mb} --backup {sock_a} -u root --datadir={q(str(src.datadir))} --parallel=2")
                if way == "stream":
                    receive = f"mkdir {q(d_b)} && mbstream -x -C {q(d_b)}"
                    t1 = quiet(H.ssh_base("a") + [f"set -o pipefail; {backup_cmd} --stream=mbstream "
                                                  f"| {rsh} root@{b.address} {q(receive)}"])
                    side.add("dump", t1)  # dump and copy at once
                    t2 = 0.0
                else:
                    t1 = quiet(H.ssh_base("a") + [f"{backup_cmd} --target-dir={q(d_a)}"])
                    t2 = timed(H.ssh_base("a") + [f"scp -q -r {scp_opts} {q(d_a)} {q(f'root@{b.address}:{d_b}')}"])
                    side.add("dump", t1)
                    side.add("copy", t2)
                sizes[name] = du(d_b)
                t = time.perf_counter()
                quiet(H.ssh_base("b") + [f"{mb} --prepare --target-dir={q(d_b)}"])
                replaced.append(True)
                dst.stop()
                quiet(H.ssh_base("b") + [f"find {datadir} -mindepth 1 -delete && "
                                         f"{mb} --move-back --target-dir={q(d_b)} --datadir={datadir} && "
                                         f"chown -R mysql:mysql {datadir}"])
                dst.start(timeout=600)  # until it answers on its socket
                t3 = time.perf_counter() - t
                side.add("restore", t3)
                verify(name, side)
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
            for name, way in BACKUP_WAYS.items():
                if with_backup and args.backup_way in (way, "both"):
                    sides[name] = functools.partial(backup, name, way)
            print(f"{runs} round(s) of {len(sides)} ways; database {db_bytes / MiB:.0f} MiB; {load()}", flush=True)
            res = alternate(runs, sides, before=clean)
            end_load = load()

    explain = {
        "by-hand": "`mysqldump --single-transaction --routines --events \\| gzip`; scp; `gunzip \\| mysql`",
        "mdsl": "`mariadb-dump --single-transaction ... \\| zstd -T0 -1`, read back; stream copy; restore by "
                "2 clients at once (a table each, a big table's rows in 16 MiB parts across both; secondary keys "
                "after the rows)",
        "mydumper": "`mydumper -t 2 -c -r 250000` (gzip per chunk); `scp -r`; `myloader -t 2`",
        **{name: ("`mariadb-backup --backup --parallel=2 --stream=mbstream \\| ssh b mbstream -x` "
                  "(dump and copy at once)" if way == "stream" else
                  "`mariadb-backup --backup --parallel=2` into a directory; `scp -r`")
           + "; `--prepare`, target stopped, `--move-back` into its emptied datadir, chown, "
             "started until it answers (the whole server; identical versions only)"
           for name, way in BACKUP_WAYS.items()},
    }
    hand, ours = res["by-hand"], res["mdsl"]
    rows = [[f"`{x.name}`", explain[x.name], f"**{x.med:.1f}**" if x.name == "mdsl" else f"{x.med:.1f}",
             x.runs_text(), x.parts_text(), f"{sizes[x.name] / MiB:.0f} MiB", f"{x.med / hand.med:.2f}"]
            for x in res.values()]
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
    backups = [x for x in res.values() if x.name in BACKUP_WAYS]
    for x in backups:
        lines.append(f"- mdsl / {x.name}: **{ours.med / x.med:.2f}** (no target: a physical copy of the whole "
                     "server into a stopped target of the identical version, not safe for one database into a "
                     "running server; mdsl never uses it)")
    if not backups:
        lines.append("- mariadb-backup not installed here (Debian 12: `apt install mariadb-backup`): not measured")
    lines += [
        f"- the restored database equals the source: row counts after every run; every table's CHECKSUM TABLE "
        f"and the view, trigger and procedure after the last run of {'; '.join(sorted(checked))}",
        f"- mdsl's restore, last run: {split_said[-1] if split_said else 'no table split'}",
        "- mdsl's time includes `mdsl apply`'s own cost (check, connect, preflight, journal), the dump's "
        "read-back and the copy's sha256 on both ends; the other ways' parts are timed alone",
    ]
    text = "\n".join(lines)
    report("mariadb", text, args.write_docs)
    return 0 if ours.med <= 0.6 * hand.med else 1


def du(path: str) -> int:
    """Bytes under path (`du -sb`)."""
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout.split()[0])


if __name__ == "__main__":
    sys.exit(main())
