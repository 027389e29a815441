"""The e2e infrastructure itself works for real: sshd, host keys, PostgreSQL auth, writer, teardown."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from hosts import PG_BIN, REGISTRY, FileTree, PgCluster, SshCluster, Writer, _comm, descendants, make_base_dir

pytestmark = pytest.mark.e2e


def _wait_until(predicate, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def _exec(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, out, _ = client.exec_command(command, timeout=20)
    text = out.read().decode()
    return out.channel.recv_exit_status(), text


# ---------------------------------------------------------------- ssh


def test_ssh_cli_with_strict_host_key_checking(ssh_hosts, tmp_path):
    for host in ssh_hosts:
        r = subprocess.run(
            ["ssh", "-F", str(ssh_hosts.ssh_config), "-i", str(ssh_hosts.identity),
             "-o", "StrictHostKeyChecking=yes", host.address, "echo ok; echo ${PYENV_ROOT:-no-pyenv}"],
            capture_output=True, text=True, timeout=20,
        )
        assert r.returncode == 0, r.stderr
        # SetEnv SHLVL=1 makes bash skip ~/.bashrc (pyenv init) for ssh commands
        assert r.stdout.split() == ["ok", "no-pyenv"]
        # the alias from ssh_config and an explicit port work too
        assert ssh_hosts.ssh(host.name, "echo ok").stdout == "ok\n"

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    swapped = tmp_path / "swapped_known_hosts"
    a, b = ssh_hosts.a, ssh_hosts.b
    swapped.write_text(a.known_hosts_line.replace(a.host_public_key.split()[1], b.host_public_key.split()[1]) + "\n")
    for known_hosts, complaint in ((empty, "Host key verification failed"), (swapped, "IDENTIFICATION HAS CHANGED")):
        r = subprocess.run(
            ["ssh", "-F", str(ssh_hosts.ssh_config), "-o", f"UserKnownHostsFile={known_hosts}", a.address, "echo ok"],
            capture_output=True, text=True, timeout=20,
        )
        assert r.returncode == 255 and complaint in r.stderr, r.stderr
    assert "[127.0.0.2]:" in ssh_hosts.known_hosts.read_text()


def test_paramiko_known_hosts_and_reject_policy(ssh_hosts, tmp_path):
    for host in ssh_hosts:
        client = ssh_hosts.paramiko_client(host)
        try:
            status, out = _exec(client, f"cat {host.root}/.mdsl-host; echo $SSH_CONNECTION")
            assert status == 0
            marker, conn = out.splitlines()
            assert marker == f"{host.name} {host.address}"
            assert conn.split()[2:] == [host.address, str(host.port)]
        finally:
            client.close()

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_hosts.paramiko_client(ssh_hosts.a, known_hosts=empty)
    swapped = tmp_path / "swapped"
    a, b = ssh_hosts.a, ssh_hosts.b
    swapped.write_text(a.known_hosts_line.replace(a.host_public_key.split()[1], b.host_public_key.split()[1]) + "\n")
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_hosts.paramiko_client(ssh_hosts.a, known_hosts=swapped)


def test_fabric_connection_from_ssh_config(ssh_hosts):
    from fabric import Config, Connection

    # Fabric 3.2 never reads known_hosts and auto-adds unknown keys: load ours and reject the rest.
    config = Config(runtime_ssh_path=str(ssh_hosts.ssh_config))
    conn = Connection("b", config=config, connect_kwargs={"look_for_keys": False, "allow_agent": False})
    conn.client.load_host_keys(str(ssh_hosts.known_hosts))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        assert (conn.host, conn.port, conn.user) == (ssh_hosts.b.address, ssh_hosts.b.port, "root")
        r = conn.run(f"cat {ssh_hosts.b.root}/.mdsl-host", hide=True, in_stream=False)
        assert r.stdout == "b 127.0.0.3\n"
    finally:
        conn.close()


def test_each_host_sees_its_own_root(ssh_hosts):
    a, b = ssh_hosts.a, ssh_hosts.b
    assert a.root != b.root and a.root.is_dir() and b.root.is_dir()
    for host in (a, b):
        ssh_hosts.ssh(host, f"echo written-by-{host.name} > {host.root}/hello.txt")
    assert (a.root / "hello.txt").read_text() == "written-by-a\n"
    assert (b.root / "hello.txt").read_text() == "written-by-b\n"
    out = ssh_hosts.ssh(b, "echo $SSH_CONNECTION").stdout.split()
    assert out[2] == b.address


def test_kill_connections_cuts_only_that_host(ssh_hosts):
    a, b = ssh_hosts.a, ssh_hosts.b
    client_a = ssh_hosts.paramiko_client(a)
    client_b = ssh_hosts.paramiko_client(b)
    try:
        _, out_a, _ = client_a.exec_command("sleep 60; echo never")
        _, out_b, _ = client_b.exec_command("sleep 0.5; echo b-ok")
        _wait_until(lambda: "sleep" in _tree_comms(a) and "sleep" in _tree_comms(b), 5)
        assert a.kill_connections() >= 1
        assert _wait_until(lambda: not client_a.get_transport().is_active(), 5)
        assert out_a.channel.recv_exit_status() == -1  # no exit status: the connection was cut
        assert out_b.read() == b"b-ok\n" and out_b.channel.recv_exit_status() == 0
        assert a.connection_pids() == []
        # the orphaned `sleep 60` is still running, as on a real host, until reaped
        orphans = [p for p in a._orphans if p.alive()]
        assert any(p.label.startswith("sleep") for p in orphans)
        a.reap_orphans()
        assert not any(p.alive() for p in orphans)
        assert ssh_hosts.ssh(a, "echo again").stdout == "again\n"
    finally:
        client_a.close()
        client_b.close()


def _tree_comms(host) -> str:
    """Command names of everything running under a host's sshd."""
    return " ".join(_comm(p) for p in descendants(host.pid)) if host.pid else ""


