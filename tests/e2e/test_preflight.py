"""Preflight (P401-P407) against real sshd and PostgreSQL: each problem is reported before anything changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hosts import FileTree, free_port, plan_str

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.run.preflight import MARGIN, SLACK, run_preflight
from mdsl.stores.postgres.probes import parse_version as parse_pg_version
from mdsl.run.ssh import SshBackend
from mdsl.syntax.parser import parse_text


class Plan:
    """A plan written for the test hosts, with helpers to find a line and to run preflight on it."""

    def __init__(self, text: str):
        self.text = text
        bound = resolve(parse_text(text, "preflight.plan"))
        assert bound.ok, [f.message for f in bound.findings]
        self.bound = bound
        self.compiled = compile_plan(bound)

    def line(self, needle: str) -> int:
        for i, line in enumerate(self.text.splitlines(), 1):
            if needle in line:
                return i
        raise AssertionError(f"{needle!r} not in the plan")

    def preflight(self, **backend_kw):
        """Findings of run_preflight; also checks that every 0600 temp file it made is gone again."""
        backends = {n: SshBackend(h, **backend_kw) for n, h in self.bound.hosts.items()}
        self.secret_files = []
        for b in backends.values():
            b.run = self._recording(b.run)
        try:
            t0 = time.perf_counter()
            findings = run_preflight(self.bound, self.compiled, backends)
            self.seconds = time.perf_counter() - t0
        finally:
            for b in backends.values():
                b.close()
        left = [p for p in self.secret_files if os.path.exists(p)]
        assert not left, f"preflight left secret files behind: {left}"
        return findings

    def _recording(self, run):
        def recording_run(command, **kw):
            r = run(command, **kw)
            if "mdsl-secret." in command and "mktemp" in command:
                self.secret_files.append(r.stdout.strip())
            return r

        return recording_run


def codes(findings):
    return sorted(f.code for f in findings)


def the(findings, code):
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, [(f.code, f.message) for f in findings]
    return hits[0]


@pytest.fixture
def migration(ssh_hosts, pg_source, pg_target, writer):
    """The seed's move between two real hosts: a Plan factory taking overrides of the parts that vary."""
    a, b = ssh_hosts.a, ssh_hosts.b
    (a.root / "public-system" / "media").mkdir(parents=True)
    (a.root / "public-system" / "media" / "x.png").write_bytes(b"\x89PNG" * 1000)

    def make(*, host_b=None, new_db_extra="", old_db_extra="", dests=None, services="", steps_extra="",
             restore=True) -> Plan:
        d = {"dump": f"{a.root}/backup/db.dump", "archive": f"{a.root}/backup/files.tar.gz",
             "db_in": f"{b.root}/in/db.dump", "files_in": f"{b.root}/in/files.tar.gz"}
        d.update(dests or {})
        text = f"""plan "preflight e2e"
{ssh_hosts.plan_host_decl(a)}
{host_b or ssh_hosts.plan_host_decl(b)}
postgres old_db on a {{
  database = {plan_str(pg_source.db)}
  user     = "mastodon"
  tcp      = {plan_str(pg_source.tcp)}
  password = env("MDSL_E2E_SOURCE_PASSWORD")
  {old_db_extra}
}}
postgres new_db on b {{
  database = {plan_str(pg_target.db)}
  user     = "mastodon"
  tcp      = {plan_str(pg_target.tcp)}
  password = env("MDSL_E2E_TARGET_PASSWORD")
  fresh    = true
  {new_db_extra}
}}
dir old_files on a {{ path = {plan_str(str(a.root / "public-system"))} }}
dir new_files on b {{ path = {plan_str(str(b.root / "public-system"))}  owner = "root:root" }}
{writer.plan_decl("old_app", "a", writes=["old_db", "old_files"])}
{services}
steps {{
  stop old_app
  dump old_db to a:{plan_str(d["dump"])}
  archive old_files to a:{plan_str(d["archive"])}
  transfer a:{plan_str(d["dump"])} to b:{plan_str(d["db_in"])}
  transfer a:{plan_str(d["archive"])} to b:{plan_str(d["files_in"])}
  {f'restore b:{plan_str(d["db_in"])} into new_db replace' if restore else ""}
  extract b:{plan_str(d["files_in"])} into new_files
  {steps_extra}
}}
"""
        return Plan(text)

    return make


