"""Secrets never leak: not into any process's argv on either host (read from /proc while a
password-using dump, a password-file restore and a sudo step run), not into remote processes'
environment, not into logs (JSON and console), the journal, `mdsl plan`, error messages or the
narrative; and the 0600 files that carry them are gone afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hosts import descendants, plan_str
from reliability_helpers import Apply, human, journal_path, mdsl, no_traceback, output
from reliability_helpers import hooked, three  # noqa: F401 - fixtures: host c, whose sessions run a hook
from test_ssh_backend import SUDO_USER, sudo_user  # noqa: F401 - the fixture: a user with a sudo password

pytestmark = pytest.mark.e2e


class ProcScanner:
    """Reads /proc/*/cmdline (every process) and /proc/*/environ (what sshd runs) until stopped."""

    def __init__(self, needles, sshd_pids, watch=(b"pg_dump", b"pg_restore", b"mdsl-sudo-probe")):
        self.needles = [n.encode() for n in needles]
        self.sshd_pids = sshd_pids
        self.watch = watch
        self.leaks: list = []
        self.seen: dict = {w: set() for w in watch}
        self.sweeps = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            remote = set()
            for d in self.sshd_pids:
                remote.update(descendants(d))
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == me:
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmdline = f.read()
                except OSError:
                    continue
                for w in self.watch:
                    if w in cmdline:
                        self.seen[w].add(int(pid))
                for n in self.needles:
                    if n in cmdline:
                        self.leaks.append(("argv", int(pid), cmdline[:300]))
                if int(pid) in remote:
                    try:
                        with open(f"/proc/{pid}/environ", "rb") as f:
                            env = f.read()
                    except OSError:
                        continue
                    for n in self.needles:
                        if n in env:
                            self.leaks.append(("environ", int(pid), cmdline[:300]))
            self.sweeps += 1


def _secret_files(ssh_hosts=None) -> set:
    # each host's TMPDIR, and its own /tmp (where a sudo'ed command, whose TMPDIR sudo drops, writes)
    dirs = [Path("/tmp")] + ([d for h in ssh_hosts for d in (h.tmpdir, h.path("/tmp"))] if ssh_hosts is not None
                             else [])
    return {p for d in dirs for p in d.glob("mdsl-secret.*")}


def test_no_secret_in_argv_environ_logs_journal_or_plan_output(ssh_hosts, pg_source, pg_target, sudo_user,  # noqa: F811
                                                                tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    source_pw, target_pw = os.environ["MDSL_E2E_SOURCE_PASSWORD"], os.environ["MDSL_E2E_TARGET_PASSWORD"]
    sudo_pw = sudo_user
    secrets = [source_pw, target_pw, sudo_pw]
    pw_file = tmp_path / "target.pw"
    pw_file.write_text(target_pw + "\n")
    pw_file.chmod(0o600)
    (a.root / "leak.txt").write_text(f"the source password is {source_pw}\n")
    target_decl = pg_target.plan_decl("new_db", "b", fresh=True).rpartition("}")[0] + \
        f"  password = file({plan_str(str(pw_file))})\n}}"
    sudo_host = (f"host s {{ ssh = {plan_str(SUDO_USER + '@' + a.address)}  port = {a.port}  "
                 f"identity = {plan_str(str(ssh_hosts.identity))}  known_hosts = {plan_str(str(ssh_hosts.known_hosts))}"
                 f"  sudo = true  sudo_password = env(\"MDSL_E2E_SUDO_PASSWORD\") }}")
    dump_a, dump_b = a.root / "outbox" / "db.dump", b.root / "inbox" / "db.dump"
    plan = tmp_path / "secrets.plan"
    plan.write_text(f"""