def test_stop_and_restart_a_host(ssh_hosts):
    a = ssh_hosts.a
    port, old_pid = a.port, a.pid
    a.stop()
    assert not a.running and _gone(old_pid)
    with pytest.raises(OSError):
        socket.create_connection((a.address, port), timeout=1).close()
    a.start()
    assert a.port == port and a.pid != old_pid
    assert ssh_hosts.ssh(a, "echo back").stdout == "back\n"  # same host key: known_hosts still valid


# ---------------------------------------------------------------- postgres


def test_pg_trust_over_socket_and_scram_over_tcp(pg_source, pg_target):
    assert pg_source.psql("select current_user") == "postgres"
    assert pg_source.psql("show password_encryption") == "scram-sha-256"
    for cluster, pw_env in ((pg_source, "MDSL_E2E_SOURCE_PASSWORD"), (pg_target, "MDSL_E2E_TARGET_PASSWORD")):
        assert os.environ[pw_env] == cluster.app_password
        ok = cluster.psql_tcp("select current_user || ' ' || host(inet_server_addr())", cluster.db, cluster.app_user,
                              cluster.app_password)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == f"{cluster.app_user} 127.0.0.1"
        bad = cluster.psql_tcp("select 1", cluster.db, cluster.app_user, "wrong-password")
        assert bad.returncode == 2 and "password authentication failed" in bad.stderr
        nopw = cluster.psql_tcp("select 1", cluster.db, cluster.app_user, None)
        assert nopw.returncode == 2 and "no password supplied" in nopw.stderr
        # the superuser has no password: TCP is closed to it
        su = cluster.psql_tcp("select 1", "postgres", "postgres", "")
        assert su.returncode == 2
    assert pg_source.app_password != pg_target.app_password
    wrong = pg_target.psql_tcp("select 1", pg_target.db, "mastodon", pg_source.app_password)
    assert wrong.returncode == 2
    assert pg_source.port != pg_target.port
    assert pg_target.tables(pg_target.db) == []


