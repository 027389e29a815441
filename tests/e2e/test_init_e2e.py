"""`mdsl init` against real installs on two sshd test hosts that each have their own /home,
/var (tmp, lib, www), /etc/systemd/system, /etc/gitea, /run/postgresql, users and `systemctl`:
each host's sshd runs in its own mount namespace (`unshare --mount`), so both hold
/home/mastodon/live as real machines do. (A minimal version of the namespaced hosts, kept in
this module until tests/e2e/namespaces.py lands.)

Each app is installed on a as its guide lays it out, with a live writer standing in for the app
(the hosts' `systemctl` starts and stops it): Mastodon from source (the mastodon user,
/home/mastodon/live/.env.production with its DB_ and secret keys, public/system with cache/, the
units, a PostgreSQL database with Mastodon-like tables), Gitea from the release binary (app.ini,
SQLite and the repositories inside the data dir), Nextcloud from the release archive (config.php,
PostgreSQL, Apache). `mdsl init` writes each plan, the plan checks clean, `mdsl apply` moves the
app to b while it writes, and b ends equal to a, secrets included. Hand-edited plans are caught
(A101, A102, A104); a host running nothing known gets exit 1 and a list of what it runs.
"""

from __future__ import annotations

import http.server
import os
import pwd
import shlex
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from hosts import REGISTRY, FileTree, PgCluster, SshCluster, SshHost, Writer, _run, free_port, make_base_dir
from reliability_helpers import mdsl, no_traceback, output
from test_migration import populate_public_system, tree_content, wait_until

pytestmark = pytest.mark.e2e

ADDRESSES = ("127.0.15.2", "127.0.15.3")  # this module's own: its health server takes port 443 on b
APP_UID = 9915  # `mastodon` (and `git`) exist only inside the test hosts' /etc/passwd
DOMAIN = "m.init.test"
PASSWORD = "db-pass-" + os.urandom(6).hex()
BINDS = ("/home", "/var/tmp", "/var/lib/gitea", "/var/www", "/etc/gitea", "/etc/systemd/system", "/usr/local/bin",
         "/run/postgresql")
HEALTH = {("m.init.test", "/health"), ("git.init.test", "/api/healthz"), ("cloud.init.test", "/status.php")}  # what b's web server answers
MADE_MOUNT_POINTS = []  # mount points this module created on the control machine (removed at the end)

SYSTEMCTL = """#!/bin/sh
# systemctl on a test host: every unit of the app is the writer service (tests/e2e/writer.py)
verb=$1; shift
while [ "${1#-}" != "$1" ]; do shift; done
case "$verb" in
  start) %(start)s ;;
  stop) %(stop)s ;;
  restart) %(stop)s && %(start)s ;;
  is-active) %(status)s >/dev/null 2>&1 ;;
  cat) for u; do [ -e "/etc/systemd/system/$u" ] || [ -e "/etc/systemd/system/$u.service" ] || exit 1; done ;;
  *) exit 0 ;;
esac
"""


class NsHost(SshHost):
    """An SshHost whose sshd runs in its own mount namespace, with its own dirs over BINDS."""

    fs: Path
    pgsock: Path

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.address)
        self._write_config()
        mounts = [f"mount --bind {shlex.quote(str(self.fs / p.strip('/').replace('/', '-')))} {p}" for p in BINDS
                  if p != "/run/postgresql"]
        mounts.append(f"mount --bind {shlex.quote(str(self.pgsock))} /run/postgresql")
        for f in ("passwd", "group"):
            mounts.append(f"mount --bind {shlex.quote(str(self.fs / f))} /etc/{f}")
        mounts.append(f"mount --bind {shlex.quote(str(self.fs / 'systemctl'))} /usr/bin/systemctl")
        sshd = ["/usr/sbin/sshd", "-D", "-f", str(self.config_path), "-E", str(self.log_path)]
        script = " && ".join(mounts) + f" && exec {shlex.join(sshd)}"
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        ref = REGISTRY.record(proc.pid, f"sshd {self.name} {self.address} (own mounts)")
        from hosts import wait_for_tcp

        if not wait_for_tcp(self.address, self.port, timeout, proc):
            ref.stop(timeout=2.0)
            raise RuntimeError(f"namespaced sshd for {self.address} did not start: {proc.stderr.read()!r}")
        self._proc, self._ref = proc, ref


