"""`replicate DB to DB live` and its final pass for MariaDB end to end: two MariaDB servers (the source
with log_bin, binlog_format = ROW and its own server_id), two sshd hosts, the replication carried by mdsl's
own SSH tunnel, and a writer inserting rows until the plan stops it. Afterwards every table's CHECKSUM
TABLE and row count are equal (an AUTO_INCREMENT table and a SEQUENCE too), and no replication connection
is left on the target. A run killed between the live pass and the final pass leaves the connection; the
next apply finishes and removes it, or, when the plan was edited to drop the replication, removes it from
what the journal recorded. With event_scheduler ON on both servers, the source's scheduled events do not
run on the target while it replicates (only their replicated rows arrive), and after the final pass each
has the source's status and definer and runs there. A source without binlog is refused in preflight,
nothing changed.
The servers are shared by the module's tests (each test uses a database of its own)."""

from __future__ import annotations

import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from dbservers import MariaDbServer, sql_str
from hosts import free_port, plan_str
from reliability_helpers import Apply, human, mdsl, no_traceback, output, wait_until

pytestmark = pytest.mark.e2e

PASSWORD_ENV = "MDSL_E2E_MYSQL_REPL_PASSWORD"
USER = "replicator"
SCHEMA = """
CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(40), body TEXT, at DATETIME(6));
CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB);
CREATE SEQUENCE ticket_seq START WITH 100 INCREMENT BY 1;
CREATE TABLE tickets (id BIGINT PRIMARY KEY DEFAULT (NEXT VALUE FOR ticket_seq), note VARCHAR(40));
INSERT INTO events (who, body, at) SELECT 'seed', CONCAT('row ', seq, ' 🚀'), NOW(6) FROM seq_1_to_20000;
INSERT INTO blobs SELECT seq, RANDOM_BYTES(512) FROM seq_1_to_2000;
INSERT INTO tickets (note) SELECT CONCAT('t', seq) FROM seq_1_to_50;
"""


@pytest.fixture(scope="module")
def servers(e2e_base):
    """A binlogging source (a user with a password over TCP, REPLICATION SLAVE and BINLOG MONITOR) and a
    target (root by unix_socket), running for the module."""
    password = secrets.token_urlsafe(12) + "#;'\""
    source = MariaDbServer(e2e_base, f"repl-source-{secrets.token_hex(3)}").install()
    target = MariaDbServer(e2e_base, f"repl-target-{secrets.token_hex(3)}").install()
    try:
        source.extra_args = [f"--log-bin={source.datadir}/binlog", "--binlog-format=ROW", "--server-id=11"]
        target.extra_args = ["--server-id=12"]
        source.start()
        target.start()
        source.create_user(USER, password)
        source.sql(f"GRANT ALL PRIVILEGES ON *.* TO {sql_str(USER)}@'127.0.0.1';")
        source.password = password
        yield source, target
    finally:
        source.destroy()
        target.destroy()


@pytest.fixture
def db(servers, monkeypatch, request) -> str:
    """A database of this test's own on the source, loaded."""
    source, _ = servers
    monkeypatch.setenv(PASSWORD_ENV, source.password)
    name = "app_" + secrets.token_hex(3)
    source.createdb(name)
    source.sql(SCHEMA, db=name)
    return name


