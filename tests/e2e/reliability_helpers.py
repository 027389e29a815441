"""Helpers for the reliability e2e tests (test_faults, test_secrets, test_injection_ssh,
test_remote_answers): running `mdsl` as a subprocess, reading its journal, and a "hostile"
SSH host whose login shell runs a hook before every command (a banner on stdout, a PATH
with broken tools) to stand in for a badly behaved machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from hosts import REGISTRY, SshCluster, SshHost, plan_str

REPO = Path(__file__).resolve().parents[2]


def mdsl(*args: str, timeout: float = 300, env: Optional[dict] = None, cwd=REPO) -> subprocess.CompletedProcess:
    """`python3 -m mdsl ARGS` (no terminal: JSON log lines on stderr)."""
    return subprocess.run([sys.executable, "-m", "mdsl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def output(r) -> str:
    return (r.stdout or "") + (r.stderr or "")


def human(text: str) -> str:
    """The output without JSON log lines."""
    return "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("{"))


def no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text
    assert "internal error" not in text, text


def journal_path(plan: Path) -> Path:
    return plan.parent / ".mdsl" / (plan.name[:-5] + ".journal")


def lock_path(plan: Path) -> Path:
    return plan.parent / ".mdsl" / (plan.name[:-5] + ".lock")


def journal_events(plan: Path) -> list:
    p = journal_path(plan)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def wait_until(predicate, timeout: float = 30.0, step: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"{what} not met within {timeout}s")


class Apply:
    """`mdsl apply --yes PLAN` in the background, to be killed or cut at a chosen moment."""

    def __init__(self, plan: Path, *args: str, env: Optional[dict] = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", *args, str(plan)], cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        self.ref = REGISTRY.record(self.proc.pid, f"mdsl apply {plan.name}")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL mdsl itself (not its children: what it ran on the hosts goes on, as after a crash)."""
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self, timeout: float = 300) -> subprocess.CompletedProcess:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.ref.stop()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


# ---------------------------------------------------------------- a host that misbehaves


class HookedHost(SshHost):
    """An sshd whose sessions run `. HOOK` before the command (ForceCommand): edit the hook to misbehave."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.hook = self.confdir / "hook.sh"
        self.bindir = self.confdir / "bin"
        self.bindir.mkdir(exist_ok=True)
        self.set_hook("")

    def set_hook(self, text: str) -> None:
        self.hook.write_text(text + "\n")

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_path.open("a") as f:
            # The user's shell runs this (bash -c), as it would a login script, then the real command.
            f.write(f'ForceCommand . {self.hook}; eval "$SSH_ORIGINAL_COMMAND"\n')


def start_hooked_host(cluster: SshCluster, base: Path, address: str = "127.0.0.4", name: str = "c") -> HookedHost:
    """A third host sharing the cluster's client key; its known_hosts line goes into `base/known_hosts`."""
    import tempfile

    # a fresh config dir each time (ssh-keygen will not overwrite the host key of an earlier module's host)
    confdir = Path(tempfile.mkdtemp(prefix=address + "-", dir=base / "ssh"))
    confdir.chmod(0o755)
    h = HookedHost(name, address, confdir, base / "hosts" / address, cluster.authorized_keys)
    h.start()
    return h


def host_decl(cluster: SshCluster, h: SshHost, known_hosts: Path, name: Optional[str] = None, extra: str = "") -> str:
    """A plan's `host` declaration for h, checked against known_hosts."""
    return (f"host {name or h.name} {{ ssh = {plan_str(h.ssh_target)}  port = {h.port}  "
            f"identity = {plan_str(str(cluster.identity))}  known_hosts = {plan_str(str(known_hosts))} {extra}}}")


def write_known_hosts(path: Path, *hosts: SshHost) -> Path:
    path.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
    return path


@pytest.fixture(scope="module")
def hooked(_ssh_daemons, e2e_base):
    """Host `c` (127.0.0.4): its login shell sources a hook before every command (import this fixture)."""
    h = start_hooked_host(_ssh_daemons, e2e_base)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def three(ssh_hosts, hooked, tmp_path):
    """(a, b, c, their host declarations): c's hook and bin dir are empty before and after each test."""
    hooked.set_hook("")
    hooked.reset_root()
    for p in hooked.bindir.iterdir():
        p.unlink()
    kh = write_known_hosts(tmp_path / "known_hosts", ssh_hosts.a, ssh_hosts.b, hooked)
    decls = "\n".join(host_decl(ssh_hosts, h, kh) for h in (ssh_hosts.a, ssh_hosts.b, hooked))
    yield ssh_hosts.a, ssh_hosts.b, hooked, decls
    hooked.set_hook("")
    hooked.kill_connections()
    hooked.reap_orphans()
