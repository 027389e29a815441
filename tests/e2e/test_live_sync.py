"""`sync ... live` end to end over real sshd: the writer service keeps creating and appending files
while the live pass runs (and files vanish under it: rsync's exit 24, success for a live pass), the
plan stops the writer, and the final sync leaves the target equal to the source, file by file
(sha256), with the files deleted between the passes gone."""

from __future__ import annotations

import grp
import os
import pwd
import threading
import time

import pytest

from hosts import FileTree, plan_str
from reliability_helpers import human, mdsl, no_traceback, output, wait_until

pytestmark = pytest.mark.e2e

MiB = 1 << 20


def test_live_presync_then_final_sync_leaves_an_exact_copy(ssh_hosts, writer, tmp_path):
    src, dst = writer.files_dir, ssh_hosts.b.root / "public-system"
    src.mkdir(parents=True, exist_ok=True)
    # rsync sends a dir's files in name order: the early files arrive before the big one, the
    # writer's f-*.txt and journal.log after it, the zz-* files last.
    early = [f"0-early-{i:02d}.bin" for i in range(20)]
    late = [f"zz-late-{i:02d}.txt" for i in range(10)]
    for i, name in enumerate(early):
        (src / name).write_bytes(os.urandom(4096 + i))
    (src / "media" / "originals").mkdir(parents=True)
    for i in range(50):
        (src / "media" / "originals" / f"m{i}.png").write_bytes(os.urandom(2048 + 7 * i))
    (src / "a-big.bin").write_bytes(os.urandom(8 * MiB) * 12)  # keeps the live pass busy for a while
    for name in late:
        (src / name).write_text(name + "\n")

    writer.start()
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote files")

    plan = tmp_path / "presync.plan"
    plan.write_text(f"""
plan "live pre-sync"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
dir old_files on a {{ path = {plan_str(str(src))} }}
dir new_files on b {{ path = {plan_str(str(dst))}  owner = "nobody:nogroup"  fresh = true }}
{writer.plan_decl("old_app", "a", writes=["old_files"])}
steps {{
  presync: sync old_files to new_files live
  # mdsl: allow H301 "e2e: only the files move; the writer is not started anywhere else"
  stop old_app
  final: sync old_files to new_files
}}
""")
    r = mdsl("check", str(plan))
    assert r.returncode == 0, output(r)

    # While the live pass copies the big file, the app deletes files rsync already copied (the
    # final pass must delete them) and files it has listed but not read yet (they vanish: exit 24).
    seen = {}
    stop = threading.Event()

    def app_deletes():
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            if dst.exists() and any(p.name.startswith(".a-big.bin.") for p in dst.iterdir()):
                seen["early copied"] = all((dst / n).exists() for n in early)
                seen["writer files"] = len(writer.files())
                for name in early + late:
                    (src / name).unlink()
                return
            time.sleep(0.001)

    t = threading.Thread(target=app_deletes)
    t.start()
    try:
        r = mdsl("apply", "--yes", str(plan))
    finally:
        stop.set()
        t.join()
    no_traceback(output(r))
    assert r.returncode == 0, output(r)
    assert seen.get("early copied") is True, (seen, human(output(r)))
    assert "some source files vanished during this live pass (rsync exit 24)" in r.stdout, human(output(r))

    writer.track()
    assert writer.status() == 3, "the plan did not stop the writer"
    # the writer kept writing during and after the live pass: those files came with the final pass
    assert len(writer.files()) > seen["writer files"]

    want, got = FileTree.snapshot(src), FileTree.snapshot(dst)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()}, FileTree.diff(want, got)
    assert "journal.log" in got and set(writer.files()) <= set(got)
    for name in early + late:
        assert not (dst / name).exists() and not (src / name).exists()
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    assert {(v[2], v[3]) for v in got.values()} == {(nobody, nogroup)}  # chowned to the declared owner
    assert not list(dst.glob(".*.bin.*"))  # no rsync temp file left behind



def test_live_pass_marks_recently_changed_target_files_over_ssh(ssh_hosts, tmp_path):
    """The source pushes over ssh; the marking of the files changed near the live pass runs on the
    target through ssh, against the source's clock: a recent file gets mtime 0 there (the final pass
    re-copies it whatever its size and mtime), an old one keeps its mtime."""
    src, dst = ssh_hosts.a.root / "live-src", ssh_hosts.b.root / "live dst $(x)"
    src.mkdir(parents=True)
    (src / "old.txt").write_text("old\n")
    os.utime(src / "old.txt", ns=(10**18, 10**18))
    (src / "recent.db").write_bytes(b"x" * 4096)
    # written "during" the pass, whenever it starts (preflight and the copy's route take seconds first)
    soon = time.time_ns() + 3600 * 10**9
    os.utime(src / "recent.db", ns=(soon, soon))
    plan = tmp_path / "live-only.plan"
    plan.write_text(f"""
plan "live pass only"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
dir old_files on a {{ path = {plan_str(str(src))} }}
dir new_files on b {{ path = {plan_str(str(dst))} fresh = true }}
service app on a {{ start = "true" stop = "true" writes = [old_files] }}
steps {{
  # mdsl: allow H201 "e2e: the live pass alone, to look at what it leaves on the target"
  sync old_files to new_files live
}}
""")
    r = mdsl("apply", "--yes", str(plan))
    no_traceback(output(r))
    assert r.returncode == 0, output(r)
    assert (dst / "recent.db").read_bytes() == b"x" * 4096
    assert (dst / "recent.db").stat().st_mtime_ns == 0
    assert (dst / "old.txt").stat().st_mtime_ns == 10**18