def _make_fs(h: NsHost, writer: Writer) -> None:
    """The host's own dirs, users (mastodon, git) and systemctl (driving `writer`)."""
    for p in BINDS:
        d = h.fs / p.strip("/").replace("/", "-")
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    (h.fs / "var-tmp").chmod(0o1777)
    for f, extra in (("passwd", f"mastodon:x:{APP_UID}:{APP_UID}::/home/mastodon:/bin/sh\n"
                                f"git:x:{APP_UID + 1}:{APP_UID + 1}::/home/git:/bin/sh\n"),
                     ("group", f"mastodon:x:{APP_UID}:\ngit:x:{APP_UID + 1}:\n")):
        (h.fs / f).write_text(Path(f"/etc/{f}").read_text() + extra)
        (h.fs / f).chmod(0o644)
    _make_fs_systemctl(h, writer)


def _make_fs_systemctl(h: NsHost, writer: Writer) -> None:
    """The host's `systemctl`: every unit is `writer` (rewritten in place: the bind mount keeps the file)."""
    (h.fs / "systemctl").write_text(SYSTEMCTL % {"start": writer.start_cmd, "stop": writer.stop_cmd,
                                                 "status": writer.status_cmd})
    (h.fs / "systemctl").chmod(0o755)


@pytest.fixture(scope="module")
def mount_points():
    for p in BINDS:
        if not os.path.exists(p):
            os.makedirs(p)
            MADE_MOUNT_POINTS.append(p)
    try:
        yield
    finally:
        for p in reversed(MADE_MOUNT_POINTS):
            try:
                os.rmdir(p)
            except OSError:
                pass


@pytest.fixture(scope="module")
def pg_template():
    """A stopped cluster holding role `mastodon` and its empty `mastodon_production`: each test's two
    clusters are copies of it (cp -a of a stopped data dir costs a fraction of initdb)."""
    base = make_base_dir("mdsl-init-e2e-template-")
    template = PgCluster(base, "template")
    try:
        template.initdb().start()
        template.psql(f"create role mastodon login createdb password '{PASSWORD}'")
        template.psql("create database mastodon_production owner mastodon")
        template.compact()
        template.stop()
        yield template
    finally:
        template.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def world(mount_points, pg_template):
    """Two namespaced hosts, a PostgreSQL cluster for each (same port, own address, own socket dir
    at /run/postgresql), and a writer per host (not started)."""
    base = make_base_dir("mdsl-init-e2e-")
    cluster = SshCluster(base, ADDRESSES)
    pgs, writers = [], []
    try:
        port = free_port(ADDRESSES[0])
        for h in cluster.hosts:
            pg = pg_template.clone(base, f"pg-{h.name}", listen=h.address)
            pgs.append(pg)
            pg.port = port
            pg.start()
            h.__class__ = NsHost
            h.fs, h.pgsock = base / "fs" / h.name, pg.sockdir
            files = h.fs / "home" / "mastodon" / "live" / "public" / "system" if h.name == "a" \
                else base / "new-app-state"
            w = Writer(base / f"run-{h.name}", pg.dsn("mastodon_production", "mastodon"), files,
                       table="writer_events" if h.name == "a" else "new_app_events", rate=20, name=f"writer-{h.name}")
            writers.append(w)
            _make_fs(h, w)
        cluster.start()
        yield cluster, pgs, writers
    finally:
        for w in writers:
            w.close()
        cluster.stop()
        for pg in pgs:
            pg.stop(immediate=True)  # thrown away with base
        shutil.rmtree(base, ignore_errors=True)


