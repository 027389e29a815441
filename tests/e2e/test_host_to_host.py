"""Host-to-host copies over real sshd: `sync` (rsync from the source host to the target),
`transfer ... via = rsync` and `via = scp`, each checked on the real files afterwards."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
from pathlib import Path

from hosts import FileTree
from reliability_helpers import mdsl

REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sync_and_rsync_scp_transfers_between_two_ssh_hosts(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "system"
    FileTree.populate(src)
    (src / "cache" / "accounts").mkdir(parents=True, exist_ok=True)
    for i in range(30):
        (src / "cache" / "accounts" / f"avatar-{i}.png").write_bytes(os.urandom(2048 + i))
    (src / "name with spaces; and $(touch canary)").write_text("literal\n")
    blob = a.root / "media.bin"
    blob.write_bytes(os.urandom(3 << 20))
    before = FileTree.snapshot(src)

    plan = tmp_path / "h2h.plan"
    plan.write_text(f"""
plan "host to host"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
dir old_files on a {{ path = "{src}" }}
dir new_files on b {{ path = "{b.root}/system"  owner = "nobody:nogroup" }}
file media on a {{ path = "{blob}" }}
steps {{
  sync old_files to new_files
  transfer media to b:"{b.root}/by-rsync.bin" via = rsync
  transfer media to b:"{b.root}/by-scp.bin" via = scp
}}
""")
    r = mdsl("check", str(plan))
    assert r.returncode == 0, r.stdout + r.stderr
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, r.stdout + r.stderr

    after = FileTree.snapshot(b.root / "system")
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # same content, cache too
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    assert {(v[2], v[3]) for v in after.values()} == {(nobody, nogroup)}  # chowned to the declared owner
    assert FileTree.snapshot(src) == before  # the source is untouched
    for name in ("by-rsync.bin", "by-scp.bin"):
        assert sha256(b.root / name) == sha256(blob)
        assert not (b.root / (name + ".part")).exists()
    assert not list(a.root.rglob("canary")) and not list(b.root.rglob("canary")) and not Path("canary").exists()


def test_sync_into_a_remote_target_applies_its_mode(ssh_hosts, tmp_path):
    # issue 17 item 15: rsync -a gives the target dir the source's mode; the declared one wins, remote too
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "data"
    src.mkdir()
    (src / "note").write_text("x")
    src.chmod(0o755)
    plan = tmp_path / "mode.plan"
    plan.write_text(f"""
plan "mode of a remote target"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
dir old_files on a {{ path = "{src}" }}
dir new_files on b {{
  path = "{b.root}/data"
  mode = "0750"
}}
steps {{
  sync old_files to new_files
}}
""")
    r = mdsl("plan", str(plan))
    assert r.returncode == 0 and f"[b] $ chmod -- 0750 {b.root}/data" in r.stdout, r.stdout + r.stderr
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (b.root / "data" / "note").read_text() == "x"
    assert (b.root / "data").stat().st_mode & 0o7777 == 0o750
