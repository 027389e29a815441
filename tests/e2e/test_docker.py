"""Docker and Compose end to end: two Docker hosts (one dockerd each, tests/e2e/dockerd.py), reached as the
sshd test hosts `a` and `b` (each with its own DOCKER_HOST).

An Immich-like Compose project (a PostgreSQL container with a named volume; an app container that
writes rows and files into a bind mount and a named volume until it is stopped) moves from a to b
while it runs until the stop: afterwards rows, files, numeric owners and the volume's Compose labels
match, and `docker-compose up` on b uses the filled volumes. The same project deployed on b from a
directory with another name is refused by preflight before anything changes (P410). A single
container's volume moves through an archive.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from dockerd import APP_UID, IMAGE, Dockerd, build_rootfs
from hosts import plan_str
from reliability_helpers import human, mdsl, no_traceback, output

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().with_name("compose_app.py")

COMPOSE_FILE = f"""version: "2.4"
services:
  database:
    image: {IMAGE}
    container_name: immich_postgres
    command: ["/usr/local/bin/db-entry"]
    user: "999:999"
    network_mode: none
    stop_signal: SIGINT
    volumes: ["pgdata:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres"]
      interval: 1s
      timeout: 5s
      retries: 60
  immich-server:
    image: {IMAGE}
    command: ["python3", "/app/compose_app.py"]
    user: "{APP_UID}:{APP_UID}"
    network_mode: "service:database"
    volumes: ["./library:/library", "model-cache:/cache"]
    environment: {{PGHOST: 127.0.0.1, PGUSER: postgres}}
volumes:
  pgdata:
  model-cache:
"""


@pytest.fixture(scope="module")
def docker_daemons(_ssh_daemons, e2e_base):
    """One dockerd per test host, the test image imported into each; each host's sessions get its DOCKER_HOST."""
    rootfs = build_rootfs(e2e_base / "docker-rootfs", APP)
    daemons: dict[str, Dockerd] = {}
    try:
        for h in _ssh_daemons:
            daemons[h.name] = Dockerd(e2e_base / "docker" / h.name, h.name).start()
            daemons[h.name].import_image(rootfs)
            h.env["DOCKER_HOST"] = daemons[h.name].host
            h.restart()
        _ssh_daemons.write_client_files()
        yield daemons
    finally:
        for h in _ssh_daemons:
            if h.env.pop("DOCKER_HOST", None) is not None:
                h.restart()
        _ssh_daemons.write_client_files()
        for d in daemons.values():
            d.destroy()


@pytest.fixture
def docker_hosts(ssh_hosts, docker_daemons):
    """The sshd hosts with their Docker daemons: no container or volume left from another test."""
    for d in docker_daemons.values():
        d.remove_all()
    yield ssh_hosts, docker_daemons
    for d in docker_daemons.values():
        d.remove_all()


def _project(root: Path, dirname: str = "immich") -> Path:
    project = root / "srv" / dirname
    (project / "library").mkdir(parents=True)
    os.chown(project / "library", APP_UID, APP_UID)
    (project / "docker-compose.yml").write_text(COMPOSE_FILE)
    return project


def _rows(d: Dockerd) -> int:
    r = d.docker("exec", "immich_postgres", "psql", "-X", "-A", "-t", "-U", "postgres", "-d", "immich",
                 "-c", "select count(*) from assets")
    return int(r.stdout.strip())