plan "secrets stay secret"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{sudo_host}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
{target_decl}
steps {{
  dump old_db to a:{plan_str(str(dump_a))}
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  restore b:{plan_str(str(dump_b))} into new_db replace
  as_root: run s {plan_str(f"sleep 1.5; id -un > {a.root}/whoami; : mdsl-sudo-probe")}
  verify run a {plan_str(f"cat {a.root}/leak.txt")}
}}
""")
    before_files = _secret_files(ssh_hosts)
    chk = mdsl("check", str(plan))
    assert chk.returncode in (0, 1), output(chk)
    shown = mdsl("plan", str(plan))
    assert shown.returncode == 0, output(shown)
    assert "***" in shown.stdout
    for s in secrets:
        assert s not in output(shown)

    sshd_pids = [h.pid for h in (a, b)]
    with ProcScanner(secrets, sshd_pids) as scan:
        run = Apply(plan, "--log-format", "json")
        r = run.finish()
    text = output(r)
    assert r.returncode == 0, text
    no_traceback(text)
    assert not scan.leaks, scan.leaks[:5]
    # the scanner really watched the password-using commands and the sudo step while they ran
    assert scan.seen[b"pg_dump"] and scan.seen[b"pg_restore"] and scan.seen[b"mdsl-sudo-probe"], \
        (scan.sweeps, {k: len(v) for k, v in scan.seen.items()})
    print(f"/proc read {scan.sweeps} times during the apply; processes seen: "
          + ", ".join(f"{k.decode()} {len(v)}" for k, v in scan.seen.items()))
    assert (a.root / "whoami").read_text() == "root\n"
    assert pg_target.row_counts(pg_target.db)["statuses"] == 100_000
    # the verify step printed the secret: the narrative shows it masked
    assert "the source password is ***" in r.stdout, r.stdout
    assert any(line.startswith("{") for line in r.stderr.splitlines())  # JSON log lines were written
    for s in secrets:
        assert s not in text, "a secret in the output or the JSON log"
        assert s not in journal_path(plan).read_text(), "a secret in the journal"
        for h in (a, b):
            assert s not in (h.confdir / "sshd.log").read_text(errors="replace")
    assert _secret_files(ssh_hosts) <= before_files, "a 0600 secret file was left behind"

    # a failing step whose error output holds a secret, with the console log format
    fail = tmp_path / "fail.plan"
    fail.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
steps {{
  dump old_db to a:{plan_str(str(a.root / "outbox" / "again.dump"))}
  run a {plan_str(f"cat {a.root}/leak.txt; cat {a.root}/leak.txt >&2; exit 3")}
}}
""")
    for fmt in ("console", "json"):
        r = mdsl("apply", "--yes", "--log-format", fmt, "--restart", str(fail))
        text = output(r)
        assert r.returncode == 1, text
        no_traceback(text)
        assert "the source password is ***" in human(text), human(text)
        for s in secrets:
            assert s not in text
            assert s not in journal_path(fail).read_text()
    st = mdsl("status", str(fail))
    for s in secrets:
        assert s not in output(st)


# ---------------------------------------------------------------- host keys, through `mdsl apply`


def _fingerprint(public_key_line: str) -> str:
    import subprocess

    r = subprocess.run(["ssh-keygen", "-lf", "/dev/stdin"], input=public_key_line + "\n", capture_output=True,
                       text=True, check=True)
    return r.stdout.split()[1]


