"""The app's own database login, moved with its database (issue 19), over the sshd test hosts.

The app (login_app.py) logs in exactly as its configuration file says, as WordPress or Mastodon would. Its
user exists on the source server only; the plan declares the login on both sides and the restore makes it
on the target (`like`) with the grants it has on the source; after the cutover the app writes. MariaDB's
trap (an account `'user'@'localhost'` and a TCP login from 127.0.0.1 under skip_name_resolve, which the
test servers run with) and PostgreSQL's (a `peer` line in pg_hba.conf for a password login) are refused
in preflight, with nothing stopped or changed.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import APP_USER, TARGET_DB
from dbservers import NEXTCLOUD_DB, NEXTCLOUD_USER, MariaDbServer, sql_str
from hosts import PgCluster, SshHost, plan_str
from reliability_helpers import human, mdsl, no_traceback, output

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parent / "login_app.py"
MARIA_WRITE = ("INSERT INTO oc_comments (actor_id, object_id, message, creation_timestamp) "
               "VALUES ('login-app', 'issue-19', 'written by the app', NOW())")
PG_WRITE = "insert into statuses (account_id, text, created_at, updated_at) values (1, 'login-app', now(), now())"


class App:
    """login_app.py on one host, configured like a real app: its database's address, user and password."""

    def __init__(self, ssh_hosts, host: SshHost, kind: str, db_host: str, port: int, database: str, user: str,
                 password: str, sql: str) -> None:
        self.ssh_hosts, self.host = ssh_hosts, host
        home = host.root / "app"
        home.mkdir(exist_ok=True)
        self.config = home / "db.conf"
        self.config.write_text(f"DB_TYPE={kind}\nDB_HOST={db_host}\nDB_PORT={port}\nDB_NAME={database}\n"
                               f"DB_USER={user}\nDB_PASSWORD={password}\n")
        self.config.chmod(0o600)
        self.log = home / "app.log"
        pid = home / "app.pid"
        run = f"python3 {shlex.quote(str(APP))}"
        self.start = (f"{run} start --config {shlex.quote(str(self.config))} --pidfile {shlex.quote(str(pid))} "
                      f"--log {shlex.quote(str(self.log))} --sql {shlex.quote(sql)}")
        self.stop = f"{run} stop --pidfile {shlex.quote(str(pid))}"
        self.status = f"{run} status --pidfile {shlex.quote(str(pid))}"

    def decl(self, name: str, writes: str, initially: str) -> str:
        return (f"service {name} on {self.host.name} {{\n  start = {plan_str(self.start)}\n"
                f"  stop = {plan_str(self.stop)}\n  status = {plan_str(self.status)}\n  writes = [{writes}]\n"
                f"  initially = {initially}\n}}")

    def sh(self, command: str) -> subprocess.CompletedProcess:
        return self.ssh_hosts.ssh(self.host, command, check=False)

    def running(self) -> bool:
        return self.sh(self.status).returncode == 0

    def close(self) -> None:
        self.sh(self.stop)


@pytest.fixture
def apps():
    made: list[App] = []
    yield made
    for app in made:
        app.close()


def _apply(plan: Path) -> subprocess.CompletedProcess:
    r = mdsl("apply", "--yes", str(plan))
    no_traceback(output(r))
    return r


def _move_steps(old_app: App, new_app: App, dump_a: Path, dump_b: Path, restore_flags: str = "") -> str:
    """The two apps' services and the move: stop, dump, transfer, restore (the login made there), start."""
    return f"""{old_app.decl("old_app", "old_db", "running")}
{new_app.decl("new_app", "new_db", "stopped")}
steps {{
  stop old_app
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  restore b:{plan_str(str(dump_b))} into new_db{restore_flags}
  start new_app
}}"""


def _move(plan: Path, old_app: App, password: str) -> None:
    """Check the plan clean, start the app on the old host, apply: it succeeds and shows no password."""
    assert mdsl("check", str(plan)).returncode == 0
    assert old_app.sh(old_app.start).returncode == 0
    r = _apply(plan)
    text = output(r)
    assert r.returncode == 0, human(text)
    assert password not in text


def _login(name: str, on: str, user: str, password_env: str, *, tcp: str | None = None, like: str | None = None,
           socket: str | None = None) -> str:
    lines = [f"login {name} on {on} {{", f"  user     = {plan_str(user)}",
             f"  password = env({plan_str(password_env)})"]
    lines.append(f"  tcp      = {plan_str(tcp)}" if tcp else f"  socket   = {plan_str(socket)}")
    if like:
        lines.append(f"  like     = {like}")
    return "\n".join(lines + ["}"])


# ---------------------------------------------------------------- MariaDB


