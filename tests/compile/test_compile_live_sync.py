"""`sync ... live` compiles to the same rsync as `sync`, plus `--delete` (a live pass and its final
pass mirror the source) and, for the live pass only, rsync's exit 24 ("some source files vanished")
taken as success. The commands are run with the real rsync on the local backend."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.run.rsync_meter import RsyncMeter
from mdsl.compile.actions import Shell
from mdsl.run.executor import Executor
from mdsl.run.secrets import SecretStore
from mdsl.run.local import LocalBackend
from mdsl.syntax.parser import parse_text

HOSTILE = "it's $(touch pwned) `touch pwned`; x"


def q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compiled(text: str):
    bound = resolve(parse_text(text, "live.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def plan_text(src: str, dst: str, steps: str, other: str = "/tmp/never-used") -> str:
    return f"""
host a {{ local = true }}
host b {{ local = true }}
dir src on a {{ path = {q(src)} }}
dir dst on b {{ path = {q(dst)} fresh = true }}
dir other on b {{ path = {q(other)} fresh = true }}
service app on a {{ start = "true" stop = "true" writes = [src] }}
steps {{
{steps}
}}
"""


def shell(cp, n: int) -> Shell:
    (action,) = list(cp.leaves())[n].actions
    assert isinstance(action, Shell)
    return action


def executor(cp, cwd):
    return Executor({name: LocalBackend(h, cwd=str(cwd)) for name, h in cp.bound.hosts.items()},
                    SecretStore({}, str(cwd)))


def tree(root: Path) -> dict:
    """{relative path: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_live_pass_and_final_pass_mirror_and_only_the_live_pass_accepts_exit_24():
    cp = compiled(plan_text("/srv/src", "/srv/dst", """
  sync src to other
  sync src to dst live exclude "cache"
  stop app
  sync src to dst exclude "cache"
  sync src to other
"""))
    before, live, _, final, after = (shell(cp, i) for i in range(5))
    text = {k: s.command.render() for k, s in (("before", before), ("live", live), ("final", final),
                                                 ("after", after))}
    assert "--delete" not in text["before"] and "--delete" not in text["after"]  # another pair: plain merge
    assert "rsync -a --protect-args --info=progress2 --stats --delete --exclude=/cache" in text["live"]
    assert "rsync -a --protect-args --info=progress2 --stats --delete --exclude=/cache" in text["final"]
    assert '[ "$rc" -eq 24 ]' in text["live"] and "24" not in text["final"]
    assert live.show_output and not final.show_output  # the vanished-files note is shown
    assert live.what.endswith("(live pass)") and final.what.endswith("(final pass)")
    assert list(cp.leaves())[1].fingerprint != list(cp.leaves())[3].fingerprint


def test_a_sync_before_the_live_pass_does_not_mirror():
    cp = compiled(plan_text("/srv/src", "/srv/dst", """
  sync src to dst
  sync src to dst live
  stop app
  sync src to dst
"""))
    assert "--delete" not in shell(cp, 0).command.render()
    assert "--delete" in shell(cp, 1).command.render() and "--delete" in shell(cp, 3).command.render()


def test_final_pass_copies_changes_and_deletes_what_the_source_lost(tmp_path):
    src, dst = tmp_path / f"src {HOSTILE}", tmp_path / f"dst {HOSTILE}"
    (src / "media" / "deep").mkdir(parents=True)
    (src / "cache").mkdir()
    for i in range(20):
        (src / "media" / "deep" / f"m{i}.bin").write_bytes(os.urandom(1000 + i))
    (src / "journal.log").write_text("1\n")
    (src / "cache" / "c.bin").write_bytes(b"cache")
    cp = compiled(plan_text(str(src), str(dst), """
  sync src to dst live exclude "cache"
  stop app
  sync src to dst exclude "cache"
"""))
    ex = executor(cp, tmp_path)
    res = ex.run(shell(cp, 0).command, timeout=60)
    assert res.ok, res.stderr
    meter = RsyncMeter()
    meter.feed(res.stdout.encode())
    meter.close()
    assert meter.output() == ""  # nothing vanished: no note (rsync's progress and statistics are not notes)
    (dst / "cache").mkdir()
    (dst / "cache" / "rebuilt.bin").write_bytes(b"made on the target")  # excluded: neither copied nor deleted
    # between the passes the app deletes, creates and appends
    for i in range(0, 20, 3):
        (src / "media" / "deep" / f"m{i}.bin").unlink()
    (src / "media" / "new.bin").write_bytes(b"new")
    (src / "journal.log").write_text("1\n2\n")
    res = ex.run(shell(cp, 2).command, timeout=60)
    assert res.ok, res.stderr
    want = {k: v for k, v in tree(src).items() if not k.startswith("cache/")}
    got = {k: v for k, v in tree(dst).items() if not k.startswith("cache/")}
    assert got == want
    assert not (dst / "media" / "deep" / "m0.bin").exists()
    assert (dst / "cache" / "rebuilt.bin").read_bytes() == b"made on the target"
    assert not (dst / "cache" / "c.bin").exists()
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


def _vanishing_run(ex, cmd, src: Path, dst: Path):
    """Run an rsync of src (a big file, then `zz-*` files) and delete the `zz-*` files once the big
    file's temp file appears in dst: rsync has listed them, and opens them only after the big file."""
    done = threading.Event()
    deleted = []

    def watch():
        while not done.is_set():
            if any(p.name.startswith(".big.bin.") for p in dst.iterdir()) if dst.exists() else False:
                for p in sorted(src.glob("zz-*")):
                    p.unlink()
                    deleted.append(p.name)
                return
            time.sleep(0.001)

    t = threading.Thread(target=watch)
    t.start()
    try:
        res = ex.run(cmd, timeout=120)
    finally:
        done.set()
        t.join()
    return res, deleted


@pytest.mark.parametrize("live", [True, False], ids=["live", "final"])
def test_vanished_source_files_are_success_only_for_a_live_pass(tmp_path, live):
    src, dst = tmp_path / "src", tmp_path / "dst"
    steps = "  sync src to dst live" if live else "  sync src to dst"
    cp = compiled(plan_text(str(src), str(dst), steps))
    cmd = shell(cp, 0).command
    ex = executor(cp, tmp_path)
    big = os.urandom(1 << 20) * 64  # 64 MiB: copying it takes far longer than deleting the rest
    for _attempt in range(5):  # the deletion must land after rsync listed the files and before it reads them
        for d in (src, dst):
            if d.exists():
                for p in d.iterdir():
                    p.unlink()
        src.mkdir(exist_ok=True)
        (src / "big.bin").write_bytes(big)
        for i in range(10):
            (src / f"zz-{i}.txt").write_text(f"{i}\n")
        res, deleted = _vanishing_run(ex, cmd, src, dst)
        if deleted and "vanished" in res.stderr:
            break
    else:
        pytest.fail("could not make rsync see a vanished file in 5 attempts")
    try:
        if live:
            assert res.ok, (res.exit, res.stderr)
            assert "some source files vanished during this live pass (rsync exit 24)" in res.stdout
            assert (dst / "big.bin").stat().st_size == len(big)
        else:
            assert res.exit == 24, (res.exit, res.stderr)
    finally:  # pytest keeps recent tmp dirs: do not leave 128 MiB in them
        for p in (src / "big.bin", dst / "big.bin"):
            p.unlink(missing_ok=True)


def test_final_pass_recopies_a_file_rewritten_in_place_with_the_same_size_and_mtime(tmp_path):
    """The hole of size+mtime comparison: a same-size in-place rewrite within one tick of the kernel's
    coarse file clock keeps the mtime rsync saw. The live pass marks every file modified near or during
    it (mtime 0 on the target), so the final pass re-copies it; an old untouched file is left alone."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    cp = compiled(plan_text(str(src), str(dst), "  sync src to dst live\n  stop app\n  sync src to dst"))
    live, final = shell(cp, 0).command, shell(cp, 2).command
    ex = executor(cp, tmp_path)
    src.mkdir()
    (src / "old.txt").write_text("untouched\n")
    os.utime(src / "old.txt", ns=(10**18, 10**18))  # 2001: long before the pass
    db = src / "app.db"
    db.write_bytes(b"A" * 4096)
    seen = db.stat().st_mtime_ns
    assert ex.run(live, timeout=60).ok
    assert (dst / "app.db").read_bytes() == b"A" * 4096
    assert (dst / "app.db").stat().st_mtime_ns == 0  # marked: it changed near the live pass
    assert (dst / "old.txt").stat().st_mtime_ns == 10**18  # not marked: nothing to re-copy
    db.write_bytes(b"B" * 4096)  # rewritten in place, same size ...
    os.utime(db, ns=(seen, seen))  # ... and the same mtime (the coarse clock did not tick)
    assert ex.run(final, timeout=60).ok
    assert (dst / "app.db").read_bytes() == b"B" * 4096
    assert (dst / "app.db").stat().st_mtime_ns == seen
    assert tree(dst) == tree(src)