def test_dataset_has_100k_rows_with_foreign_keys(pg_source):
    counts = pg_source.row_counts(pg_source.db)
    assert counts["statuses"] == 100_000
    assert sum(counts.values()) >= 100_000
    assert set(counts) == {"accounts", "statuses", "media_attachments", "schema_migrations"}
    fks = pg_source.psql("select count(*) from pg_constraint where contype = 'f'", db=pg_source.db)
    assert int(fks) >= 4
    owners = pg_source.psql("select distinct tableowner from pg_tables where schemaname = 'public'", db=pg_source.db)
    assert owners == "mastodon"
    assert pg_source.sequences(pg_source.db)["statuses_id_seq"] == 100_000


def test_checksum_stable_when_idle_and_changes_while_writer_runs(pg_source, writer):
    db = pg_source.db
    before = pg_source.table_checksum(db)
    assert pg_source.table_checksum(db) == before

    writer.start()
    assert writer.status() == 0
    _wait_until(lambda: len(writer.files()) >= 5)
    during1 = pg_source.table_checksum(db)
    files1 = len(writer.files())
    during2 = pg_source.table_checksum(db)
    assert during1["writer_events"] != during2["writer_events"]
    assert during2["writer_events"].rows > during1["writer_events"].rows > 0
    assert len(writer.files()) > files1
    # the data set itself is untouched by the writer
    assert {k: v for k, v in during2.items() if k != "writer_events"} == before

    pid = writer.pid
    writer.stop()
    assert writer.status() == 3
    assert _gone(pid)
    after = pg_source.table_checksum(db)
    assert pg_source.table_checksum(db) == after
    assert after["writer_events"].rows == len(writer.files())  # clean stop: one row per file


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_writer_driven_over_ssh_survives_a_cut_connection(ssh_hosts, writer):
    a = ssh_hosts.a
    r = ssh_hosts.ssh(a, writer.start_cmd, timeout=30)
    assert "started" in r.stdout
    pid = writer.pid
    assert ssh_hosts.ssh(a, writer.status_cmd, check=False).returncode == 0
    a.kill_connections()
    time.sleep(0.1)
    assert writer.status() == 0 and writer.pid == pid  # own session: not tied to the ssh connection
    n = len(writer.files())
    _wait_until(lambda: len(writer.files()) > n)
    r = ssh_hosts.ssh(a, writer.stop_cmd)
    assert "stopped" in r.stdout
    assert _gone(pid)  # stop returned only after the process exited
    assert ssh_hosts.ssh(a, writer.status_cmd, check=False).returncode == 3


def test_dump_and_restore_between_clusters_keeps_checksums(pg_source, pg_target, tmp_path):
    dump = tmp_path / "db.dump"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run(
        [str(PG_BIN / "pg_dump"), "-Fc", "-f", str(dump), "-d", pg_source.dsn(pg_source.db, "mastodon", tcp=True)],
        env={**env, "PGPASSWORD": pg_source.app_password}, check=True, timeout=60,
    )
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--no-owner", "-j", "2", "-d", pg_target.dsn(pg_target.db, "mastodon", tcp=True), str(dump)],
        env={**env, "PGPASSWORD": pg_target.app_password}, check=True, timeout=60,
    )
    assert pg_target.table_checksum(pg_target.db) == pg_source.table_checksum(pg_source.db)
    assert pg_target.sequences(pg_target.db) == pg_source.sequences(pg_source.db)


# ---------------------------------------------------------------- files