def _maria_plan(tmp_path: Path, ssh_hosts, source: MariaDbServer, target: MariaDbServer, old_app: App,
                new_app: App, *, made: bool, app_password: str = "MDSL_E2E_MYSQL_PASSWORD") -> Path:
    a, b = ssh_hosts.a, ssh_hosts.b
    dump_a, dump_b = a.root / "outbox" / "nc.sql.zst", b.root / "inbox" / "nc.sql.zst"
    password = "MDSL_E2E_MYSQL_PASSWORD"
    plan = tmp_path / "login-mariadb.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{source.plan_decl("old_db", "a", user=NEXTCLOUD_USER, password_env=password)}
{target.plan_decl("new_db", "b", socket=True, run_as="root", fresh=True)}
# how the app logs in, as its configuration says (the same file on both hosts: only the port differs here)
{_login("app_old", "old_db", NEXTCLOUD_USER, app_password, tcp=source.tcp)}
{_login("app_new", "new_db", NEXTCLOUD_USER, app_password, tcp=target.tcp, like="app_old" if made else None)}
{_move_steps(old_app, new_app, dump_a, dump_b, " replace")}
""")
    return plan


def _maria_apps(ssh_hosts, source: MariaDbServer, target: MariaDbServer, apps: list) -> tuple[App, App]:
    old = App(ssh_hosts, ssh_hosts.a, "mysql", source.listen, source.port, NEXTCLOUD_DB, NEXTCLOUD_USER,
              source.app_password, MARIA_WRITE)
    new = App(ssh_hosts, ssh_hosts.b, "mysql", target.listen, target.port, NEXTCLOUD_DB, NEXTCLOUD_USER,
              source.app_password, MARIA_WRITE)
    apps += [old, new]
    return old, new


def _accounts(server: MariaDbServer) -> set[str]:
    return set(server.sql(f"SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User = {sql_str(NEXTCLOUD_USER)}")
               .splitlines())


def test_mariadb_app_login_made_on_the_target_and_the_app_writes_after_the_cutover(
        ssh_hosts, mariadb_source, mariadb_target, tmp_path, apps):
    old_app, new_app = _maria_apps(ssh_hosts, mariadb_source, mariadb_target, apps)
    assert _accounts(mariadb_target) == set()  # the app's user exists on the source only
    plan = _maria_plan(tmp_path, ssh_hosts, mariadb_source, mariadb_target, old_app, new_app, made=True)
    _move(plan, old_app, mariadb_source.app_password)
    # made for the app's connection (TCP from 127.0.0.1), with the grants it has on the source database
    assert _accounts(mariadb_target) == {"nextcloud@127.0.0.1"}
    grants = mariadb_target.sql("SHOW GRANTS FOR 'nextcloud'@'127.0.0.1'")
    assert "GRANT ALL PRIVILEGES ON `nextcloud`.* TO `nextcloud`@`127.0.0.1`" in grants, grants
    assert "mysql" not in grants  # a grant on another database is not the app's: not copied
    # the app, started by the plan on the new host, logs in as its configuration says and writes
    assert new_app.running(), new_app.log.read_text()
    written = mariadb_target.sql("SELECT COUNT(*) FROM oc_comments WHERE actor_id = 'login-app'", NEXTCLOUD_DB)
    before = int(mariadb_source.sql("SELECT COUNT(*) FROM oc_comments WHERE actor_id = 'login-app'", NEXTCLOUD_DB))
    assert int(written) > before > 0
    # the password travelled on stdin and in 0600 files: not in the plan's journal
    assert mariadb_source.app_password not in (plan.parent / ".mdsl" / "login-mariadb.journal").read_text()


def test_mariadb_localhost_account_and_a_tcp_app_refused_in_preflight(
        ssh_hosts, mariadb_source, mariadb_target, tmp_path, apps):
    """The target has the app's user, as 'nextcloud'@'localhost' only (as WordPress's guide makes it), and the
    app connects over TCP to 127.0.0.1: under skip_name_resolve the server refuses it. Caught before the stop."""
    mariadb_target.create_user(NEXTCLOUD_USER, mariadb_source.app_password, hosts=("localhost",),
                               database=NEXTCLOUD_DB)
    old_app, new_app = _maria_apps(ssh_hosts, mariadb_source, mariadb_target, apps)
    plan = _maria_plan(tmp_path, ssh_hosts, mariadb_source, mariadb_target, old_app, new_app, made=False)
    assert old_app.sh(old_app.start).returncode == 0
    r = _apply(plan)
    text = human(output(r))
    assert r.returncode != 0, text
    assert "error[P411]" in text and "'nextcloud'@'localhost'" in text and "skip_name_resolve" in text, text
    assert "create 'nextcloud'@'127.0.0.1'" in text, text
    assert "nothing was stopped or changed" in text
    assert old_app.running()  # not stopped
    assert mariadb_target.tables(NEXTCLOUD_DB) == []
    # the same plan with the login made by the restore passes preflight: the account it makes is the app's
    plan = _maria_plan(tmp_path, ssh_hosts, mariadb_source, mariadb_target, old_app, new_app, made=True)
    r = _apply(plan)
    assert r.returncode == 0, human(output(r))
    assert _accounts(mariadb_target) == {"nextcloud@localhost", "nextcloud@127.0.0.1"}
    assert new_app.running(), new_app.log.read_text()


def test_mariadb_wrong_app_password_refused_in_preflight(ssh_hosts, mariadb_source, mariadb_target, tmp_path, apps,
                                                        monkeypatch):
    """The password the plan would give the new account is proven on the source first."""
    old_app, new_app = _maria_apps(ssh_hosts, mariadb_source, mariadb_target, apps)
    plan = _maria_plan(tmp_path, ssh_hosts, mariadb_source, mariadb_target, old_app, new_app, made=True,
                       app_password="MDSL_E2E_APP_PASSWORD")
    monkeypatch.setenv("MDSL_E2E_APP_PASSWORD", "not-the-app-password")
    r = _apply(plan)
    text = human(output(r))
    assert r.returncode != 0 and "error[P411]" in text and "app_old" in text, text
    assert "not-the-app-password" not in output(r)
    assert _accounts(mariadb_target) == set()


# ---------------------------------------------------------------- PostgreSQL


def _pg_plan(tmp_path: Path, ssh_hosts, source: PgCluster, target: PgCluster, old_app: App, new_app: App, *,
             target_login: str) -> Path:
    a, b = ssh_hosts.a, ssh_hosts.b
    dump_a, dump_b = a.root / "outbox" / "m.dump", b.root / "inbox" / "m.dump"
    plan = tmp_path / "login-postgres.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
postgres new_db on b {{
  database = {plan_str(TARGET_DB)}
  user     = "postgres"
  socket   = {plan_str(str(target.sockdir))}
  port     = {target.port}
  fresh    = true
}}
{_login("app_old", "old_db", APP_USER, "MDSL_E2E_SOURCE_PASSWORD", tcp=source.tcp)}
{target_login}
{_move_steps(old_app, new_app, dump_a, dump_b)}
""")
    return plan


