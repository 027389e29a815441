"""MariaDB and Redis moved between the two sshd test hosts, with a live writer until the stop (issue 12).

MariaDB: a Nextcloud-like database (327k rows, utf8mb4 emoji, BLOBs, a view, a trigger and a procedure
whose DEFINER exists only on the source), password over TCP on the old host, unix_socket as root on the
new one; afterwards every table's CHECKSUM TABLE and row count match and the view, trigger and
procedure work. Redis: every type, TTLs, two logical databases, a target holding keys of its own.
Mistakes are refused in preflight with nothing changed.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from dbservers import NEXTCLOUD_DB, NEXTCLOUD_USER, MariaDbServer
from hosts import plan_str
from reliability_helpers import human, mdsl, no_traceback, output

pytestmark = pytest.mark.e2e


class SqlWriter:
    """A command service that inserts a comment into the source every 20 ms over its socket (as root)."""

    def __init__(self, server: MariaDbServer, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.pidfile = workdir / "sqlwriter.pid"
        client = " ".join(shlex.quote(w) for w in server.client_argv(NEXTCLOUD_DB))
        insert = ("INSERT INTO oc_comments (actor_id, object_id, message, creation_timestamp) "
                  "VALUES ('writer', 'live', 'written live 🚀', NOW());")
        loop = f"while :; do {client} -e {shlex.quote(insert)} || exit 1; sleep 0.02; done"
        pid = shlex.quote(str(self.pidfile))
        self.start = f"nohup sh -c {shlex.quote(loop)} >/dev/null 2>&1 & echo $! > {pid}"
        self.stop = f"kill $(cat {pid}); while kill -0 $(cat {pid}) 2>/dev/null; do sleep 0.05; done; rm -f {pid}"
        self.status = f"test -f {pid} && kill -0 $(cat {pid}) 2>/dev/null"

    def decl(self, name: str, host: str, writes: str, initially: str = "running") -> str:
        return (f"service {name} on {host} {{\n  start = {plan_str(self.start)}\n  stop = {plan_str(self.stop)}\n"
                f"  status = {plan_str(self.status)}\n  writes = [{writes}]\n  initially = {initially}\n}}")

    def kill(self) -> None:
        if self.pidfile.exists():
            subprocess.run(["sh", "-c", self.stop], timeout=30, check=False)


def _marker_service(name: str, host: str, writes: str, marker: Path) -> str:
    """A stand-in for the app on the new host (H301 wants the moved data written at the end)."""
    m = shlex.quote(str(marker))
    return (f"service {name} on {host} {{\n  start = {plan_str('touch ' + m)}\n  stop = {plan_str('rm -f ' + m)}\n"
            f"  status = {plan_str('test -f ' + m)}\n  writes = [{writes}]\n  initially = stopped\n}}")


def _apply(plan: Path, *extra: str) -> str:
    r = mdsl("apply", "--yes", *extra, str(plan))
    text = output(r)
    no_traceback(text)
    assert r.returncode == 0, human(text)
    return text


def _mysql_plan(tmp_path: Path, ssh_hosts, source: MariaDbServer, target: MariaDbServer, writer: SqlWriter,
                *, password_env: str = "MDSL_E2E_MYSQL_PASSWORD", database: str = NEXTCLOUD_DB,
                start_again: bool = False) -> Path:
    a, b = ssh_hosts.a, ssh_hosts.b
    dump_a, dump_b = a.root / "outbox" / "nc.sql.zst", b.root / "inbox" / "nc.sql.zst"
    plan = tmp_path / "nextcloud-mariadb.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{source.plan_decl("old_db", "a", database=database, user=NEXTCLOUD_USER, password_env=password_env)}
{target.plan_decl("new_db", "b", socket=True, run_as="root", fresh=True)}
{writer.decl("old_app", "a", "old_db")}
{_marker_service("new_app", "b", "new_db", b.root / "new_app.running")}
steps {{
  stop old_app
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  restore b:{plan_str(str(dump_b))} into new_db replace
{"  start new_app" if start_again else ""}
}}
""")
    return plan


