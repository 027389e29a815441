"""`via = stream` through the OpenSSH client (bulk bytes) over real sshd: the copy, its hash, a
failing target, a directory; and the paramiko route it falls back to when forced."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hosts import FileTree

REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mdsl(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdsl", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, env=env)


@pytest.mark.parametrize("route", ["openssh", "paramiko"])
def test_stream_transfer_of_a_file_and_a_dir(ssh_hosts, tmp_path, route):
    a, b = ssh_hosts.a, ssh_hosts.b
    blob = a.root / "media.bin"
    blob.write_bytes(os.urandom((17 << 20) + 12345))  # above BULK_MIN: the OpenSSH route by default
    tree = a.root / "tree"
    FileTree.populate(tree)
    plan = tmp_path / "stream.plan"
    plan.write_text(f"""
plan "stream"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
file media on a {{ path = "{blob}" }}
dir old_tree on a {{ path = "{tree}" }}
steps {{
  transfer media to b:"{b.root}/copy.bin"
  transfer a:"{tree}" to b:"{b.root}/tree"
}}
""")
    env = {**os.environ, "MDSL_STREAM": route}
    r = mdsl("apply", "--yes", str(plan), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sha256(b.root / "copy.bin") == sha256(blob)
    assert not (b.root / "copy.bin.part").exists()
    assert {k: v[0] for k, v in FileTree.snapshot(b.root / "tree").items()} == \
        {k: v[0] for k, v in FileTree.snapshot(tree).items()}


def test_openssh_stream_reports_a_failing_target(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    blob = a.root / "media.bin"
    blob.write_bytes(os.urandom(17 << 20))
    (b.root / "copy.bin.part" / "x").mkdir(parents=True)  # `cat > copy.bin.part` fails: a directory
    plan = tmp_path / "fail.plan"
    plan.write_text(f"""
plan "stream fails"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
file media on a {{ path = "{blob}" }}
steps {{
  transfer media to b:"{b.root}/copy.bin"
}}
""")
    r = mdsl("apply", "--yes", str(plan), env={**os.environ, "MDSL_STREAM": "openssh"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "FAILED" in r.stdout
    assert "writing the target failed" in r.stderr and "Is a directory" in r.stderr
    assert not (b.root / "copy.bin").exists()


def _accepted(h) -> int:
    """Connections the host's sshd has authenticated so far (its log, LogLevel VERBOSE)."""
    return h.log_path.read_text(errors="replace").count("Accepted publickey")


def _masters(tag: str) -> list:
    """Pids of OpenSSH master clients whose control path lies under `tag` (a test's own TMPDIR)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ControlMaster=yes" in argv and any(tag.encode() in a for a in argv):
            out.append(int(d))
    return out


def test_bulk_copies_share_one_connection_per_host_which_ends_with_mdsl(ssh_hosts, tmp_path):
    """Three bulk copies a -> b open one OpenSSH connection per host, not four per copy; SIGKILL mdsl and
    those connections end by themselves; the next run removes what the killed one left in the temp dir."""
    from reliability_helpers import Apply, human, output, wait_until

    a, b = ssh_hosts.a, ssh_hosts.b
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mdsl-t-", dir="/tmp"))  # short: a socket's path has at most 107 bytes
    blobs = []
    for k in range(4):
        blob = a.root / f"media{k}.bin"
        blob.write_bytes(os.urandom((16 << 20) + k))  # BULK_MIN: the OpenSSH route
        blobs.append(blob)
    once, marker = a.root / "once", f"mdsl-mux-{os.getpid()}"  # on host a: it runs the test of it
    slow = f": {marker}; test -e {once} || {{ touch {once}; sleep 300; }}"
    plan = tmp_path / "mux.plan"
    files = "\n".join(f'file m{k} on a {{ path = "{blobs[k]}" }}' for k in range(4))
    copies = "\n".join(f'  transfer m{k} to b:"{b.root}/copy{k}.bin"' for k in range(3))
    plan.write_text(f"""