class Unchanged:
    """Remembers every host's files and both databases; `arm()` after a test's setup."""

    def __init__(self, ssh_hosts, pg_source, pg_target):
        self.hosts, self.src, self.dst = ssh_hosts, pg_source, pg_target
        self.arm()

    def state(self):
        # (the 0600 temp files preflight makes are checked by Plan.preflight itself)
        return ({h.name: FileTree.snapshot(h.root) for h in self.hosts},
                self.src.table_checksum(self.src.db), self.dst.table_checksum(self.dst.db),
                self.dst.databases())

    def arm(self) -> None:
        self.before = self.state()


@pytest.fixture
def unchanged(ssh_hosts, pg_source, pg_target):
    """After the test: no host's files and no database changed since `arm()`."""
    u = Unchanged(ssh_hosts, pg_source, pg_target)
    yield u
    assert u.state() == u.before, "preflight changed something"


@pytest.fixture
def mounts(ssh_hosts):
    """mount(path, options): a tmpfs there for this test only (unmounted in the finalizer), made in the
    mount namespace of the host whose root holds `path` (the hosts share no mounts with this machine)."""
    made = []

    def mount(path: Path, options: str) -> Path:
        (host,) = [h for h in ssh_hosts if h.root in path.parents]
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(host.in_namespace(["mount", "-t", "tmpfs", "-o", options, "mdsl-e2e", str(path)]),
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); these checks need root with CAP_SYS_ADMIN")
        made.append((host, path))
        return path

    yield mount
    for host, p in reversed(made):
        if subprocess.run(host.in_namespace(["umount", str(p)]), capture_output=True).returncode != 0:
            subprocess.run(host.in_namespace(["umount", "-l", str(p)]), capture_output=True)


# ---------------------------------------------------------------- the clean case


def test_a_sound_plan_passes_and_nothing_changes(migration, unchanged):
    plan = migration()
    assert plan.preflight() == []


# ---------------------------------------------------------------- P401


def test_unreachable_host_is_p401_and_the_other_host_is_still_checked(ssh_hosts, migration, unchanged):
    b = ssh_hosts.b
    plan = migration(host_b=ssh_hosts.plan_host_decl(b).replace(f"port = {b.port}", f"port = {free_port(b.address)}"),
                     old_db_extra='bin = "/nonexistent/pgbin"')
    findings = plan.preflight()
    f = the(findings, "P401")
    assert f.span.line == plan.line("host b ")
    assert "connection refused" in f.message and "sshd" in f.help
    # host a answered its own questions meanwhile
    assert any(x.code == "P402" and "/nonexistent/pgbin/pg_dump" in x.message for x in findings)