def test_nextcloud_like_mariadb_moves_whole_with_definers_fixed(ssh_hosts, mariadb_source, mariadb_target, tmp_path):
    writer = SqlWriter(mariadb_source, ssh_hosts.a.root / "writer")  # host a stops it
    plan = _mysql_plan(tmp_path, ssh_hosts, mariadb_source, mariadb_target, writer, start_again=True)
    subprocess.run(["sh", "-c", writer.start], check=True, timeout=30)
    try:
        time.sleep(1.0)  # rows arrive while the plan starts
        _apply(plan)
    finally:
        writer.kill()
    written = int(mariadb_source.sql("SELECT COUNT(*) FROM oc_comments WHERE actor_id = 'writer'", NEXTCLOUD_DB))
    assert written > 10
    src, dst = mariadb_source.table_sums(NEXTCLOUD_DB), mariadb_target.table_sums(NEXTCLOUD_DB)
    assert dst == src and sum(s.rows for s in dst.values()) > 320_000
    # secondary keys were added after the rows, and are all there
    assert "UNIQUE KEY `fs_storage_path_hash`" in mariadb_target.sql("SHOW CREATE TABLE oc_filecache", NEXTCLOUD_DB)
    # the definer does not exist on the target: the objects are now root's and work
    assert set(mariadb_target.routines(NEXTCLOUD_DB).values()) == {"root@localhost"}
    assert mariadb_target.sql("CALL oc_files_of(1)", NEXTCLOUD_DB) == "1000"
    assert mariadb_target.sql("SELECT SUM(files) FROM oc_storage_usage", NEXTCLOUD_DB) == "200000"
    before = mariadb_target.sql("SELECT n FROM oc_comment_counts WHERE object_id = 'live'", NEXTCLOUD_DB)
    mariadb_target.sql("INSERT INTO oc_comments (actor_id, object_id, message, creation_timestamp) "
                       "VALUES ('new', 'live', '🎉', NOW())", NEXTCLOUD_DB)
    counted = mariadb_target.sql("SELECT n FROM oc_comment_counts WHERE object_id = 'live'", NEXTCLOUD_DB)
    assert int(counted) == int(before) + 1


@pytest.mark.parametrize("mistake", ["wrong password", "wrong database", "older target", "hidden routine"])
def test_mariadb_mistakes_are_refused_in_preflight(ssh_hosts, mariadb_source, mariadb_target, tmp_path, monkeypatch,
                                                   mistake, e2e_base):
    writer = SqlWriter(mariadb_source, ssh_hosts.a.root / "writer")  # host a stops it
    target = mariadb_target
    if mistake == "wrong password":
        monkeypatch.setenv("MDSL_E2E_MYSQL_PASSWORD", "not-the-password")
        plan = _mysql_plan(tmp_path, ssh_hosts, mariadb_source, target, writer)
        expected = "Access denied"
    elif mistake == "wrong database":
        plan = _mysql_plan(tmp_path, ssh_hosts, mariadb_source, target, writer, database="nextclod")
        expected = "no database `nextclod`"
    elif mistake == "hidden routine":
        mariadb_source.sql(f"REVOKE SELECT ON mysql.proc FROM '{NEXTCLOUD_USER}'@'127.0.0.1';")
        plan = _mysql_plan(tmp_path, ssh_hosts, mariadb_source, target, writer)
        expected = "GRANT SELECT ON mysql.proc TO 'nextcloud'@'127.0.0.1';"
    else:
        target.stop()
        target.reported_version = "10.5.99-MariaDB"
        target.start()
        plan = _mysql_plan(tmp_path, ssh_hosts, mariadb_source, target, writer)
        expected = "is older than the server of `old_db`"
    subprocess.run(["sh", "-c", writer.start], check=True, timeout=30)
    try:
        r = mdsl("apply", "--yes", str(plan))
        text = output(r)
        no_traceback(text)
        assert r.returncode != 0 and expected in text, human(text)
        assert "nothing was stopped or changed" in text
        assert subprocess.run(["sh", "-c", writer.status], timeout=30).returncode == 0  # still running
    finally:
        writer.kill()
    assert target.tables(NEXTCLOUD_DB) == []
    assert not (ssh_hosts.a.root / "outbox").exists()


