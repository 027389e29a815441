"""Copies between two namespaced SSH hosts (issue 11): each on a route mdsl arranges, nothing left behind.

The hosts share nothing (namespaces.py): the source has neither the control machine's identity file nor
its known_hosts, so every copy here works only through the route's own key pair and known_hosts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from hosts import FileTree, _comm, descendants, plan_str
from reliability_helpers import REPO, human, mdsl, output
from test_ssh_backend import SUDO_USER, sudo_user  # noqa: F401 - the fixture: a user with a sudo password


def _assert_no_route_left(ssh_hosts) -> None:
    for h in ssh_hosts:
        keys = h.path("/root/.ssh/authorized_keys")
        assert not keys.exists() or "mdsl-route" not in keys.read_text(), (h.name, keys.read_text())
        for tmp in (h.tmpdir, h.path("/tmp")):
            assert not list(tmp.glob("mdsl-route.*")), (h.name, list(tmp.glob("mdsl-route.*")))


def _contents(root: Path) -> dict:
    return {k: v[0] for k, v in FileTree.snapshot(root).items()}


def _hosts(ssh_hosts, b_decl: str | None = None) -> str:
    return ssh_hosts.plan_host_decl("a") + "\n" + (b_decl or ssh_hosts.plan_host_decl("b"))


def test_sync_live_rsync_and_scp_between_namespaced_hosts(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "data"
    FileTree.populate(src)
    blob = a.root / "media.bin"
    blob.write_bytes(os.urandom(1 << 20))
    plan = tmp_path / "routes.plan"
    plan.write_text(f"""plan "routes"
{_hosts(ssh_hosts)}
dir old on a {{ path = {plan_str(str(src))} }}
dir new on b {{ path = {plan_str(str(b.root / "data"))}  owner = "root:root"  fresh = true }}
dir relayed on b {{ path = {plan_str(str(b.root / "relayed"))}  owner = "root:root" }}
file media on a {{ path = {plan_str(str(blob))} }}
steps {{
  sync old to new live
  sync old to new
  sync old to relayed route = relay
  transfer media to b:{plan_str(str(b.root / "by-rsync.bin"))} via = rsync
  transfer media to b:{plan_str(str(b.root / "by-scp.bin"))} via = scp route = relay
}}
""")
    shown = mdsl("plan", str(plan))
    assert shown.returncode == 0, output(shown)
    assert "[route] a -> b: route = auto" in shown.stdout and "[route] a -> b: route = relay" in shown.stdout
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    want = _contents(src)
    assert _contents(b.root / "data") == want
    assert _contents(b.root / "relayed") == want
    for name in ("by-rsync.bin", "by-scp.bin"):
        assert (b.root / name).read_bytes() == blob.read_bytes()
    _assert_no_route_left(ssh_hosts)


def _rsync_on(host) -> bool:
    return any(_comm(p) == "rsync" for p in descendants(host.pid or 0))


def test_a_killed_copy_leaves_its_route_for_the_next_run_to_remove(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "big"
    src.mkdir()
    for i in range(3):
        (src / f"part-{i}.bin").write_bytes(os.urandom(32 << 20))
    plan = tmp_path / "killed.plan"
    plan.write_text(f"""plan "killed"
{_hosts(ssh_hosts)}
dir old on a {{ path = {plan_str(str(src))} }}
dir new on b {{ path = {plan_str(str(b.root / "big"))}  owner = "root:root" }}
steps {{
  sync old to new
}}
""")
    said = tmp_path / "killed.out"
    with said.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _rsync_on(a) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _rsync_on(a), "the copy never started: " + said.read_text()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    keys = b.path("/root/.ssh/authorized_keys")
    assert "mdsl-route" in keys.read_text()  # the killed run could not remove its key
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert "copy route key(s) or dir(s) the interrupted run left" in human(output(r))
    assert _contents(b.root / "big") == _contents(src)
    _assert_no_route_left(ssh_hosts)


class _OneConnection:
    """A TCP forwarder to the target's sshd that takes one connection (the control's), then refuses all."""

    def __init__(self, address: str, target: tuple[str, int]):
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.listener.close()  # from now on the address refuses: the target is unreachable there
        up = socket.create_connection(self.target)
        for x, y in ((conn, up), (up, conn)):
            threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(x: socket.socket, y: socket.socket) -> None:
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        finally:
            for s in (x, y):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_route_that_cannot_work_is_refused_in_preflight(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    (a.root / "data").mkdir()
    (a.root / "data" / "f").write_text("x")
    forwarder = _OneConnection("127.0.0.6", (b.address, b.port))
    known = tmp_path / "known_hosts"
    keytype, key = b.host_public_key.split()[:2]
    known.write_text(f"[127.0.0.6]:{forwarder.port} {keytype} {key}\n")
    b_decl = (f"host b {{ ssh = \"root@127.0.0.6\"  port = {forwarder.port}  "
              f"identity = {plan_str(str(ssh_hosts.client_key))}  known_hosts = {plan_str(str(known))} }}")
    running = a.path("/srv/app-running")
    running.write_text("")
    plan = tmp_path / "unreachable.plan"
    plan.write_text(f"""plan "unreachable"
{_hosts(ssh_hosts, b_decl)}
service app on a {{
  start = "touch /srv/app-running"  stop = "rm -f /srv/app-running"  status = "test -e /srv/app-running"
}}
dir old on a {{ path = {plan_str(str(a.root / "data"))} }}
dir new on b {{ path = {plan_str(str(b.root / "data"))}  owner = "root:root" }}
steps {{
  stop app
  sync old to new
  start app
}}
""")
    r = mdsl("apply", "--yes", str(plan))
    text = human(output(r))
    assert r.returncode != 0, text
    assert "P412" in text and "nothing was stopped" in text, text
    assert running.exists()  # the app was not stopped
    assert not (b.root / "data").exists()
    _assert_no_route_left(ssh_hosts)


def test_agent_route_forwards_the_control_agent_only_for_the_copy(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "data"
    FileTree.populate(src, files=10)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(ssh_hosts.client_key)], env=env, check=True, capture_output=True)
        plan = tmp_path / "agent.plan"
        plan.write_text(f"""plan "agent"
{_hosts(ssh_hosts)}
dir old on a {{ path = {plan_str(str(src))} }}
dir new on b {{ path = {plan_str(str(b.root / "data"))}  owner = "root:root" }}
steps {{
  sync old to new route = agent
}}
""")
        without = mdsl("apply", "--yes", str(plan), env={k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"})
        assert without.returncode != 0 and "P412" in output(without) and "SSH_AUTH_SOCK" in output(without)
        r = mdsl("apply", "--yes", str(plan), env=env)
        assert r.returncode == 0, output(r)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    assert _contents(b.root / "data") == _contents(src)
    assert not b.path("/root/.ssh/authorized_keys").exists()  # no key was added for this route
    _assert_no_route_left(ssh_hosts)


def test_a_sudo_source_copies_as_root_with_its_route(ssh_hosts, sudo_user, tmp_path):  # noqa: F811
    """On a `sudo = true` source the copy runs as root: its route's key and config are root's too (ssh
    refuses a config another user owns), and root removes them."""
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "private"
    FileTree.populate(src, files=8)
    os.chmod(src, 0o700)  # only root reads it: the copy must run as root
    sudo_a = (f"host a {{ ssh = {plan_str(SUDO_USER + '@' + a.address)}  port = {a.port}  "
              f"identity = {plan_str(str(ssh_hosts.identity))}  known_hosts = {plan_str(str(ssh_hosts.known_hosts))}"
              f"  sudo = true  sudo_password = env(\"MDSL_E2E_SUDO_PASSWORD\") }}")
    plan = tmp_path / "sudo.plan"
    plan.write_text(f"""plan "sudo source"
{sudo_a}
{ssh_hosts.plan_host_decl("b")}
dir old on a {{ path = {plan_str(str(src))} }}
dir new on b {{ path = {plan_str(str(b.root / "private"))}  owner = "root:root" }}
steps {{
  sync old to new
}}
""")
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert _contents(b.root / "private") == _contents(src)
    assert sudo_user not in output(r)
    _assert_no_route_left(ssh_hosts)