def test_unknown_host_key_is_p401_with_fingerprint(ssh_hosts, migration, unchanged, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    plan = migration(host_b=ssh_hosts.plan_host_decl("b").replace(str(ssh_hosts.known_hosts), str(empty)))
    f = the(plan.preflight(), "P401")
    assert "unknown" in f.message and "SHA256:" in f.message
    assert "ssh-keyscan" in f.help and "--accept-new-host-keys" in f.help
    assert empty.read_text() == ""


# ---------------------------------------------------------------- P402


def test_missing_tools_are_p402(ssh_hosts, migration, unchanged):
    plan = migration(new_db_extra='bin = "/nonexistent/pgbin"',
                     steps_extra=f'transfer b:"/etc/hostname" to a:"{ssh_hosts.a.root}/never/hostname" via = tailscale')
    findings = plan.preflight()
    p402 = {f.message: f for f in findings if f.code == "P402"}
    restore = [f for m, f in p402.items() if "/nonexistent/pgbin/pg_restore" in m]
    assert restore and restore[0].span.line == plan.line("restore b:")
    assert "bin" in restore[0].help
    ts = [f for m, f in p402.items() if "`tailscale` is not installed on `b`" in m]
    assert ts and ts[0].span.line == plan.line("via = tailscale") and "apt install tailscale" in ts[0].help


# ---------------------------------------------------------------- P403


def test_pg_restore_older_than_pg_dump_and_older_target_server_are_p403(ssh_hosts, migration, unchanged):
    fake = ssh_hosts.b.root / "fakebin"
    fake.mkdir()
    (fake / "pg_restore").write_text("#!/bin/sh\necho 'pg_restore (PostgreSQL) 12.3'\n")
    # a psql that answers the probe as a PostgreSQL 12 server would
    (fake / "psql").write_text("#!/bin/sh\necho '120005|7000000'\n")
    for p in fake.iterdir():
        p.chmod(0o755)
    for tool in ("createdb", "dropdb"):
        (fake / tool).symlink_to(f"/usr/lib/postgresql/15/bin/{tool}")
    plan = migration(new_db_extra=f"bin = {plan_str(str(fake))}")
    unchanged.arm()
    findings = [f for f in plan.preflight() if f.code == "P403"]
    assert len(findings) == 2, [f.message for f in findings]
    assert all(f.span.line == plan.line("restore b:") for f in findings)
    messages = sorted(f.message for f in findings)
    assert messages[0].startswith("pg_restore on `b` (12.3) is older than the pg_dump on `a` (15.")
    assert messages[1].startswith("the server of `new_db` (12.5) is older than the server of `old_db` (15.")


def test_parse_pg_version():
    assert parse_pg_version("pg_dump (PostgreSQL) 15.5 (Debian 15.5-0+deb12u1)") == (15, 5)
    assert parse_pg_version("pg_restore (PostgreSQL) 9.6.24") == (9, 6)
    assert parse_pg_version("pg_dump (PostgreSQL) 17devel") == (17, 0)
    assert parse_pg_version("") is None


# ---------------------------------------------------------------- P404


def test_too_little_free_space_is_p404(ssh_hosts, migration, mounts, unchanged):
    small = mounts(ssh_hosts.b.root / "small", "size=1m")
    unchanged.arm()
    plan = migration(dests={"db_in": f"{small}/db.dump"})
    f = the(plan.preflight(), "P404")
    assert f.span.line == plan.line(f'"{small}/db.dump"')
    assert str(small) in f.message and "free" in f.message
    assert f"{small}/db.dump" in f.notes[0]


def test_destinations_on_one_file_system_add_up(ssh_hosts, migration, mounts, unchanged, pg_source):
    # room for either copy of the database, not for both (no restore: its decompressed copy would count too)
    size = int(pg_source.psql(f"select pg_database_size('{pg_source.db}')"))
    mb = int(size * MARGIN * 1.5 + SLACK) // (1 << 20) + 1  # between one copy's need and two copies' need
    shared = mounts(ssh_hosts.b.root / "shared", f"size={mb}m")
    unchanged.arm()
    one = migration(dests={"db_in": f"{shared}/db.dump"}, restore=False)
    assert [f for f in one.preflight() if f.code == "P404"] == []
    two = migration(dests={"db_in": f"{shared}/db.dump"}, restore=False,
                    steps_extra=f'transfer a:"{ssh_hosts.a.root}/backup/db.dump" to b:"{shared}/db-copy.dump"')
    f = the(two.preflight(), "P404")
    assert "db.dump" in f.notes[0] and "db-copy.dump" in f.notes[0]


def test_the_decompressed_copy_a_restore_makes_counts(ssh_hosts, migration, mounts, unchanged, pg_source):
    # room for the dump, not for the dump and the copy pg_restore -j reads beside it
    size = int(pg_source.psql(f"select pg_database_size('{pg_source.db}')"))
    mb = int(size * MARGIN * 1.5 + SLACK) // (1 << 20) + 1
    shared = mounts(ssh_hosts.b.root / "shared", f"size={mb}m")
    unchanged.arm()
    plan = migration(dests={"db_in": f"{shared}/db.dump"})
    f = the(plan.preflight(), "P404")
    assert f.span.line == plan.line(f'restore b:"{shared}/db.dump"')
    assert f"{shared}/db.dump.restore.part" in f.message and "removed when that step ends" in f.notes[0]
    # a serial restore streams the dump: no copy, and room enough
    serial = migration(dests={"db_in": f"{shared}/db.dump"}, restore=False,
                       steps_extra=f'restore b:"{shared}/db.dump" into new_db replace jobs = 1')
    assert [f for f in serial.preflight() if f.code == "P404"] == []


# ---------------------------------------------------------------- P405


def test_missing_unit_and_service_commands_are_p405(ssh_hosts, migration, unchanged):
    services = """
service units on a { systemd = ["mdsl-e2e-no-such-unit"] }
service cmds on b {
  start  = "/nonexistent/bin/start-it --now"
  stop   = "true"
  status = "/nonexistent/bin/status-of-it"
}
"""
    plan = migration(services=services, steps_extra="stop units\n  stop cmds")
    findings = plan.preflight()
    p405 = [f for f in findings if f.code == "P405"]
    if shutil.which("systemctl"):
        units = [f for f in p405 if "mdsl-e2e-no-such-unit" in f.message]
        assert units and units[0].span.line == plan.line("service units on a")
        # either systemd runs and knows no such unit, or it does not run here at all: both stop the plan
        assert "does not exist" in units[0].message or "systemd is not running" in units[0].message
    else:  # no systemd package on this machine: the missing program is what stops the plan
        assert any(f.code == "P402" and "`systemctl`" in f.message and f.span.line == plan.line("stop units")
                   for f in findings)
    cmds = [f for f in p405 if "`cmds`" in f.message]
    assert len(cmds) == 2, [f.message for f in p405]
    assert all(f.span.line == plan.line("service cmds on b") for f in cmds)
    assert any("/nonexistent/bin/start-it" in f.message for f in cmds)
    assert any("status command" in f.message and "not found" in f.message for f in cmds), [f.message for f in cmds]


# ---------------------------------------------------------------- P406


def test_wrong_database_password_is_p406(migration, unchanged, monkeypatch):
    monkeypatch.setenv("MDSL_E2E_TARGET_PASSWORD", "definitely-wrong-password")
    plan = migration()
    f = the(plan.preflight(), "P406")
    assert len(plan.secret_files) >= 2  # one PGPASSFILE per database checked, each removed again
    assert f.span.line == plan.line("postgres new_db on b")
    assert "password authentication failed" in f.message
    assert 'env("MDSL_E2E_TARGET_PASSWORD")' in f.help
    assert "definitely-wrong-password" not in repr(f)


def test_unset_password_variable_is_p406(migration, unchanged, monkeypatch):
    monkeypatch.delenv("MDSL_E2E_SOURCE_PASSWORD")
    plan = migration()
    f = the(plan.preflight(), "P406")
    assert f.span.line == plan.line("postgres old_db on a")
    assert "MDSL_E2E_SOURCE_PASSWORD" in f.message and "not set" in f.message


def test_password_file_for_a_run_as_user_passes(ssh_hosts, pg_target, unchanged):
    # psql runs as another OS user: the 0600 PGPASSFILE must be made by (and readable for) that user
    text = f"""plan "run_as"
{ssh_hosts.plan_host_decl("b")}
postgres new_db on b {{
  database = {plan_str(pg_target.db)}
  user     = "mastodon"
  tcp      = {plan_str(pg_target.tcp)}
  password = env("MDSL_E2E_TARGET_PASSWORD")
  run_as   = "postgres"
}}
steps {{
  restore b:"{ssh_hosts.b.root}/in/db.dump" into new_db
}}
"""
    found = [f for f in Plan(text).preflight() if f.code in ("P402", "P406")]
    assert found == [], [f.message for f in found]


# ---------------------------------------------------------------- P407


def test_read_only_destination_is_p407(ssh_hosts, migration, mounts, unchanged):
    ro = mounts(ssh_hosts.b.root / "ro", "ro,size=1m")
    unchanged.arm()
    plan = migration(dests={"files_in": f"{ro}/incoming/files.tar.gz"})
    f = the(plan.preflight(), "P407")
    assert f.span.line == plan.line(f'"{ro}/incoming/files.tar.gz"')
    assert f"`{ro}`" in f.message and "root" in f.message
    assert not (ro / "incoming").exists()


def test_destination_not_writable_by_the_run_as_user_is_p407(ssh_hosts, pg_source, unchanged):
    # a directory-format dump is written by the database's run_as user, not by root
    out = ssh_hosts.a.root / "dumps"
    out.mkdir(mode=0o755)
    unchanged.arm()
    text = f"""plan "run_as"
{ssh_hosts.plan_host_decl("a")}
postgres old_db on a {{
  database = {plan_str(pg_source.db)}
  user = "mastodon"
  socket = {plan_str(str(pg_source.sockdir))}
  run_as = "postgres"
}}
steps {{
  dump old_db to a:"{out}/db.dir" format = directory
}}
"""
    plan = Plan(text)
    f = the(plan.preflight(), "P407")
    assert "not writable by postgres" in f.message and f"`{out}`" in f.message
    assert f.span.line == plan.line("dump old_db")


# ---------------------------------------------------------------- parallel


def test_hosts_are_checked_in_parallel(ssh_hosts, migration, unchanged):
    services = """
service slow_a on a { start = "true"  stop = "true"  status = "sleep 2; exit 3" }
service slow_b on b { start = "true"  stop = "true"  status = "sleep 2; exit 3" }
"""
    plan = migration(services=services, steps_extra="stop slow_a\n  stop slow_b")
    assert plan.preflight() == []
    assert plan.seconds < 3.8, f"{plan.seconds:.1f}s: hosts were checked one after the other"