def _redis_plan(tmp_path: Path, ssh_hosts, source, target, *, replace: bool = True, before_restore: str = "") -> Path:
    a, b = ssh_hosts.a, ssh_hosts.b
    rdb_a, rdb_b = a.root / "outbox" / "dump.rdb", b.root / "inbox" / "dump.rdb"
    plan = tmp_path / "redis.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{source.plan_decl("old_queue", "a", password_env="MDSL_E2E_REDIS_PASSWORD")}
{target.plan_decl("new_queue", "b", socket=True, fresh=True)}
steps {{
  dump old_queue to a:{plan_str(str(rdb_a))}
  transfer a:{plan_str(str(rdb_a))} to b:{plan_str(str(rdb_b))}
{before_restore.replace("RDB", str(rdb_b))}
  restore b:{plan_str(str(rdb_b))} into new_queue{" replace" if replace else ""}
}}
""")
    return plan


def test_redis_moves_every_key_type_and_ttl_into_the_live_target(ssh_hosts, redis_source, redis_target, tmp_path):
    plan = _redis_plan(tmp_path, ssh_hosts, redis_source, redis_target)
    started = time.monotonic()
    before = redis_source.snapshot()
    _apply(plan)
    after = redis_target.snapshot()
    # a TTL runs down from its first reading to its second: both snapshots' time counts, not only the copy's
    took_ms = (time.monotonic() - started) * 1000
    assert set(after) == set(before)  # the target's own keys are gone, every database came
    assert redis_target.keyspace() == {0: 2000, 3: 300}
    for key, was in before.items():
        now = after[key]
        assert (now.type, now.value) == (was.type, was.value), key
        if was.pttl < 0:
            assert now.pttl == was.pttl
        else:
            assert was.pttl - took_ms - 1000 <= now.pttl <= was.pttl, key
    with redis_target.connect() as conn:  # a master again, its masterauth as it was
        assert b"role:master" in conn.call("INFO", "replication")
        assert conn.call("CONFIG", "GET", "masterauth")[1] == b""


def test_redis_mistakes_are_refused_in_preflight(ssh_hosts, redis_source, redis_target, tmp_path, monkeypatch):
    monkeypatch.setenv("MDSL_E2E_REDIS_PASSWORD", "wrong")
    plan = _redis_plan(tmp_path, ssh_hosts, redis_source, redis_target)
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    no_traceback(text)
    assert r.returncode != 0 and "WRONGPASS" in text and "nothing was stopped or changed" in text, human(text)
    monkeypatch.setenv("MDSL_E2E_REDIS_PASSWORD", redis_source.password)
    redis_source.stop()  # unreachable
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    no_traceback(text)
    assert r.returncode != 0 and "cannot connect to Redis" in text, human(text)
    assert redis_target.keyspace() == {0: 50}
    assert not (ssh_hosts.a.root / "outbox").exists()


def test_a_snapshot_cut_short_after_the_copy_is_refused_and_the_target_keeps_its_keys(
        ssh_hosts, redis_source, redis_target, tmp_path):
    """The plan's own snapshot, whole at the dump and the copy, loses its end on b (a full disk, a hand).

    Loading it would cost the target its keys: a replica empties itself before it loads, and a Redis server
    exits on an RDB that ends too soon. The restore sees the missing end-of-file marker first."""
    plan = _redis_plan(tmp_path, ssh_hosts, redis_source, redis_target,
                       before_restore='  run b "truncate -s -4096 RDB"')
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    no_traceback(text)
    rdb_b = ssh_hosts.b.root / "inbox" / "dump.rdb"
    assert r.returncode != 0 and f"{rdb_b} is cut short" in text and "not a whole RDB file" in text, human(text)
    assert redis_target.running, "the target must keep running"
    assert redis_target.keyspace() == {0: 50}
    assert redis_target.cli("EXISTS", "stale:str:0").strip() == "1"
    with redis_target.connect() as conn:  # never made a replica
        assert b"role:master" in conn.call("INFO", "replication")


def test_a_snapshot_corrupted_inside_after_the_copy_stops_the_target_and_the_step_says_so(
        ssh_hosts, redis_source, redis_target, tmp_path):
    """What the restore cannot see cheaply: a byte changed inside the file after its verified copy, both ends
    intact. Redis checks the RDB's CRC64 as it loads: it empties itself first and then exits. The step must
    say that at once, not wait for a link that never comes up (docs/reliability.md, "Faults")."""
    flip = ("python3 -c 'import sys; f = open(sys.argv[1], \"r+b\"); f.seek(-3, 2); b = f.read(1); "
            "f.seek(-3, 2); f.write(bytes([b[0] ^ 1]))' RDB")  # inside the CRC64: the ends stay as they were
    plan = _redis_plan(tmp_path, ssh_hosts, redis_source, redis_target, before_restore=f"  run b {plan_str(flip)}")
    started = time.monotonic()
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    no_traceback(text)
    assert r.returncode != 0 and "the target went away while loading the snapshot" in text, human(text)
    assert "exits when the RDB it loads is corrupt" in text and "a master again: [Errno" not in text
    assert time.monotonic() - started < 120
    deadline = time.monotonic() + 10
    while redis_target.running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not redis_target.running
    assert "Wrong RDB checksum" in redis_target.log_path.read_text()
