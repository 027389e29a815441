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