def _pg_apps(ssh_hosts, source: PgCluster, target: PgCluster, apps: list) -> tuple[App, App]:
    old = App(ssh_hosts, ssh_hosts.a, "postgres", source.listen, source.port, source.db, APP_USER,
              source.app_password, PG_WRITE)
    new = App(ssh_hosts, ssh_hosts.b, "postgres", target.listen, target.port, TARGET_DB, APP_USER,
              source.app_password, PG_WRITE)
    apps += [old, new]
    return old, new


def _no_app_role(target: PgCluster) -> None:
    target.psql(f"drop database {TARGET_DB}; drop role {APP_USER};")


def test_postgres_app_role_made_on_the_target_owns_its_tables_and_the_app_writes(
        ssh_hosts, pg_source, pg_target, tmp_path, apps):
    _no_app_role(pg_target)
    old_app, new_app = _pg_apps(ssh_hosts, pg_source, pg_target, apps)
    made = _login("app_new", "new_db", APP_USER, "MDSL_E2E_SOURCE_PASSWORD", tcp=pg_target.tcp, like="app_old")
    plan = _pg_plan(tmp_path, ssh_hosts, pg_source, pg_target, old_app, new_app, target_login=made)
    _move(plan, old_app, pg_source.app_password)
    # the role exists, with a SCRAM verifier (the password never reached the server as text)
    assert pg_target.psql(f"select rolcanlogin, rolpassword like 'SCRAM-SHA-256$%' from pg_authid "
                          f"where rolname = '{APP_USER}'") == "t|t"
    # what it owned on the source it owns here: the database, every table, the sequences with them
    owners = pg_target.psql("select distinct pg_get_userbyid(relowner) from pg_class c join pg_namespace n "
                            "on n.oid = c.relnamespace where n.nspname = 'public' and relkind in ('r', 'S')",
                            db=TARGET_DB)
    assert owners == APP_USER
    assert pg_target.psql(f"select pg_get_userbyid(datdba) from pg_database where datname = '{TARGET_DB}'") == APP_USER
    assert new_app.running(), new_app.log.read_text()
    assert int(pg_target.psql("select count(*) from statuses where text = 'login-app'", db=TARGET_DB)) > int(
        pg_source.psql("select count(*) from statuses where text = 'login-app'", db=pg_source.db)) > 0


def test_postgres_peer_line_for_a_password_login_refused_in_preflight(
        ssh_hosts, pg_source, pg_target, tmp_path, apps):
    """The target's pg_hba.conf authenticates the app's socket logins by peer; the app logs in with a
    password, as a user that is not `mastodon`: refused, before the stop, naming the line."""
    hba = pg_target.datadir / "pg_hba.conf"
    hba.write_text(f"local all {APP_USER} peer\n" + hba.read_text())
    pg_target.psql("select pg_reload_conf()")
    old_app, new_app = _pg_apps(ssh_hosts, pg_source, pg_target, apps)
    target_login = _login("app_new", "new_db", APP_USER, "MDSL_E2E_SOURCE_PASSWORD", socket=str(pg_target.sockdir))
    plan = _pg_plan(tmp_path, ssh_hosts, pg_source, pg_target, old_app, new_app, target_login=target_login)
    assert old_app.sh(old_app.start).returncode == 0
    r = _apply(plan)
    text = human(output(r))
    assert r.returncode != 0 and "error[P411]" in text and "by peer" in text and "line 1" in text, text
    assert "nothing was stopped or changed" in text
    assert old_app.running()