def _init(cluster: SshCluster, out: Path, *more: str) -> subprocess.CompletedProcess:
    a, b = cluster.a, cluster.b
    return mdsl("init", "--from", f"ssh://root@{a.address}:{a.port}", "--to", f"ssh://root@{b.address}:{b.port}",
                "--identity", str(cluster.client_key), "--known-hosts", str(cluster.known_hosts), "-o", str(out), *more)


def _init_plan(cluster: SshCluster, out: Path) -> str:
    """`mdsl init` from a to b, which must succeed: the plan it wrote."""
    r = _init(cluster, out)
    assert r.returncode == 0, output(r)
    return out.read_text()


def _assert_checks_clean(plan: Path) -> None:
    chk = mdsl("check", str(plan))
    assert chk.returncode == 0 and chk.stdout.strip() == "no findings", output(chk)


def _apply(plan: Path, env: dict, old, new) -> str:
    """`mdsl apply --yes` of a written plan, which must succeed, the writers on both hosts tracked: what it said."""
    r = mdsl("apply", "--yes", str(plan), env=env, timeout=600)
    old.track()
    new.track()
    assert r.returncode == 0, output(r)
    no_traceback(output(r))
    return output(r)


def _unit(fs: Path, name: str, text: str = "") -> None:
    (fs / "etc-systemd-system" / name).write_text(f"[Unit]\nDescription={name}\n[Service]\n{text}\n")


def _install_mastodon(cluster, pgs) -> Path:
    a, b = cluster.a, cluster.b
    live = a.fs / "home" / "mastodon" / "live"
    populate_public_system(live / "public" / "system")
    env = live / ".env.production"
    env.write_text(
        f"LOCAL_DOMAIN={DOMAIN}\nREDIS_HOST=localhost\nDB_HOST=/var/run/postgresql\nDB_USER=mastodon\n"
        f"DB_NAME=mastodon_production\nDB_PASS={PASSWORD}\nDB_PORT={pgs[0].port}\n"
        + "".join(f"{k}={os.urandom(32).hex()}\n" for k in (
            "SECRET_KEY_BASE", "OTP_SECRET", "VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY",
            "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY", "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT",
            "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY")))
    env.chmod(0o600)
    _run(["chown", "-R", f"{APP_UID}:{APP_UID}", str(a.fs / "home" / "mastodon")])
    pgs[0].psql("create table accounts (id bigint primary key, username text not null);"
                "create table statuses (id bigint primary key, account_id bigint references accounts, text text);"
                "insert into accounts select i, 'user' || i from generate_series(1, 200) i;"
                "insert into statuses select i, 1 + i % 200, md5(i::text) from generate_series(1, 5000) i;"
                "alter table accounts owner to mastodon; alter table statuses owner to mastodon;",
                db="mastodon_production")
    for fs in (a.fs, b.fs):  # Mastodon's units on both: installed, per the guide, on b too (stopped)
        for unit in ("mastodon-web.service", "mastodon-sidekiq.service", "mastodon-streaming.service"):
            _unit(fs, unit, "User=mastodon\nWorkingDirectory=/home/mastodon/live\n")
    tootctl = b.fs / "home" / "mastodon" / "live" / "bin" / "tootctl"
    tootctl.parent.mkdir(parents=True)
    (tootctl.parent.parent / "public").mkdir()  # the checkout on b has public/, not its uploads
    record = b.fs / "var-tmp" / "tootctl.calls"
    tootctl.write_text(f'#!/bin/sh\necho "$(id -un) $*" >> {record}\n')
    tootctl.chmod(0o755)
    _run(["chown", "-R", f"{APP_UID}:{APP_UID}", str(b.fs / "home" / "mastodon")])
    return record


class _Health(http.server.BaseHTTPRequestHandler):
    writer: Writer

    def do_GET(self):  # noqa: N802 - http.server's name
        up = (self.headers.get("Host"), self.path) in HEALTH and self.writer.running
        self.send_response(200 if up else 503)
        self.end_headers()
        self.wfile.write(b"OK" if up else b"down")

    def log_message(self, *args):
        pass