def _wait_rows(d: Dockerd, at_least: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = d.docker("exec", "immich_postgres", "psql", "-X", "-A", "-t", "-U", "postgres", "-d", "immich",
                     "-c", "select count(*) from assets", check=False)
        if r.returncode == 0 and r.stdout.strip().isdigit() and int(r.stdout.strip()) >= at_least:
            return int(r.stdout.strip())
        time.sleep(0.3)
    raise AssertionError(f"the app wrote fewer than {at_least} rows in {timeout}s")


def _volume(d: Dockerd, name: str) -> dict:
    return json.loads(d.docker("volume", "inspect", name).stdout)[0]


def _files(path: Path) -> dict:
    """name -> (content, uid, gid) of the files directly in path."""
    return {p.name: (p.read_bytes(), p.stat().st_uid, p.stat().st_gid) for p in path.iterdir() if p.is_file()}


def _plan(ssh_hosts, old: Path, new: Path) -> str:
    a, b = ssh_hosts.a, ssh_hosts.b
    dump_a, dump_b = a.root / "immich.dump", b.root / "immich.dump"
    return f"""plan "Immich-like Compose project from a to b"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
service old_app on a {{
  compose  = {plan_str(str(old / "docker-compose.yml"))}
  services = ["immich-server"]
  writes   = [old_pg, old_library, old_cache]
}}
service old_db on a {{ compose = {plan_str(str(old / "docker-compose.yml"))}  services = ["database"] }}
postgres old_pg on a {{ container = "immich_postgres"  database = "immich"  user = "postgres" }}
dir old_library on a {{ path = {plan_str(str(old / "library"))} }}
volume old_cache on a {{ docker = "immich_model-cache" }}

service new_db on b {{
  compose   = {plan_str(str(new / "docker-compose.yml"))}
  services  = ["database"]
  initially = stopped
}}
service new_app on b {{
  compose   = {plan_str(str(new / "docker-compose.yml"))}
  services  = ["immich-server"]
  writes    = [new_pg, new_library, new_cache]
  initially = stopped
}}
postgres new_pg on b {{ container = "immich_postgres"  database = "immich"  user = "postgres"  fresh = true }}
dir new_library on b {{ path = {plan_str(str(new / "library"))}  owner = "{APP_UID}:{APP_UID}"  fresh = true }}
volume new_cache on b {{ docker = "immich_model-cache"  fresh = true }}

steps {{
  stop old_app
  dump old_pg to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  sync old_library to new_library
  sync old_cache to new_cache
  start new_db
  restore b:{plan_str(str(dump_b))} into new_pg
  start new_app
}}
"""


def test_a_compose_project_moves_to_another_docker_host_while_it_writes_until_the_stop(docker_hosts, tmp_path):
    ssh_hosts, daemons = docker_hosts
    da, db = daemons["a"], daemons["b"]
    old, new = _project(ssh_hosts.a.root), _project(ssh_hosts.b.root)
    (new / "library").rmdir()  # the plan makes it, owned by the app's uid
    da.compose(old, "up", "-d")
    before = _wait_rows(da, 30)
    plan = tmp_path / "immich.plan"
    plan.write_text(_plan(ssh_hosts, old, new))

    r = mdsl("apply", "--yes", str(plan), timeout=600)
    text = output(r)
    no_traceback(text)
    assert r.returncode == 0, human(text)

    # the app wrote until the stop, then everything it wrote arrived: one row per file, on both sides
    rows = _rows(da)
    assert rows > before
    assert _rows(db) >= rows  # the new app runs and writes on top
    library_a, cache_a = _files(old / "library"), _files(Path(_volume(da, "immich_model-cache")["Mountpoint"]))
    assert len(library_a) == len(cache_a) == rows
    assert {uid for _, uid, _ in library_a.values()} == {APP_UID}
    started = db.docker("logs", "immich_immich-server_1").stdout
    assert f"started: {rows} rows, {rows} library files, {rows} cache files" in started, started
    library_b = _files(new / "library")
    cache_b = _files(Path(_volume(db, "immich_model-cache")["Mountpoint"]))
    assert {k: v for k, v in library_b.items() if k in library_a} == library_a  # content and numeric owners
    assert {k: v for k, v in cache_b.items() if k in cache_a} == cache_a
    labels = _volume(db, "immich_model-cache")["Labels"]
    assert labels["com.docker.compose.project"] == "immich"
    assert labels["com.docker.compose.volume"] == "model-cache"

    # the whole project brought up by hand on b adopts the filled volume: nothing new is created
    up = db.compose(new, "up", "-d")
    assert "Creating volume" not in up.stderr, up.stderr
    assert sorted(db.docker("volume", "ls", "-q").stdout.split()) == ["immich_model-cache", "immich_pgdata"]


def test_the_project_name_hazard_is_refused_before_anything_changes(docker_hosts, tmp_path):
    ssh_hosts, daemons = docker_hosts
    da, db = daemons["a"], daemons["b"]
    old, new = _project(ssh_hosts.a.root), _project(ssh_hosts.b.root, "immich2")
    da.compose(old, "up", "-d")
    _wait_rows(da, 10)
    plan = tmp_path / "immich.plan"
    plan.write_text(_plan(ssh_hosts, old, new))

    checked = mdsl("check", str(plan))
    assert "H308" in output(checked)  # what the plan alone tells: /srv/immich2 makes project immich2

    r = mdsl("apply", "--yes", str(plan), timeout=300)
    text = human(output(r))
    assert r.returncode != 0
    assert "P410" in text and "`immich_model-cache`" in text and "`immich2_model-cache`" in text, text
    # nothing changed: the old app still writes, no volume or container was made on b
    n = _rows(da)
    _wait_rows(da, n + 5)
    assert db.docker("volume", "ls", "-q").stdout.split() == []
    assert db.docker("ps", "-a", "-q").stdout.split() == []


def test_a_containers_volume_moves_through_an_archive_with_numeric_owners(docker_hosts, tmp_path):
    ssh_hosts, daemons = docker_hosts
    da, db = daemons["a"], daemons["b"]
    for d in (da, db):  # the container exists on both hosts (with its volume, empty on b)
        d.docker("create", "--name", "vaultwarden", "--network", "none", "--user", "1000:1000", "--stop-signal",
                 "SIGKILL", "-v", "vw-data:/cache", IMAGE, "sleep", "1000")
    da.docker("start", "vaultwarden")
    da.docker("exec", "vaultwarden", "sh", "-c", "echo secret > /cache/db.sqlite3 && mkdir /cache/attachments && "
              "echo a > /cache/attachments/x")
    archive_a, archive_b = ssh_hosts.a.root / "vw.tar.zst", ssh_hosts.b.root / "vw.tar.zst"
    plan = tmp_path / "vw.plan"
    plan.write_text(f"""plan "vaultwarden"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
service old_vw on a {{ container = "vaultwarden"  writes = [old_data] }}
service new_vw on b {{ container = "vaultwarden"  writes = [new_data]  initially = stopped }}
volume old_data on a {{ docker = "vw-data" }}
volume new_data on b {{ docker = "vw-data"  fresh = true }}
steps {{
  stop old_vw
  archive old_data to a:{plan_str(str(archive_a))}
  transfer a:{plan_str(str(archive_a))} to b:{plan_str(str(archive_b))}
  extract b:{plan_str(str(archive_b))} into new_data
  start new_vw
}}
""")
    r = mdsl("apply", "--yes", str(plan), timeout=300)
    assert r.returncode == 0, human(output(r))
    assert da.docker("inspect", "--format", "{{.State.Running}}", "vaultwarden").stdout.strip() == "false"
    assert db.docker("inspect", "--format", "{{.State.Running}}", "vaultwarden").stdout.strip() == "true"
    out = db.docker("exec", "vaultwarden", "sh", "-c", "cat /cache/db.sqlite3 /cache/attachments/x").stdout
    assert out == "secret\na\n"
    mount_b = Path(_volume(db, "vw-data")["Mountpoint"])
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [mount_b / "db.sqlite3", mount_b / "attachments" / "x"]}
    assert owners == {(1000, 1000)}