def test_filetree_snapshot_after_rsync_over_ssh(ssh_hosts):
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "tree"
    FileTree.populate(src, files=40)
    os.chown(src / "d1" / "sub1" / "file-1.bin", 101, 104)
    subprocess.run(
        ["rsync", "-a", "-e", ssh_hosts.rsh(), f"{src}/", f"root@{b.address}:{b.root}/tree/"],
        check=True, capture_output=True, timeout=60,
    )
    before, after = FileTree.snapshot(src), FileTree.snapshot(b.root / "tree")
    assert len(before) > 40 and before == after
    assert before["d0/link"][0] == "link:sub0" and before["empty-dir"][0] == "dir"
    (b.root / "tree" / "d2" / "sub2" / "file-2.bin").write_bytes(b"changed")
    (b.root / "tree" / "extra").write_text("x")
    diff = FileTree.diff(before, FileTree.snapshot(b.root / "tree"))
    assert diff == {"only_a": [], "only_b": ["extra"], "changed": ["d2/sub2/file-2.bin"]}


# ---------------------------------------------------------------- plans


def test_plan_declarations_for_the_fixtures_parse(ssh_hosts, pg_source, pg_target, writer):
    a = ssh_hosts.a
    text = "\n".join([
        'plan "e2e: move the writer app from a to b"',
        ssh_hosts.plan_host_decl("a"),
        ssh_hosts.plan_host_decl("b"),
        pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD"),
        pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD"),
        f'dir old_files on a {{ path = "{writer.files_dir}" }}',
        f'dir new_files on b {{ path = "{ssh_hosts.b.root}/public-system" }}',
        writer.plan_decl("app", "a", writes=["old_db", "old_files"]),
        "steps {",
        "  stop app",
        f'  dump old_db to a:"{a.root}/db.dump"',
        f'  transfer a:"{a.root}/db.dump" to b:"{ssh_hosts.b.root}/db.dump"',
        f'  restore b:"{ssh_hosts.b.root}/db.dump" into new_db replace',
        "}",
    ])
    assert f'port = {a.port}' in text and str(ssh_hosts.identity) in text
    parser = pytest.importorskip("mdsl.syntax.parser")
    plan = parser.parse_text(text, file="e2e.plan")
    assert plan is not None


# ---------------------------------------------------------------- teardown (keep last)


def test_teardown_stops_every_process_by_pid(_ssh_daemons):
    """A whole stack started and stopped inside the test leaves no process and no file behind."""
    shm_before = set(os.listdir("/dev/shm"))
    root_ssh_existed = Path("/root/.ssh").exists()
    known = set(REGISTRY.all())
    base = make_base_dir("mdsl-e2e-teardown-")
    cluster = SshCluster(base, addresses=("127.0.0.4", "127.0.0.5")).start()
    pg = PgCluster(base, "solo").initdb().start()
    w = Writer(base / "hosts" / "127.0.0.4" / "run", pg.dsn(), base / "hosts" / "127.0.0.4" / "files", rate=100)
    try:
        w.start()
        client = cluster.paramiko_client("a")
        client.exec_command("sleep 60")
        _wait_until(lambda: "sleep" in _tree_comms(cluster.a))
        cluster.a.kill_connections()  # leaves an orphaned `sleep 60`
        client.close()
        ours = [p for p in REGISTRY.all() if p not in known]
        kinds = {p.label.split()[0] for p in ours}
        assert {"sshd", "postgres", "writer", "sleep"} <= kinds, kinds
        assert any(p.alive() for p in ours)
    finally:
        w.close()
        cluster.stop()
        pg.destroy()
        shutil.rmtree(base)
    ours = [p for p in REGISTRY.all() if p not in known]
    assert [p for p in ours if p.alive()] == []
    assert not base.exists()
    assert set(os.listdir("/dev/shm")) == shm_before
    assert Path("/root/.ssh").exists() == root_ssh_existed
    # fixtures of earlier tests are torn down: only the session's two sshd daemons still run
    daemons = {h.pid for h in _ssh_daemons}
    assert {p.pid for p in REGISTRY.alive()} == daemons