@pytest.fixture
def health(world, tmp_path):
    """https://m.init.test/health and https://git.init.test/api/healthz on b's address (port 443, a
    certificate the apply trusts through SSL_CERT_FILE): 200 while b's app (writer) runs."""
    cluster, _, writers = world
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
          "-days", "1", "-subj", f"/CN={DOMAIN}",
          "-addext", "subjectAltName=" + ",".join(sorted(f"DNS:{h}" for h, _ in HEALTH))])
    handler = type("Health", (_Health,), {"writer": writers[1]})
    server = http.server.ThreadingHTTPServer((cluster.b.address, 443), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield cert
    finally:
        server.shutdown()
        server.server_close()


def test_mastodon_source_install_init_then_apply_with_a_live_writer(world, health, tmp_path):
    cluster, pgs, (old, new) = world
    a, b = cluster.a, cluster.b
    record = _install_mastodon(cluster, pgs)
    old.start()
    wait_until(lambda: len(old.files()) >= 10, what="the app on a wrote files")
    plan = tmp_path / "mastodon.plan"

    r = _init(cluster, plan, "--presync-above", "0")
    assert r.returncode == 0, output(r)
    text = plan.read_text()
    assert PASSWORD not in text and PASSWORD not in output(r)
    for line in (a.fs / "home/mastodon/live/.env.production").read_text().splitlines():
        key, value = line.split("=", 1)
        if key.endswith(("_KEY", "_SECRET", "_SALT", "_BASE", "_PASS")):
            assert value not in text, key
    assert 'app     = "mastodon"' in text and 'layout  = "source"' in text
    assert 'env("MASTODON_DB_PASSWORD")' in text
    assert 'path  = "/home/mastodon/live/public/system"' in text and 'owner = "mastodon:mastodon"' in text
    assert "presync_system: sync old_system to new_system live" in text
    assert f'verify http "https://{DOMAIN}/health" via = new' in text
    assert text.index("transfer old_env to new_env") < text.index("cutover: start new_app")
    _assert_checks_clean(plan)
    assert mdsl("fmt", "--check", str(plan)).returncode == 0

    # The hand-edited plan without the secrets copy: A101.
    bad = tmp_path / "bad.plan"
    bad.write_text(text.replace("  transfer old_env to new_env\n", ""))
    chk = mdsl("check", str(bad))
    assert chk.returncode == 1 and "error[A101]" in chk.stdout and "SECRET_KEY_BASE" in chk.stdout, output(chk)

    env = {**os.environ, "MASTODON_DB_PASSWORD": PASSWORD, "SSL_CERT_FILE": str(health)}
    said = _apply(plan, env, old, new)
    assert PASSWORD not in said

    assert old.status() == 3 and new.status() == 0  # stopped on a, running on b
    src = pgs[0].table_checksum("mastodon_production")
    dst = pgs[1].table_checksum("mastodon_production")
    assert src["writer_events"].rows == len(old.files()) > 0  # every write, up to the stop
    assert {k: v for k, v in dst.items() if k != "new_app_events"} == src
    before = FileTree.snapshot(a.fs / "home/mastodon/live/public/system")
    after = FileTree.snapshot(b.fs / "home/mastodon/live/public/system")
    assert any(k.startswith("cache/") for k in before)
    assert FileTree.diff(tree_content(before), tree_content(after)) == {"only_a": [], "only_b": [], "changed": []}
    env_a, env_b = a.fs / "home/mastodon/live/.env.production", b.fs / "home/mastodon/live/.env.production"
    assert env_b.read_bytes() == env_a.read_bytes()
    st = env_b.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (APP_UID, APP_UID, 0o600)
    assert record.read_text().splitlines() == ["mastodon feeds build"]


def test_gitea_and_nextcloud_installs_get_plans_that_check_clean(world, tmp_path):
    cluster, pgs, _ = world
    a, b = cluster.a, cluster.b
    # Gitea from the release binary, on SQLite, per "Installation from binary"
    data = a.fs / "var-lib-gitea" / "data"
    repos = data / "gitea-repositories"  # the default: inside the data dir
    (repos / "alice" / "notes.git" / "objects").mkdir(parents=True)
    (repos / "alice" / "notes.git" / "HEAD").write_text("ref: refs/heads/main\n")
    (data / "attachments").mkdir(parents=True)
    (data / "gitea.db").write_bytes(b"SQLite format 3\x00" + os.urandom(4080))
    (a.fs / "etc-gitea" / "app.ini").write_text(
        "APP_NAME = Gitea\nRUN_USER = git\nWORK_PATH = /var/lib/gitea\n\n[database]\nDB_TYPE = sqlite3\n"
        "PATH = /var/lib/gitea/data/gitea.db\n\n[repository]\nROOT = /var/lib/gitea/data/gitea-repositories\n\n"
        "[server]\nROOT_URL = https://git.init.test/\nAPP_DATA_PATH = /var/lib/gitea/data\n\n[security]\n"
        f"INSTALL_LOCK = true\nSECRET_KEY = {os.urandom(20).hex()}\nINTERNAL_TOKEN = {os.urandom(20).hex()}\n")
    (a.fs / "etc-gitea" / "app.ini").chmod(0o640)
    _unit(a.fs, "gitea.service", "User=git\nExecStart=/usr/local/bin/gitea web --config /etc/gitea/app.ini")
    _run(["chown", "-R", f"{APP_UID + 1}:{APP_UID + 1}", str(a.fs / "var-lib-gitea")])
    plan = tmp_path / "gitea.plan"
    text = _init_plan(cluster, plan)
    assert 'app     = "gitea"' in text and 'systemd = ["gitea"]' in text
    # the repositories and the SQLite file inside the data dir travel with it while Gitea is stopped
    assert "gitea-repositories (repositories): copied with it" in text and "sqlite old_db" not in text
    assert "admin regenerate hooks" in text
    assert 'verify http "https://git.init.test/api/healthz"' in text
    _assert_checks_clean(plan)
    bad = tmp_path / "gitea-bad.plan"
    bad.write_text("\n".join(x for x in text.splitlines() if "regenerate hooks" not in x) + "\n")
    chk = mdsl("check", str(bad))
    assert chk.returncode == 1 and "warning[A104]" in chk.stdout, output(chk)

    # Nextcloud from the release archive, on PostgreSQL, served by Apache; Gitea still on a too
    nc = a.fs / "var-www" / "nextcloud"
    (nc / "config").mkdir(parents=True)
    (nc / "data" / "alice" / "files").mkdir(parents=True)
    (nc / "data" / "alice" / "files" / "report.odt").write_bytes(os.urandom(3000))
    (nc / "occ").write_text("<?php\n")
    (nc / "config" / "config.php").write_text(
        "<?php\n$CONFIG = array (\n  'instanceid' => 'oc8x1y2z3',\n  'passwordsalt' => 'salt-value',\n"
        f"  'secret' => 'secret-value',\n  'trusted_domains' => array (0 => 'cloud.init.test'),\n"
        "  'datadirectory' => '/var/www/nextcloud/data',\n  'dbtype' => 'pgsql',\n  'dbname' => 'nextcloud',\n"
        f"  'dbhost' => '/var/run/postgresql:{pgs[0].port}',\n  'dbuser' => 'oc_admin',\n"
        "  'dbpassword' => 'pw-nc',\n  'overwrite.cli.url' => 'https://cloud.init.test',\n"
        "  'installed' => true,\n);\n")
    _unit(a.fs, "apache2.service")
    _unit(b.fs, "apache2.service")
    before = {h.name: FileTree.snapshot(h.fs) for h in (a, b)}
    # two apps and one output: asks which (or -o for one plan per app)
    r = mdsl("init", "--from", f"ssh://root@{a.address}:{a.port}", "--to", f"ssh://root@{b.address}:{b.port}",
             "--identity", str(cluster.client_key), "--known-hosts", str(cluster.known_hosts))
    assert r.returncode == 2 and "gitea, nextcloud" in r.stderr and "--app NAME" in r.stderr, output(r)
    r = _init(cluster, tmp_path / "both.plan")
    assert r.returncode == 0, output(r)
    assert {h.name: FileTree.snapshot(h.fs) for h in (a, b)} == before  # init changed nothing on either host
    assert "both-gitea.plan" in r.stderr and "both-nextcloud.plan" in r.stderr
    text = (tmp_path / "both-nextcloud.plan").read_text()
    assert 'database = "nextcloud"' in text and 'env("NEXTCLOUD_DB_PASSWORD")' in text
    assert 'path  = "/var/www/nextcloud/data"' in text and "maintenance:mode --on" in text
    assert "secret-value" not in text and "pw-nc" not in text
    chk = mdsl("check", str(tmp_path / "both-nextcloud.plan"), str(tmp_path / "both-gitea.plan"))
    assert chk.returncode == 0 and "no findings" in chk.stdout, output(chk)
    # The hand-edited plan that puts the data on a bigger disk at another path: A102.
    moved = tmp_path / "nextcloud-moved.plan"
    new_data = text.index("dir new_data on new")
    moved.write_text(text[:new_data] + text[new_data:].replace('"/var/www/nextcloud/data"', '"/srv/nextcloud-data"', 1))
    chk = mdsl("check", str(moved))
    assert chk.returncode == 1 and "error[A102]" in chk.stdout and "datadirectory" in output(chk), output(chk)


def test_a_host_running_nothing_known_says_what_it_saw(world, tmp_path):
    cluster, _, _ = world
    _unit(cluster.a.fs, "myapp.service")
    r = _init(cluster, tmp_path / "x.plan")
    assert r.returncode == 1, output(r)
    assert "found no app it knows" in r.stderr and "myapp.service" in r.stderr
    assert f"{cluster.a.address}:{cluster.a.port}" in r.stderr  # its sshd listens
    assert not (tmp_path / "x.plan").exists()
    no_traceback(output(r))


def test_init_checks_host_keys_as_apply_does(world, tmp_path):
    cluster, _, _ = world
    a, b = cluster.a, cluster.b
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    r = mdsl("init", "--from", f"ssh://root@{a.address}:{a.port}", "--to", f"ssh://root@{b.address}:{b.port}",
             "--identity", str(cluster.client_key), "--known-hosts", str(empty), "-o", str(tmp_path / "x.plan"))
    assert r.returncode == 2 and "host key" in r.stderr.lower(), output(r)
    assert empty.read_text() == "" and not (tmp_path / "x.plan").exists()
    no_traceback(output(r))
    r = mdsl("init", "--from", "root@old", "--to", f"ssh://root@{b.address}:{b.port}")
    assert r.returncode == 2 and "is not ssh://USER@HOST[:PORT]" in r.stderr, output(r)


def test_gitea_binary_install_init_then_apply_with_a_live_writer(world, health, tmp_path):
    cluster, pgs, (_, new) = world
    a, b = cluster.a, cluster.b
    data = a.fs / "var-lib-gitea" / "data"  # the install guide's layout: repositories and gitea.db inside
    repo = data / "gitea-repositories" / "alice" / "notes.git"
    (repo / "objects" / "ab").mkdir(parents=True)
    (repo / "objects" / "ab" / "cdef01").write_bytes(os.urandom(2000))
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "hooks").mkdir()
    (repo / "hooks" / "pre-receive").write_text("#!/bin/sh\n/usr/local/bin/gitea hook --config=/etc/gitea/app.ini\n")
    (data / "attachments" / "1" / "2").mkdir(parents=True)
    (data / "attachments" / "1" / "2" / "12abc").write_bytes(os.urandom(5000))
    (data / "gitea.db").write_bytes(b"SQLite format 3\x00" + os.urandom(8176))
    ini = a.fs / "etc-gitea" / "app.ini"
    key = os.urandom(20).hex()
    ini.write_text("RUN_USER = git\nWORK_PATH = /var/lib/gitea\n[database]\nDB_TYPE = sqlite3\n"
                   "PATH = /var/lib/gitea/data/gitea.db\n[server]\nROOT_URL = https://git.init.test/\n"
                   f"APP_DATA_PATH = /var/lib/gitea/data\n[security]\nSECRET_KEY = {key}\n"
                   f"INTERNAL_TOKEN = {os.urandom(20).hex()}\n")
    os.chown(ini, 0, APP_UID + 1)
    ini.chmod(0o640)
    _run(["chown", "-R", f"{APP_UID + 1}:{APP_UID + 1}", str(a.fs / "var-lib-gitea")])
    # the app on a: the writer keeps writing into the repositories until `systemctl stop gitea`
    old = Writer(a.fs.parent.parent / "run-gitea", pgs[0].dsn("mastodon_production", "mastodon"),
                 data / "gitea-repositories" / "bob" / "live.git", rate=20, name="gitea-writer")
    try:
        _make_fs_systemctl(a, old)
        for fs in (a.fs, b.fs):
            _unit(fs, "gitea.service", "User=git\nExecStart=/usr/local/bin/gitea web --config /etc/gitea/app.ini")
        (b.fs / "var-lib-gitea" / "data").mkdir()  # what installing Gitea on b made
        record = b.fs / "var-tmp" / "gitea.calls"
        stand_in = b.fs / "usr-local-bin" / "gitea"
        stand_in.write_text(f'#!/bin/sh\necho "$(id -un) $*" >> {record}\n')
        stand_in.chmod(0o755)
        old.start()
        wait_until(lambda: len(old.files()) >= 10, what="Gitea on a wrote files")

        plan = tmp_path / "gitea.plan"
        text = _init_plan(cluster, plan)
        assert key not in text and 'systemd = ["gitea"]' in text
        _assert_checks_clean(plan)

        said = _apply(plan, {**os.environ, "SSL_CERT_FILE": str(health)}, old, new)
        assert key not in said
        assert old.status() == 3 and new.status() == 0
        assert len(old.files()) > 10
        there = b.fs / "var-lib-gitea" / "data"
        diff = FileTree.diff(tree_content(FileTree.snapshot(data)), tree_content(FileTree.snapshot(there)))
        assert diff == {"only_a": [], "only_b": [], "changed": []}
        assert {v[2:] for v in FileTree.snapshot(there).values()} == {(APP_UID + 1, APP_UID + 1)}
        ini_b = b.fs / "etc-gitea" / "app.ini"
        st = ini_b.stat()
        assert ini_b.read_bytes() == ini.read_bytes() and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
            (0, APP_UID + 1, 0o640)
        assert record.read_text().splitlines() == ["git admin regenerate hooks --config /etc/gitea/app.ini"]
    finally:
        old.close()


