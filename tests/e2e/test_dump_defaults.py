"""mdsl's default PostgreSQL dump (`pg_dump -Fc -Z0 | zstd`) and restore (decompressed beside the dump,
`pg_restore -j N`, N the target's CPUs at most 8; from stdin for a `run_as` target), against real sshd and PostgreSQL 15.

Each restore is compared with the source row by row (tables' md5) and sequence by sequence. A dump
made outside the plan is recognised when the restore runs; a cut zstd file is refused before the
target changes; a host without zstd is a preflight finding that names the way out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hosts import PG_BIN, plan_str
from reliability_helpers import hooked, human, mdsl, no_traceback, output, three  # noqa: F401

pytestmark = pytest.mark.e2e

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _same(src, src_db, dst, dst_db) -> None:
    assert dst.table_checksum(dst_db) == src.table_checksum(src_db)
    assert dst.sequences(dst_db) == src.sequences(src_db)


def _socket_decl(name: str, host: str, pg, database: str, *, run_as: bool = False, fresh: bool = True) -> str:
    """A database reached over the cluster's socket: as `postgres` (trust), or as the OS user postgres (peer)."""
    who = '  run_as = "postgres"' if run_as else '  user = "postgres"'
    return (f"postgres {name} on {host} {{\n  database = {plan_str(database)}\n{who}\n"
            f"  socket = {plan_str(str(pg.sockdir))}\n  port = {pg.port}\n  bin = {plan_str(str(PG_BIN))}\n"
            + ("  fresh = true\n" if fresh else "") + "}")


def _apply(plan: Path) -> str:
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    no_traceback(text)
    assert r.returncode == 0, human(text)
    return text


def test_the_default_dump_is_zstd_and_restores_equal_with_a_job_per_cpu(ssh_hosts, pg_source, pg_target, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    dump_a, dump_b = a.root / "outbox" / "db.dump", b.root / "inbox" / "db.dump"
    plan = tmp_path / "default.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
{pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True)}
steps {{
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  restore b:{plan_str(str(dump_b))} into new_db replace
}}
""")
    shown = mdsl("plan", str(plan)).stdout
    assert "-Fc -Z0" in shown and "| zstd -q -T0 -3 -c >" in shown
    # the job count is the target's `nproc` (at most 8), counted when the restore runs: pg_restore
    # refuses a -j that is not a positive number, so the restore passing below shows it expanded
    assert "mdsl_jobs=$(nproc 2>/dev/null)" in shown and ' -j "$mdsl_jobs" ' in shown
    _apply(plan)
    head = dump_b.read_bytes()[:4]
    assert head == ZSTD_MAGIC, head  # the whole archive is zstd (PostgreSQL 15 has no zstd of its own)
    _same(pg_source, pg_source.db, pg_target, pg_target.db)
    # the decompressed copy pg_restore -j read is gone again, and nothing half-made is left
    assert not [p for r in (a.root, b.root) for p in r.rglob("*.part")]
    assert sorted(p.name for p in dump_b.parent.iterdir()) == ["db.dump"]


def test_a_run_as_target_restores_the_zstd_dump_from_stdin(ssh_hosts, pg_source, pg_target, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    # the seed's layout: the dump in root's home-like private dir, which the postgres user cannot enter
    inbox = b.root / "private"
    inbox.mkdir(mode=0o700)
    dump_a, dump_b = a.root / "outbox" / "db.dump", inbox / "db.dump"
    pg_target.psql("create database peer_db;")
    plan = tmp_path / "peer.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
{_socket_decl("new_db", "b", pg_target, "peer_db", run_as=True)}
steps {{
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  restore b:{plan_str(str(dump_b))} into new_db replace
}}
""")
    _apply(plan)
    _same(pg_source, pg_source.db, pg_target, "peer_db")
    assert sorted(p.name for p in inbox.iterdir()) == ["db.dump"]


def test_dumps_made_outside_the_plan_are_recognised_when_the_restore_runs(ssh_hosts, pg_source, pg_target,
                                                                           tmp_path):
    a = ssh_hosts.a
    out = a.root / "made-earlier"
    # an earlier plan's default dump (zstd) and its directory dump, and the seed's `pg_dump -Fc` by hand
    first = tmp_path / "first.plan"
    first.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