@pytest.mark.parametrize("case", ["unknown", "changed-with-accept-new"])
def test_apply_refuses_an_unknown_or_changed_host_key_showing_its_fingerprint(ssh_hosts, tmp_path, case):
    import subprocess

    a = ssh_hosts.a
    kh = tmp_path / "known_hosts"
    if case == "unknown":
        kh.write_text("")
        args = ["apply", "--yes"]
    else:
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        kh.write_text(f"[{a.address}]:{a.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
        args = ["apply", "--yes", "--accept-new-host-keys"]
    marker = tmp_path / "ran"
    decl = ssh_hosts.plan_host_decl("a").replace(str(ssh_hosts.known_hosts), str(kh))
    plan = tmp_path / "keys.plan"
    plan.write_text(f'{decl}\nsteps {{\n  run a {plan_str(f"touch {marker}")}\n}}\n')
    before = kh.read_text()
    r = mdsl(*args, str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    assert _fingerprint(a.host_public_key) in text, text  # the key the host really presented
    assert ("HOST KEY CHANGED" in text) == (case != "unknown"), text
    assert not marker.exists()
    assert kh.read_text() == before  # neither key is recorded: nothing trusted, nothing overwritten


# ---------------------------------------------------------------- a killed apply's PGPASSFILE


def test_the_pgpassfile_a_killed_apply_left_is_removed_by_the_rerun(ssh_hosts, pg_source, tmp_path):
    """SIGKILL during a password-using dump leaves its 0600 file in the host's TMPDIR; the re-run removes it."""
    import json
    import signal

    from hosts import REGISTRY
    from reliability_helpers import journal_events, wait_until

    a = ssh_hosts.a
    source_pw = os.environ["MDSL_E2E_SOURCE_PASSWORD"]
    dump = a.root / "outbox" / "db.dump"
    plan = tmp_path / "killed.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
steps {{
  dump old_db to a:{plan_str(str(dump))} format = plain
}}
""")
    before = _secret_files(ssh_hosts)

    def dumping():
        """The pid records of the dump command: after its PGPASSFILE was made, before it was removed."""
        ev = journal_events(plan)
        made = [k for k, e in enumerate(ev) if e.get("event") == "secret-file" and e.get("step")]
        return made and [e for e in ev[made[0] + 1:] if e.get("event") == "pid"]

    run = Apply(plan)
    orphans = []
    try:
        wait_until(lambda: dumping() or not run.running, 60, 0.002, "pg_dump to start")
        assert run.running, human(output(run.finish()))
        run.kill()
        assert run.finish().returncode == -9
        orphans = [REGISTRY.record(e["pid"], "orphaned pg_dump wrapper") for e in dumping()]
        left = _secret_files(ssh_hosts) - before
        assert len(left) == 1, "the kill missed the dump (it ended first): no file to clean up"
        path = left.pop()
        assert path.parent == a.tmpdir and oct(path.stat().st_mode & 0o777) == "0o600"
        events = journal_events(plan)
        made = [e for e in events if e.get("event") == "secret-file" and e.get("step")]  # the step's
        assert [e["path"] for e in made] == [str(path)] and made[0]["host"] == "a"
        checks = [e["path"] for e in events if e.get("event") == "secret-file" and not e.get("step")]
        assert len(checks) == 1  # preflight's database check made one too, and removed it
        assert [e["path"] for e in events if e.get("event") == "secret-file-removed"] == checks

        r = mdsl("apply", "--yes", str(plan))
        text = output(r)
        assert r.returncode == 0, text
        no_traceback(text)
        assert "removed 1 private temp file(s) the interrupted run left on host a" in r.stdout, r.stdout
        assert not path.exists()
        assert _secret_files(ssh_hosts) <= before
        assert b"PostgreSQL database dump complete" in dump.read_bytes()[-300:]
        removed = [e for e in journal_events(plan) if e.get("event") == "secret-file-removed"]
        assert str(path) in [e["path"] for e in removed]
        assert source_pw not in journal_path(plan).read_text() and source_pw not in text
        assert all(json.dumps(e).count(source_pw) == 0 for e in journal_events(plan))
    finally:
        if run.running:
            run.kill()
        for ref in orphans:
            ref.stop(signal.SIGKILL, timeout=5)


def test_the_pgpassfile_of_a_preflight_check_is_removed_after_a_kill(three, pg_source, tmp_path):  # noqa: F811
    """SIGKILL while preflight's database check runs (before any step, before the journal of steps opens):
    its 0600 PGPASSFILE is recorded all the same, and the next run removes it."""
    from reliability_helpers import journal_events, wait_until

    a, b, c, decls = three
    # c's sessions run this hook first: the database check (psql with a PGPASSFILE) hangs a while
    c.set_hook('case "$SSH_ORIGINAL_COMMAND" in *PGPASSFILE=*psql*) sleep 30 ;; esac')
    dump = c.root / "outbox" / "db.dump"
    plan = tmp_path / "preflight-killed.plan"
    plan.write_text(f"""
{decls}
{pg_source.plan_decl("old_db", "c", password_env="MDSL_E2E_SOURCE_PASSWORD")}
steps {{
  dump old_db to c:{plan_str(str(dump))} format = plain
}}
""")
    before = {p for p in c.tmpdir.glob("mdsl-secret.*")}
    run = Apply(plan)
    try:
        made = wait_until(lambda: [e for e in journal_events(plan) if e.get("event") == "secret-file"]
                          or not run.running, 60, what="preflight's temp file to be recorded")
        assert run.running, human(output(run.finish()))
        time.sleep(0.5)  # inside the hook's sleep: the file exists, the check has not returned
        run.kill()
        assert run.finish().returncode == -9
        left = {p for p in c.tmpdir.glob("mdsl-secret.*")} - before
        assert [str(p) for p in left] == [made[0]["path"]] and made[0].get("step") is None, (left, made)
        assert not [e for e in journal_events(plan) if e.get("event") in ("run", "start")]  # no step had begun
        c.set_hook("")
        c.kill_connections()
        c.reap_orphans()

        r = mdsl("apply", "--yes", str(plan))
        text = output(r)
        assert r.returncode == 0, text
        no_traceback(text)
        assert "removed 1 private temp file(s) the interrupted run left on host c" in r.stdout, r.stdout
        assert not left.pop().exists()
        assert {p for p in c.tmpdir.glob("mdsl-secret.*")} <= before
        assert b"PostgreSQL database dump complete" in dump.read_bytes()[-300:]
    finally:
        if run.running:
            run.kill()
            run.finish()