def test_preflight_finds_what_docker_lacks_on_each_host_before_anything_changes(docker_hosts, tmp_path):
    """P405 (a container, a project, a listed service that do not exist; a project the plan finds running
    that is not deployed from its file; an image the target project needs), P406 (a database container
    that does not run), P408 (a volume that does not exist): all reported by one preflight, nothing stopped."""
    ssh_hosts, daemons = docker_hosts
    da, db = daemons["a"], daemons["b"]
    old = _project(ssh_hosts.a.root)
    new = _project(ssh_hosts.b.root)
    text = (new / "docker-compose.yml").read_text()
    server = text.index("  immich-server:")
    (new / "docker-compose.yml").write_text(text[:server] + text[server:].replace(IMAGE, "mdsl-e2e/not-here:1", 1))
    da.docker("run", "-d", "--name", "other", "--network", "none", IMAGE, "sleep", "1000")
    plan = tmp_path / "preflight.plan"
    compose_a, compose_b = plan_str(str(old / "docker-compose.yml")), plan_str(str(new / "docker-compose.yml"))
    plan.write_text(f"""plan "what Docker lacks"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
service old_app on a {{ compose = {compose_a}  services = ["immich-server", "worker"]  writes = [old_pg] }}
service old_web on a {{ compose = {compose_a}  services = ["immich-server"] }}
service old_vw on a {{ container = "vaultwarden" }}
service old_other on a {{ compose = {plan_str(str(ssh_hosts.a.root / "srv" / "nothing" / "docker-compose.yml"))} }}
service new_app on b {{ compose = {compose_b}  writes = [new_pg, new_cache]  initially = stopped }}
postgres old_pg on a {{ container = "immich_postgres"  database = "immich"  user = "postgres" }}
postgres new_pg on b {{ container = "immich_postgres"  database = "immich"  user = "postgres"  fresh = true }}
volume old_cache on a {{ docker = "immich_model-cache" }}
volume new_cache on b {{ docker = "immich_model-cache"  fresh = true }}
steps {{
  stop old_app, old_web, old_vw, old_other
  dump old_pg to a:{plan_str(str(ssh_hosts.a.root / "immich.dump"))}
  transfer a:{plan_str(str(ssh_hosts.a.root / "immich.dump"))} to b:{plan_str(str(ssh_hosts.b.root / "immich.dump"))}
  sync old_cache to new_cache
  restore b:{plan_str(str(ssh_hosts.b.root / "immich.dump"))} into new_pg
  start new_app
  start old_vw
}}
""")
    r = mdsl("apply", "--yes", str(plan), timeout=300)
    text = human(output(r))
    no_traceback(text)
    assert r.returncode != 0
    assert "has no service `worker`" in text, text
    assert "container `vaultwarden` of service `old_vw` does not exist on `a`" in text, text
    assert "nothing/docker-compose.yml` of service `old_other` cannot be read on `a`" in text, text
    # the project file is there, but nothing was deployed from it: stopping it would stop nothing
    assert "the Compose project `immich` of" in text, text
    assert "has no container on `a`, but the plan finds `old_web` running there" in text, text
    assert "image `mdsl-e2e/not-here:1`" in text and "is not on `b`" in text, text
    assert "container `immich_postgres` does not exist on `a`" in text, text  # P406
    assert "docker volume `immich_model-cache` (old_cache) does not exist on `a`" in text, text  # P408
    for code in ("P405", "P406", "P408"):
        assert code in text
    # nothing changed: the other container runs on, nothing was made on b
    assert da.docker("inspect", "--format", "{{.State.Running}}", "other").stdout.strip() == "true"
    assert db.docker("volume", "ls", "-q").stdout.split() == []
    assert db.docker("ps", "-a", "-q").stdout.split() == []