steps {{
  dump old_db to a:{plan_str(str(out / "mdsl.dump"))}
  dump old_db to a:{plan_str(str(out / "mdsl.dir"))} format = directory
}}
""")
    _apply(first)
    conn = pg_source.dsn(pg_source.db, "postgres")  # the socket, trust
    subprocess.run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(out / "seed.dump"), "--dbname=" + conn], check=True)
    assert (out / "mdsl.dump").read_bytes()[:4] == ZSTD_MAGIC and (out / "seed.dump").read_bytes()[:5] == b"PGDMP"
    names = {"mdsl.dump": "from_zstd", "mdsl.dir": "from_dir", "seed.dump": "from_custom"}
    decls = "\n".join(_socket_decl(db, "a", pg_target, db) for db in names.values())
    steps = "\n".join(f'  # mdsl: allow H203 "made before this plan"\n'
                      f"  restore a:{plan_str(str(out / f))} into {db} replace" for f, db in names.items())
    second = tmp_path / "second.plan"
    second.write_text(f'{ssh_hosts.plan_host_decl("a")}\n{decls}\nsteps {{\n{steps}\n}}\n')
    assert "= PGDMP ]" in mdsl("plan", str(second)).stdout  # looked at when the step runs
    _apply(second)
    for db in names.values():
        _same(pg_source, pg_source.db, pg_target, db)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp file left


@pytest.mark.parametrize("jobs", ["", " jobs = 1"], ids=["decompressed-then-parallel", "streamed-serially"])
def test_a_cut_zstd_dump_is_refused_before_the_target_changes(ssh_hosts, pg_source, pg_target, tmp_path, jobs):
    a, b = ssh_hosts.a, ssh_hosts.b
    pg_target.psql("create table keep_me (v int); insert into keep_me values (42);", db=pg_target.db)
    dump_a, dump_b = a.root / "outbox" / "db.dump", b.root / "inbox" / "db.dump"
    plan = tmp_path / "cut.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
{pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True)}
steps {{
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  # a disk error, a bad copy by hand: the file the restore reads is no longer whole
  run b {plan_str(f"truncate -s 300000 {dump_b}")}
  restore b:{plan_str(str(dump_b))} into new_db replace{jobs}
}}
""")
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, human(text)
    no_traceback(text)
    assert "step 4" in human(text) and "zstd" in human(text), human(text)
    assert pg_target.psql("select v from keep_me", db=pg_target.db) == "42"
    assert "statuses" not in pg_target.tables(pg_target.db)
    assert sorted(p.name for p in dump_b.parent.iterdir()) == ["db.dump"]  # the temp file is removed


def _path_without(tmp_path: Path, *missing: str) -> Path:
    """A directory of links to every program on this machine's PATH except `missing`."""
    d = tmp_path / "path-without"
    d.mkdir()
    d.chmod(0o755)
    for entry in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            p = Path(entry) / name
            if name in missing or (d / name).exists() or not (p.is_file() and os.access(p, os.X_OK)):
                continue
            (d / name).symlink_to(p)
    return d


def test_a_host_without_zstd_is_p402_and_compress_gzip_runs_without_it(three, pg_source, tmp_path):
    a, b, c, decls = three
    # in c's root: host c sees none of this machine's temp dirs
    c.set_hook(f"export PATH={_path_without(c.root, 'zstd', 'unzstd', 'zstdcat', 'zstdmt')}")
    dump = c.root / "db.dump"
    plan = tmp_path / "nozstd.plan"

    def write(opts: str) -> None:
        plan.write_text(f'{decls}\n{_socket_decl("old_db", "c", pg_source, pg_source.db, fresh=False)}\n'
                        f"steps {{\n  dump old_db to c:{plan_str(str(dump))}{opts}\n}}\n")

    write("")
    r = mdsl("apply", "--yes", str(plan))
    text = human(output(r))
    assert r.returncode == 1, text
    assert "P402" in text and "`zstd` is not installed on `c`" in text, text
    assert "compress = gzip" in text, text
    assert not dump.exists()
    write(" compress = gzip")
    _apply(plan)
    assert dump.read_bytes()[:5] == b"PGDMP"