class Writer:
    """A service on host a inserting rows (and using the sequence) every 20 ms, as root over the socket."""

    def __init__(self, server: MariaDbServer, db: str, workdir: Path, stop_delay: float = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        pid = shlex.quote(str(workdir / "writer.pid"))
        client = " ".join(shlex.quote(w) for w in server.client_argv(db))
        sql = ("INSERT INTO events (who, body, at) VALUES ('writer', 'live ✓', NOW(6)); "
               "INSERT INTO tickets (note) VALUES ('live'); UPDATE blobs SET data = RANDOM_BYTES(64) "
               "WHERE id = 1 + FLOOR(RAND() * 2000);")
        loop = f"while :; do {client} -e {shlex.quote(sql)} || exit 1; sleep 0.02; done"
        self.start = f"nohup sh -c {shlex.quote(loop)} >/dev/null 2>&1 & echo $! > {pid}"
        delay = f"sleep {stop_delay}; " if stop_delay else ""
        self.stop = f"{delay}kill $(cat {pid}); while kill -0 $(cat {pid}) 2>/dev/null; do sleep 0.05; done; rm -f {pid}"
        self.status = f"test -f {pid} && kill -0 $(cat {pid}) 2>/dev/null"

    def decl(self, name: str, host: str, writes: str) -> str:
        return (f"service {name} on {host} {{\n  start = {plan_str(self.start)}\n  stop = {plan_str(self.stop)}\n"
                f"  status = {plan_str(self.status)}\n  writes = [{writes}]\n  initially = running\n}}")

    def run(self) -> None:
        subprocess.run(["sh", "-c", self.start], check=True, timeout=30)

    def kill(self) -> None:
        subprocess.run(["sh", "-c", f"{self.status} && {{ {self.stop.split('; ', 1)[-1]}; }}"], timeout=30)


def _plan(tmp_path: Path, ssh_hosts, source: MariaDbServer, target: MariaDbServer, src_db: str, dst_db: str,
          writer: Writer, name: str = "repl", between: str = "") -> Path:
    plan = tmp_path / f"{name}.plan"
    port = free_port()
    plan.write_text(f"""
plan "replicate MariaDB while the app runs"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{source.plan_decl("old_db", "a", database=src_db, user=USER, password_env=PASSWORD_ENV)}
{target.plan_decl("new_db", "b", database=dst_db, socket=True, run_as="root")}
{writer.decl("old_app", "a", "old_db")}
steps {{
  replicate old_db to new_db live  port = {port}
{between}  # mdsl: allow H301 "e2e: only the database moves; the writer is not started anywhere else"
  stop old_app
  replicate old_db to new_db  port = {port}
}}
""")
    return plan


def _connections(target: MariaDbServer) -> str:
    return target.sql("SHOW ALL SLAVES STATUS")


def _assert_equal(source: MariaDbServer, src_db: str, target: MariaDbServer, dst_db: str) -> None:
    assert target.table_sums(dst_db) == source.table_sums(src_db)
    # the sequence's state came with the row events: the target hands out no value the source gave (it
    # continues after the source's cached block, as the source itself would after a restart)
    assert int(target.sql("SELECT NEXT VALUE FOR ticket_seq", dst_db)) > int(source.sql(
        "SELECT MAX(id) FROM tickets", src_db))


def test_replicate_live_then_final_pass_leaves_an_equal_database(ssh_hosts, servers, db, tmp_path):
    source, target = servers
    writer = Writer(source, db, ssh_hosts.a.root / f"writer-{db}")
    writer.run()
    try:
        wait_until(lambda: source.sql("SELECT COUNT(*) FROM events WHERE who = 'writer'", db) not in ("", "0"),
                   what="the writer wrote rows")
        dst_db = db + "_new"  # another name on the target: replicate_rewrite_db
        plan = _plan(tmp_path, ssh_hosts, source, target, db, dst_db, writer)
        r = mdsl("check", str(plan))
        assert r.returncode == 0, output(r)
        before = int(source.sql("SELECT COUNT(*) FROM events", db))
        r = mdsl("apply", "--yes", str(plan), timeout=300)
        no_traceback(output(r))
        assert r.returncode == 0, human(output(r))
    finally:
        writer.kill()
    assert int(source.sql("SELECT COUNT(*) FROM events", db)) > before  # the writer ran on during the live pass
    _assert_equal(source, db, target, dst_db)
    # the replica went on from the snapshot's position: from an empty one it would replay the source's binlog
    # from its start (MariaDB's idempotent DDL makes that look right here, where the binlog holds it all)
    assert "replication starts at GTID position ''" not in target.log_path.read_text()
    assert _connections(target) == ""
    assert target.sql(f"SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{dst_db}'") == ""
    # no password in the journal or the output
    assert source.password not in output(r)


def _killed_in_the_live_pass(tmp_path: Path, ssh_hosts, source: MariaDbServer, target: MariaDbServer, db: str,
                             writer, name: str) -> Path:
    """Apply a replicate plan and SIGKILL mdsl once the live pass has made its replication connection."""
    plan = _plan(tmp_path, ssh_hosts, source, target, db, db, writer, name=name)
    run = Apply(plan)
    try:
        wait_until(lambda: _connections(target) != "" or not run.running, timeout=120, step=0.1,
                   what="the live pass started its replication connection")
        assert run.running, human(output(run.finish()))
        run.kill()
        run.finish()
    finally:
        run.ref.stop()
    return plan


def test_kill_between_the_passes_then_apply_again_leaves_no_connection(ssh_hosts, servers, db, tmp_path):
    source, target = servers
    writer = Writer(source, db, ssh_hosts.a.root / f"writer-{db}", stop_delay=5)  # a slow stop: time to kill
    writer.run()
    try:
        plan = _killed_in_the_live_pass(tmp_path, ssh_hosts, source, target, db, writer, "killed")
        assert _connections(target) != ""  # killed: the connection is left (it retries without the tunnel)
        r = mdsl("apply", "--yes", str(plan), timeout=300)
        no_traceback(output(r))
        assert r.returncode == 0, human(output(r))
    finally:
        writer.kill()
    _assert_equal(source, db, target, db)
    assert _connections(target) == ""


def test_a_plan_edited_between_the_passes_still_has_the_connection_removed(ssh_hosts, servers, db, tmp_path):
    source, target = servers
    writer = Writer(source, db, ssh_hosts.a.root / f"writer-{db}", stop_delay=5)
    writer.run()
    try:
        plan = _killed_in_the_live_pass(tmp_path, ssh_hosts, source, target, db, writer, "edited")
        assert _connections(target) != ""
        # the operator gives up replicating: the plan no longer names the replication at all
        text = plan.read_text()
        plan.write_text(text[:text.index("steps {")] + "steps {\n  stop old_app\n}\n")
        r = mdsl("apply", "--yes", str(plan), timeout=300)
        no_traceback(output(r))
        assert r.returncode == 0, human(output(r))
        assert "removed replication mdsl_" in human(output(r))
    finally:
        writer.kill()
    assert _connections(target) == ""


TICKER = "'ticker'@'localhost'"  # the events' definer, on both servers: not the plan's target login (root)
EVENTS = f"""
CREATE TABLE ticks (id BIGINT AUTO_INCREMENT PRIMARY KEY, server INT NOT NULL, event VARCHAR(8), at DATETIME(6));
CREATE DEFINER = {TICKER} EVENT tick ON SCHEDULE EVERY 1 SECOND
  DO INSERT INTO ticks (server, event, at) VALUES (@@server_id, 'tick', NOW(6));
CREATE DEFINER = {TICKER} EVENT idle ON SCHEDULE EVERY 1 DAY DISABLE
  DO INSERT INTO ticks (server, event, at) VALUES (@@server_id, 'idle', NOW(6));
"""
# run on the source during the replication: a new enabled event, and an ALTER that keeps `idle` disabled there
# (naming the definer: ALTER EVENT makes whoever runs it the definer otherwise)
DURING = (f"CREATE DEFINER = {TICKER} EVENT tock ON SCHEDULE EVERY 1 SECOND DO INSERT INTO ticks (server, event, at) "
          f"VALUES (@@server_id, 'tock', NOW(6)); ALTER DEFINER = {TICKER} EVENT idle ON SCHEDULE EVERY 2 DAY;")


def _statuses(server: MariaDbServer, db: str) -> dict[str, str]:
    out = server.sql(f"SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {sql_str(db)}")
    return dict(line.split("\t") for line in out.splitlines())


def test_events_do_not_run_on_the_target_until_the_final_pass_gives_them_the_source_status(
        ssh_hosts, servers, db, tmp_path):
    source, target = servers
    dst_db = db + "_new"  # replicated CREATE EVENTs go through replicate_rewrite_db too
    seen = ssh_hosts.b.root / f"events-{db}.txt"
    for server in (source, target):
        server.sql(f"CREATE USER IF NOT EXISTS {TICKER}; GRANT ALL PRIVILEGES ON *.* TO {TICKER}; "
                   "SET GLOBAL event_scheduler = ON;")
    writer = Writer(source, db, ssh_hosts.a.root / f"writer-{db}")
    try:
        source.sql(EVENTS, db=db)
        wait_until(lambda: source.sql("SELECT COUNT(*) FROM ticks", db) not in ("", "0"), what="the source's event ran")
        src_client = " ".join(shlex.quote(w) for w in source.client_argv(db))
        dst_client = " ".join(shlex.quote(w) for w in target.client_argv(dst_db))
        arrived = (f"SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {sql_str(dst_db)} "
                   "AND (EVENT_NAME = 'tock' OR EVENT_NAME = 'idle' AND INTERVAL_VALUE = '2')")
        record = (f"SELECT CONCAT('event ', EVENT_NAME, ' ', STATUS) FROM information_schema.EVENTS "
                  f"WHERE EVENT_SCHEMA = {sql_str(dst_db)}; "
                  "SELECT CONCAT('rows ', server, ' ', COUNT(*)) FROM ticks GROUP BY server;")
        # on the target while it replicates (event_scheduler ON there): wait for the new event to arrive, give
        # every event 3 s to run if it could, then note what the target has (the CREATE and the ALTER came)
        look = (f"i=0; until [ \"$({dst_client} -e {shlex.quote(arrived)})\" = 2 ]; do i=$((i+1)); "
                f"[ $i -lt 600 ] || exit 1; sleep 0.1; done; sleep 3; "
                f"{dst_client} -e {shlex.quote(record)} > {shlex.quote(str(seen))}")
        between = (f"  run a {plan_str(f'{src_client} -e {shlex.quote(DURING)}')} writes = [old_db]\n"
                   f"  run b {plan_str(look)}\n")
        plan = _plan(tmp_path, ssh_hosts, source, target, db, dst_db, writer, name="events", between=between)
        writer.run()
        r = mdsl("apply", "--yes", str(plan), timeout=300)
        no_traceback(output(r))
        assert r.returncode == 0, human(output(r))

        during = seen.read_text().splitlines()
        # held as a replica holds them: the snapshot's, the new one and the altered one; no row the target's
        # own runs wrote (server 12), the source's (server 11) replicated
        assert sorted(x for x in during if x.startswith("event ")) == [
            "event idle SLAVESIDE_DISABLED", "event tick SLAVESIDE_DISABLED", "event tock SLAVESIDE_DISABLED"]
        rows = {x.split()[1]: int(x.split()[2]) for x in during if x.startswith("rows ")}
        assert set(rows) == {"11"} and rows["11"] > 0, during
        # the cutover: each event as on the source, with the source's definer, and they run on the target
        assert _statuses(source, db) == {"idle": "DISABLED", "tick": "ENABLED", "tock": "ENABLED"}
        assert _statuses(target, dst_db) == _statuses(source, db)
        assert target.routines(dst_db) == source.routines(db) == {f"EVENT {e}": "ticker@localhost"
                                                                  for e in ("idle", "tick", "tock")}
        wait_until(lambda: target.sql("SELECT COUNT(DISTINCT event) FROM ticks WHERE server = 12", dst_db) == "2",
                   timeout=20, what="tick and tock ran on the target")
        assert target.sql("SELECT COUNT(*) FROM ticks WHERE event = 'idle'", dst_db) == "0"
    finally:
        writer.kill()
        for server in (source, target):
            server.sql("SET GLOBAL event_scheduler = OFF")


def test_preflight_refuses_a_source_without_binlog_before_anything_changes(ssh_hosts, servers, db, tmp_path,
                                                                           monkeypatch):
    source, target = servers
    # the target server (no binlog) as the source of a replication into the source server
    password = secrets.token_urlsafe(12)
    target.create_user(USER, password)
    target.sql(f"GRANT ALL PRIVILEGES ON *.* TO {sql_str(USER)}@'127.0.0.1';")
    target.createdb(db)
    monkeypatch.setenv(PASSWORD_ENV, password)
    writer = Writer(target, db, ssh_hosts.a.root / f"writer-{db}")
    plan = _plan(tmp_path, ssh_hosts, target, source, db, db + "_copy", writer, name="refused")
    r = mdsl("apply", "--yes", str(plan), timeout=300)
    no_traceback(output(r))
    text = human(output(r))
    assert r.returncode != 0, text
    assert "P413" in text and "no binary log" in text and "restart" in text, text
    assert source.sql(f"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}_copy'") == "0"
    assert _connections(source) == ""