def test_nextcloud_archive_install_on_postgresql_init_then_apply_with_a_live_writer(world, health, tmp_path):
    cluster, pgs, (_, new) = world
    a, b = cluster.a, cluster.b
    nc_pw = "nc-" + os.urandom(6).hex()
    pgs[0].psql(f"create role oc_admin login password '{nc_pw}'; create database nextcloud owner oc_admin")
    pgs[0].psql("create table oc_filecache (fileid bigint primary key, path text not null);"
                "insert into oc_filecache select i, 'files/f' || i from generate_series(1, 3000) i;"
                "alter table oc_filecache owner to oc_admin;", db="nextcloud")
    pgs[1].psql(f"create role oc_admin login createdb password '{nc_pw}'; create database nextcloud owner oc_admin")
    www = pwd.getpwnam("www-data").pw_uid  # Debian's, in both hosts' /etc/passwd
    for fs in (a.fs, b.fs):  # the release archive on both (b: installed, not configured, stopped)
        nc = fs / "var-www" / "nextcloud"
        (nc / "config").mkdir(parents=True)
        (nc / "data").mkdir()
        (nc / "occ").write_text("<?php\n")
        _unit(fs, "apache2.service")
        php = fs / "usr-local-bin" / "php"
        php.write_text('#!/bin/sh\necho "$(id -un) $*" >> /var/tmp/php.calls\n')
        php.chmod(0o755)
    data = a.fs / "var-www" / "nextcloud" / "data"
    (data / "alice" / "files").mkdir(parents=True)
    (data / "alice" / "files" / "report.odt").write_bytes(os.urandom(30000))
    (data / "appdata_oc8x1y2z3" / "preview").mkdir(parents=True)
    secret = os.urandom(24).hex()
    config = a.fs / "var-www" / "nextcloud" / "config" / "config.php"
    config.write_text(
        "<?php\n$CONFIG = array (\n  'instanceid' => 'oc8x1y2z3',\n  'passwordsalt' => 'salt-" + secret[:8] + "',\n"
        f"  'secret' => '{secret}',\n  'trusted_domains' => array (0 => 'cloud.init.test'),\n"
        "  'datadirectory' => '/var/www/nextcloud/data',\n  'dbtype' => 'pgsql',\n  'dbname' => 'nextcloud',\n"
        f"  'dbhost' => '/var/run/postgresql:{pgs[0].port}',\n  'dbuser' => 'oc_admin',\n"
        f"  'dbpassword' => '{nc_pw}',\n  'overwrite.cli.url' => 'https://cloud.init.test',\n);\n")
    config.chmod(0o640)
    for fs in (a.fs, b.fs):
        _run(["chown", "-R", f"{www}:{www}", str(fs / "var-www" / "nextcloud")])
    old = Writer(a.fs.parent.parent / "run-nc", pgs[0].dsn("nextcloud", "oc_admin"), data / "alice" / "files" / "live",
                 rate=20, name="nextcloud-writer")
    try:
        _make_fs_systemctl(a, old)
        old.start()
        wait_until(lambda: len(old.files()) >= 10, what="Nextcloud on a wrote files")
        plan = tmp_path / "nextcloud.plan"
        text = _init_plan(cluster, plan)
        assert secret not in text and nc_pw not in text
        _assert_checks_clean(plan)

        env = {**os.environ, "NEXTCLOUD_DB_PASSWORD": nc_pw, "SSL_CERT_FILE": str(health)}
        said = _apply(plan, env, old, new)
        assert secret not in said and nc_pw not in said
        assert old.status() == 3 and new.status() == 0
        src, dst = pgs[0].table_checksum("nextcloud"), pgs[1].table_checksum("nextcloud")
        assert src["writer_events"].rows == len(old.files()) > 0
        assert {k: v for k, v in dst.items() if k != "new_app_events"} == src
        there = b.fs / "var-www" / "nextcloud" / "data"
        diff = FileTree.diff(tree_content(FileTree.snapshot(data)), tree_content(FileTree.snapshot(there)))
        assert diff == {"only_a": [], "only_b": [], "changed": []}
        config_b = b.fs / "var-www" / "nextcloud" / "config" / "config.php"
        st = config_b.stat()
        assert config_b.read_bytes() == config.read_bytes() and (st.st_uid, st.st_mode & 0o7777) == (www, 0o640)
        occ = "www-data /var/www/nextcloud/occ"
        assert (a.fs / "var-tmp" / "php.calls").read_text().splitlines() == [f"{occ} maintenance:mode --on"]
        assert (b.fs / "var-tmp" / "php.calls").read_text().splitlines() == \
            [f"{occ} maintenance:data-fingerprint", f"{occ} maintenance:mode --off"]
    finally:
        old.close()