def test_preflight_says_when_docker_does_not_answer_on_a_host(docker_hosts, tmp_path):
    """P409 on the far end of a sync: b runs no command of its own (rsync reaches it from a), but the
    volume it fills is Docker's, so preflight asks Docker there before anything changes."""
    ssh_hosts, daemons = docker_hosts
    plan = tmp_path / "p409.plan"
    plan.write_text(f"""plan "Docker down on b"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
volume old_data on a {{ docker = "vw-data" }}
volume new_data on b {{ docker = "vw-data"  fresh = true }}
steps {{
  sync old_data to new_data
}}
""")
    daemons["a"].docker("volume", "create", "vw-data")
    daemons["b"].stop()  # dockerd down: the socket DOCKER_HOST names answers no more
    try:
        r = mdsl("apply", "--yes", str(plan), timeout=300)
    finally:
        daemons["b"].start()
    text = human(output(r))
    no_traceback(text)
    assert r.returncode != 0
    assert "P409" in text and "Docker does not answer on `b` (as the login user)" in text, text
    assert "Docker does not answer on `a`" not in text
    assert daemons["a"].docker("volume", "ls", "-q").stdout.split() == ["vw-data"]


MARIADB_IMAGE = "mdsl-e2e/mariadb:1"
MYSQL_UID = 102  # the datadir's owner: Debian's mysql user, as mariadb-install-db made it