plan "mux"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{files}
steps {{
{copies}
  slow: run a "{slow}"
  transfer m3 to b:"{b.root}/copy3.bin"
}}
""")
    env = {**os.environ, "TMPDIR": str(tmp), "MDSL_STREAM": "openssh"}
    before = (_accepted(a), _accepted(b))
    run = Apply(plan, env=env)
    masters: list = []
    try:
        wait_until(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout or not run.running,
                   60, what="the slow step to start")
        assert run.running, human(output(run.finish()))
        for k in range(3):
            assert sha256(b.root / f"copy{k}.bin") == sha256(blobs[k])
        # one Fabric connection and one OpenSSH master per host, for three copies (it was 1 + 4 per copy)
        assert (_accepted(a) - before[0], _accepted(b) - before[1]) == (2, 2), [line for line in b.log_path.read_text().splitlines() if "session" not in line.lower()]
        masters = _masters(str(tmp))
        assert len(masters) == 2, masters
        assert [p for p in os.listdir(tmp) if p.startswith("mdsl-ssh-")], os.listdir(tmp)

        run.kill()
        assert run.finish().returncode == -9
        # no ControlPersist: the masters see their stdin close and exit, their sessions with them
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in masters), 15,
                   what="the OpenSSH masters to end with mdsl")
        wait_until(lambda: not b.connection_pids(), 15, what="b's sessions to end")
        stale = [p for p in os.listdir(tmp) if p.startswith("mdsl-ssh-")]
        assert stale  # SIGKILL left its control dirs behind (the sockets are gone with the masters)

        r = subprocess.run([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sha256(b.root / "copy3.bin") == sha256(blobs[3])
        assert os.listdir(tmp) == [], os.listdir(tmp)  # its own dirs closed, the killed run's swept
        assert not _masters(str(tmp))
    finally:
        if run.running:
            run.kill()
            run.finish()
        for p in masters + _masters(str(tmp)):
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        subprocess.run(["pkill", "-f", marker], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_more_bulk_copies_at_once_than_one_connection_takes(_ssh_daemons, e2e_base, ssh_hosts, tmp_path):
    """A host whose sshd takes OpenSSH's default 10 sessions per connection (MaxSessions): 12 copies at once
    from it all land, those past MUX_SESSIONS on connections of their own (the ssh client would fall back
    to its own connection when the master's session is refused; mdsl does not ask)."""
    import tempfile

    from hosts import SshHost
    from reliability_helpers import host_decl, write_known_hosts

    class TenSessions(SshHost):
        def _write_config(self) -> None:
            super()._write_config()
            text = self.config_path.read_text()
            assert "MaxSessions 64" in text
            self.config_path.write_text(text.replace("MaxSessions 64", "MaxSessions 10"))

    confdir = Path(tempfile.mkdtemp(prefix="127.0.0.5-", dir=e2e_base / "ssh"))
    confdir.chmod(0o755)
    c = TenSessions("c", "127.0.0.5", confdir, e2e_base / "hosts" / "127.0.0.5", _ssh_daemons.authorized_keys)
    c.start()
    try:
        b = ssh_hosts.b
        n = 12
        blobs = []
        for k in range(n):
            blob = c.root / f"wide{k}.bin"
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(os.urandom((16 << 20) + k))
            blobs.append(blob)
        known = write_known_hosts(tmp_path / "known_hosts", c, b)
        files = "\n".join(f'file w{k} on c {{ path = "{blobs[k]}" }}' for k in range(n))
        copies = "\n".join(f'    transfer w{k} to b:"{b.root}/wide{k}.bin"' for k in range(n))
        plan = tmp_path / "wide.plan"
        plan.write_text(f"""
plan "wide"
{host_decl(_ssh_daemons, c, known)}
{host_decl(_ssh_daemons, b, known)}
{files}
steps {{
  parallel {{
{copies}
  }}
}}
""")
        r = mdsl("apply", "--yes", str(plan), env={**os.environ, "MDSL_STREAM": "openssh"})
        assert r.returncode == 0, r.stdout + r.stderr
        for k in range(n):
            assert sha256(b.root / f"wide{k}.bin") == sha256(blobs[k])
        from mdsl.run.openssh import MUX_SESSIONS

        # the Fabric connection, the master, and connections of their own for the copies past its sessions
        assert 2 <= _accepted(c) <= 2 + n - MUX_SESSIONS
    finally:
        c.stop()
