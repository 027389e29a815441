"""The MariaDB and Redis servers the e2e suite starts work for real, and stop by pid."""

from __future__ import annotations

import pytest

from dbservers import NEXTCLOUD_DB, NEXTCLOUD_USER, MariaDbServer, RedisServer, Resp, RespError
from hosts import REGISTRY

pytestmark = pytest.mark.e2e


def test_mariadb_source_password_over_tcp_root_over_socket(mariadb_source):
    server = mariadb_source
    ok = server.sql_tcp("SELECT CURRENT_USER(), COUNT(*) FROM oc_filecache", NEXTCLOUD_DB, NEXTCLOUD_USER,
                        server.app_password)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [f"{NEXTCLOUD_USER}@127.0.0.1", "200000"]
    wrong = server.sql_tcp("SELECT 1", NEXTCLOUD_DB, NEXTCLOUD_USER, server.app_password + "x")
    assert wrong.returncode == 1 and "Access denied" in wrong.stderr
    # root has no password: unix_socket only
    assert server.sql_tcp("SELECT 1", None, "root", None).returncode == 1
    assert server.sql("SELECT CURRENT_USER()") == "root@localhost"
    assert "MariaDB" in server.version()


def test_mariadb_source_is_nextcloud_like(mariadb_source):
    server = mariadb_source
    sums = server.table_sums(NEXTCLOUD_DB)
    assert sums["oc_filecache"].rows == 200_000 and sums["oc_activity"].rows == 100_000
    assert sum(s.rows for s in sums.values()) > 300_000
    assert all(s.checksum is not None for s in sums.values())
    # the trigger counted every comment; emoji survive as 4-byte utf8mb4 (general_ci finds every emoji equal)
    assert server.sql("SELECT SUM(n) FROM oc_comment_counts", NEXTCLOUD_DB) == str(sums["oc_comments"].rows)
    assert server.sql("SELECT COUNT(*) FROM oc_comments WHERE message LIKE '%🎉%' COLLATE utf8mb4_bin", NEXTCLOUD_DB) == "5000"
    assert server.sql("SELECT HEX(LEFT(data, 8)) FROM oc_preview_blobs WHERE id = 1", NEXTCLOUD_DB) == "00275C0A0D1A22FF"
    routines = server.routines(NEXTCLOUD_DB)
    assert routines == {"VIEW oc_storage_usage": "ncadmin@localhost", "TRIGGER oc_comments_count": "ncadmin@localhost",
                        "PROCEDURE oc_files_of": "ncadmin@localhost"}
    assert server.sql("CALL oc_files_of(1)", NEXTCLOUD_DB) == "1000"
    assert server.sql("SELECT SUM(files) FROM oc_storage_usage", NEXTCLOUD_DB) == "200000"


def test_mariadb_target_is_empty_and_lacks_the_definer(mariadb_target):
    assert mariadb_target.databases() == [NEXTCLOUD_DB]
    assert mariadb_target.tables(NEXTCLOUD_DB) == []
    assert mariadb_target.sql("SELECT COUNT(*) FROM mysql.user WHERE user = 'ncadmin'") == "0"


def test_mariadb_reported_version_stands_in_for_an_older_server(e2e_base):
    server = MariaDbServer(e2e_base, "old-version", reported_version="10.5.99-MariaDB").install()
    try:
        server.start()
        assert server.version() == "10.5.99-MariaDB"
    finally:
        server.destroy()
    assert not server.dir.exists()


def test_redis_source_needs_its_password(redis_source):
    with Resp.unix(str(redis_source.socket)) as conn:
        with pytest.raises(RespError, match="NOAUTH"):
            conn.call("DBSIZE")
        with pytest.raises(RespError, match="WRONGPASS"):
            conn.call("AUTH", "wrong")
        assert conn.call("AUTH", redis_source.password) == b"OK"
        assert conn.call("DBSIZE") == 2000
    with Resp.tcp(redis_source.listen, redis_source.port) as conn:
        conn.call("AUTH", redis_source.password)
        assert conn.call("PING") == b"PONG"


def test_redis_sample_has_every_type_and_ttls(redis_source, redis_target):
    snap = redis_source.snapshot()
    assert redis_source.keyspace() == {0: 2000, 3: 300}
    assert {k.type for k in snap.values()} == {"string", "hash", "list", "set", "zset"}
    with_ttl = [k for k in snap.values() if k.pttl > 0]
    assert len(with_ttl) == 460 and all(3_000_000 < k.pttl <= 7_200_000 for k in with_ttl)
    assert snap[(0, b"k:str:0")].value == "value 0 ☕ ".encode() + b"\x00\x00\r\n"
    assert redis_target.keyspace() == {0: 50}
    assert not set(redis_target.snapshot()) & set(snap)


def test_servers_stop_by_pid(e2e_base):
    mariadb = MariaDbServer(e2e_base, "stop-by-pid").install().start()
    redis = RedisServer(e2e_base, "stop-by-pid").start()
    pids = {mariadb.pid, redis.pid}
    assert {p.pid for p in REGISTRY.alive()} >= pids
    mariadb.destroy()
    redis.destroy()
    assert not {p.pid for p in REGISTRY.alive()} & pids
    assert not mariadb.running and not redis.running