def _mariadb_container(d: Dockerd, image_root: Path, datadir: Path, name: str = "nextcloud-db") -> None:
    """MariaDB in a container: this machine's mariadbd on a datadir made on the host, socket only."""
    d.import_image(image_root, MARIADB_IMAGE)
    d.docker("run", "-d", "--name", name, "--network", "none", "--user", f"{MYSQL_UID}:{MYSQL_UID}",
             "--stop-signal", "SIGTERM", "-v", f"{datadir}:/var/lib/mysql", MARIADB_IMAGE,
             "/usr/sbin/mariadbd", "--no-defaults", "--datadir=/var/lib/mysql", "--skip-networking",
             "--socket=/run/mysqld/mysqld.sock", "--pid-file=/run/mysqld/mysqld.pid", "--skip-log-bin",
             "--character-set-server=utf8mb4", "--innodb-log-file-size=16M", "--innodb-buffer-pool-size=64M")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if d.docker("exec", name, "sh", "-c", "[ -S /run/mysqld/mysqld.sock ]", check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(d.docker("logs", name, check=False).stderr[-2000:])


def _in_mariadb(d: Dockerd, sql: str, password: str, name: str = "nextcloud-db") -> str:
    return d.docker("exec", "-e", f"MYSQL_PWD={password}", name, "mariadb", "--batch", "--skip-column-names",
                    "-u", "nc", "-e", sql).stdout.strip()


def test_a_mysql_database_in_a_container_moves_with_the_clients_inside_it(docker_hosts, tmp_path, e2e_base):
    """`container =` on a mysql store: mariadb-dump and the client run inside each host's MariaDB container
    (`docker exec`, the password as MYSQL_PWD from a 0600 env file), no client on the hosts' PATH needed."""
    from dbservers import MariaDbServer  # noqa: PLC0415 (MariaDB is only this test's)
    from dockerd import copy_programs  # noqa: PLC0415

    ssh_hosts, daemons = docker_hosts
    password = "s3cr;et 'pw"
    root = tmp_path / "mariadb-image"
    copy_programs(root, ["/usr/sbin/mariadbd", "/usr/bin/mariadb", "/usr/bin/mariadb-dump", "/bin/sh", "/bin/cat"])
    shutil.copytree("/usr/share/mysql", root / "usr/share/mysql", dirs_exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nmysql:x:{MYSQL_UID}:{MYSQL_UID}::/:/bin/sh\n")
    (root / "etc/group").write_text(f"root:x:0:\nmysql:x:{MYSQL_UID}:\n")
    for sub in ("run/mysqld", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(root / sub, MYSQL_UID, MYSQL_UID)
    servers = []
    try:
        for side in ("a", "b"):  # system tables and the app's user made on the host, then served from a container
            s = MariaDbServer(e2e_base / f"maria-{tmp_path.name}", side).install().start()
            servers.append(s)
            s.sql("CREATE DATABASE nc; " if side == "a" else "SELECT 1;")
            s.sql(f"CREATE USER 'nc'@'localhost' IDENTIFIED BY '{password.replace(chr(39), chr(39) * 2)}'; "
                  "GRANT ALL PRIVILEGES ON nc.* TO 'nc'@'localhost';")
            if side == "a":
                s.sql("CREATE TABLE oc_filecache (fileid BIGINT PRIMARY KEY, path VARCHAR(200), KEY p (path)); "
                      "INSERT INTO oc_filecache SELECT seq, CONCAT('files/', seq, ' ☕') FROM seq_1_to_5000;", db="nc")
            s.stop()
        for side, s in zip(("a", "b"), servers, strict=True):
            _mariadb_container(daemons[side], root, s.datadir)
        dump_a, dump_b = ssh_hosts.a.root / "nc.sql.zst", ssh_hosts.b.root / "nc.sql.zst"
        plan = tmp_path / "mysql.plan"
        decl = 'container = "nextcloud-db"  database = "nc"  user = "nc"  password = env("NC_DB_PW")'
        plan.write_text(f"""plan "MariaDB in a container, from a to b"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
mysql old_db on a {{ {decl} }}
mysql new_db on b {{ {decl}  fresh = true }}
steps {{
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  restore b:{plan_str(str(dump_b))} into new_db
}}
""")
        r = mdsl("apply", "--yes", str(plan), timeout=300, env={**os.environ, "NC_DB_PW": password})
        text = output(r)
        no_traceback(text)
        assert r.returncode == 0, human(text)
        assert password not in text
        query = "SELECT COUNT(*), SUM(CRC32(path)) FROM nc.oc_filecache"
        assert _in_mariadb(daemons["b"], query, password) == _in_mariadb(daemons["a"], query, password)
        assert _in_mariadb(daemons["b"], "SELECT COUNT(*) FROM nc.oc_filecache", password) == "5000"
    finally:
        for side in ("a", "b"):
            daemons[side].remove_all()
        for s in servers:
            s.stop()


def test_preflight_refuses_a_dump_inside_a_container_the_plan_stops_first(docker_hosts, tmp_path):
    """P414: the whole project (its `database` service included) is stopped before the dump that runs
    inside `immich_postgres`: Docker's labels tell which service runs the container, nothing is stopped."""
    ssh_hosts, daemons = docker_hosts
    da = daemons["a"]
    old = _project(ssh_hosts.a.root)
    da.compose(old, "up", "-d")
    _wait_rows(da, 5)
    dump = plan_str(str(ssh_hosts.a.root / "immich.dump"))
    plan = tmp_path / "p414.plan"
    plan.write_text(f"""plan "the whole stack stopped before the dump"
{ssh_hosts.plan_host_decl("a")}
service old_stack on a {{ compose = {plan_str(str(old / "docker-compose.yml"))}  writes = [old_pg] }}
postgres old_pg on a {{ container = "immich_postgres"  database = "immich"  user = "postgres" }}
steps {{
  stop old_stack
  dump old_pg to a:{dump}
  start old_stack
}}
""")
    r = mdsl("apply", "--yes", str(plan), timeout=300)
    text = human(output(r))
    no_traceback(text)
    assert r.returncode != 0
    assert "P414" in text and "container `immich_postgres`, the Compose service `database` of project `immich`" \
        in text and "`stop old_stack` stops before it" in text, text
    n = _rows(da)  # nothing stopped: the app still writes
    _wait_rows(da, n + 3)
