"""Fixtures with real parts: sshd on 127.0.0.2/127.0.0.3, PostgreSQL 15 clusters, a writer service.

Fixtures (see hosts.py for the classes):

- `e2e_base` (session): the 0755 temp dir everything lives in; removed at the
  end unless MDSL_E2E_KEEP=1.
- `ssh_hosts` (function; daemons are per session): an `SshCluster` with hosts
  `a` = 127.0.0.2 and `b` = 127.0.0.3, each its own sshd and host key. Before
  each test both daemons run, no connections are left and each host's `root`
  directory is empty (except a `.mdsl-host` marker).
- `pg_source` (function): a running `PgCluster` cloned from a session template
  holding database `mastodon_production` (100k statuses, accounts,
  media_attachments, schema_migrations) owned by role `mastodon`.
- `pg_target` (function): a running `PgCluster` with role `mastodon` (another
  password) and an empty database `mastodon`.
- `writer` (function): a `Writer` (not started) that writes into pg_source's
  `writer_events` table and into `ssh_hosts.a.root / "public-system"`.

The app passwords are also in the environment for plans: MDSL_E2E_SOURCE_PASSWORD
and MDSL_E2E_TARGET_PASSWORD (set per test, undone afterwards).

Every process is stopped by pid in finalizers; at the end of the session any
recorded process still alive is killed and the session fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hosts import PG_BIN, REGISTRY, SSHD, ClonePool, PgCluster, SshCluster, Writer, make_base_dir  # noqa: E402

APP_USER = "mastodon"
SOURCE_DB = "mastodon_production"
TARGET_DB = "mastodon"
DATASET_ROWS = 100_000


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    # trylast: after the runner's own sessionfinish has torn down session fixtures (-x, Ctrl-C)
    leaked = REGISTRY.kill_all()
    if leaked:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "e2e: processes still alive after teardown (now killed): " + ", ".join(
            f"{p.label} pid {p.pid}" for p in leaked
        )
        if tr is not None:
            tr.ensure_newline()
            tr.write_line(msg, red=True)
        else:
            print(msg, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _require_real_parts() -> None:
    missing = [str(p) for p in (SSHD, PG_BIN / "initdb", PG_BIN / "pg_ctl", PG_BIN / "psql") if not p.exists()]
    missing += [t for t in ("ssh", "ssh-keygen", "runuser") if shutil.which(t) is None]
    if os.geteuid() != 0:
        pytest.fail("e2e tests run as root (sshd, runuser -u postgres); deselect them with -m 'not e2e'")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        missing.append("OS user postgres")
    if missing:
        pytest.fail(f"e2e tests need {', '.join(missing)}; .ci/run installs them (or deselect with -m 'not e2e')")


@pytest.fixture(scope="session")
def e2e_base():
    _require_real_parts()
    base = make_base_dir()
    yield base
    if not os.environ.get("MDSL_E2E_KEEP"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def _ssh_daemons(e2e_base):
    cluster = SshCluster(e2e_base)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ssh_hosts(_ssh_daemons) -> SshCluster:
    _ssh_daemons.reset()
    yield _ssh_daemons
    for host in _ssh_daemons:
        host.kill_connections()
        host.reap_orphans()


@dataclass
class PgTemplates:
    """Stopped template clusters; per-test clusters are copies (cp -a beats initdb + load by far)."""

    source: ClonePool
    target: ClonePool
    source_password: str
    target_password: str


@pytest.fixture(scope="session")
def pg_templates(e2e_base):
    # one initdb: it becomes the target template, its early copy the source template
    target = PgCluster(e2e_base, "template-target").initdb()
    made = [target]
    pools: list[ClonePool] = []
    try:
        source_pw, target_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        with target:
            target.create_role(APP_USER, source_pw)
            target.compact()
        source = target.clone(e2e_base, "template-source")
        made.append(source)
        with source:
            source.createdb(SOURCE_DB, owner=APP_USER)
            source.load_dataset(SOURCE_DB, rows=DATASET_ROWS, owner=APP_USER)
            source.compact()
        source.db, source.app_user, source.app_password = SOURCE_DB, APP_USER, source_pw
        with target:
            target.psql(f"alter role {APP_USER} password '{target_pw}';")
            target.createdb(TARGET_DB, owner=APP_USER)
            target.compact()
        target.db, target.app_user, target.app_password = TARGET_DB, APP_USER, target_pw
        pools.append(ClonePool(source, e2e_base, "source"))
        pools.append(ClonePool(target, e2e_base, "target"))
        yield PgTemplates(pools[0], pools[1], source_pw, target_pw)
    finally:
        for pool in pools:
            pool.close()
        for c in made:
            c.stop()


def _running(pool: ClonePool):
    cluster = pool.take()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_source(pg_templates, monkeypatch) -> PgCluster:
    monkeypatch.setenv("MDSL_E2E_SOURCE_PASSWORD", pg_templates.source_password)
    yield from _running(pg_templates.source)


@pytest.fixture
def pg_target(pg_templates, monkeypatch) -> PgCluster:
    monkeypatch.setenv("MDSL_E2E_TARGET_PASSWORD", pg_templates.target_password)
    yield from _running(pg_templates.target)


@pytest.fixture
def writer(pg_source, ssh_hosts) -> Writer:
    root = ssh_hosts.a.root
    w = Writer(root / "run", pg_source.dsn(pg_source.db, APP_USER), root / "public-system")
    try:
        yield w
    finally:
        w.close()


# ---------------------------------------------------------------- MariaDB and Redis (issue 12)
# Servers from dbservers.py: `mariadb_source` (Nextcloud-like database `nextcloud`, user `nextcloud`
# with MDSL_E2E_MYSQL_PASSWORD over TCP), `mariadb_target` (empty `nextcloud`, root by unix_socket),
# `redis_source` (sample keys in databases 0 and 3, MDSL_E2E_REDIS_PASSWORD), `redis_target` (no
# password, keys of its own that a `replace` restore must remove). Each is a fresh running server.

from dbservers import MariaTemplates, RedisServer, missing_tools  # noqa: E402


@pytest.fixture(scope="session")
def mariadb_templates(e2e_base):
    missing = missing_tools()
    if missing:
        pytest.fail(f"e2e tests need {', '.join(missing)}; .ci/run installs them (or deselect with -m 'not e2e')")
    templates = MariaTemplates.build(e2e_base, secrets.token_urlsafe(12) + "#;'\"")
    yield templates
    templates.close()


@pytest.fixture
def mariadb_source(mariadb_templates, monkeypatch):
    monkeypatch.setenv("MDSL_E2E_MYSQL_PASSWORD", mariadb_templates.password)
    yield from _running(mariadb_templates.source)


@pytest.fixture
def mariadb_target(mariadb_templates):
    yield from _running(mariadb_templates.target)


@pytest.fixture
def redis_source(e2e_base, monkeypatch):
    password = secrets.token_urlsafe(12) + " #\"'"
    monkeypatch.setenv("MDSL_E2E_REDIS_PASSWORD", password)
    server = RedisServer(e2e_base, f"source-{secrets.token_hex(4)}", password=password).start()
    try:
        server.load_sample(2000)
        server.load_sample(300, db=3, prefix="sidekiq")
        yield server
    finally:
        server.destroy()


@pytest.fixture
def redis_target(e2e_base):
    server = RedisServer(e2e_base, f"target-{secrets.token_hex(4)}").start()
    try:
        server.load_sample(50, prefix="stale")
        yield server
    finally:
        server.destroy()
