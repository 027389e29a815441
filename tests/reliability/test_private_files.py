"""Files mdsl makes hold every user's data (a dump, an archive, their `.part`s) or its own
record (the journal, the lock): none is readable by other users, whatever the operator's
umask. This is the local backend; tests/e2e/test_faults.py checks the same on both SSH ends.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _plan(root: Path) -> Path:
    src = root / "src"
    (src / "files" / "sub").mkdir(parents=True)
    for i in range(50):
        (src / "files" / "sub" / f"f{i}").write_bytes(os.urandom(40_000))
    db = sqlite3.connect(src / "app.db")
    db.execute("create table t (v text)")
    db.executemany("insert into t values (?)", [(str(i),) for i in range(5000)])
    db.commit()
    db.close()
    (src / "env").write_text("SECRET=1\n")
    plan = root / "private.plan"
    plan.write_text(f"""
host here {{ local = true }}
sqlite db on here {{ path = "{src}/app.db" }}
dir files on here {{ path = "{src}/files" }}
file env on here {{ path = "{src}/env"  secret = true }}
steps {{
  dump db to here:"{root}/out/deep/app.db.bak"
  archive files to here:"{root}/out/files.tar.gz"
  transfer here:"{root}/out/files.tar.gz" to here:"{root}/in/files.tar.gz"
  transfer env to here:"{root}/in/env"
}}
""")
    return plan


def test_dumps_archives_parts_and_journal_are_private_under_a_loose_umask(tmp_path):
    plan = _plan(tmp_path)
    seen: dict = {}
    stop = threading.Event()

    def watch():  # the .part files too, while they exist
        while not stop.is_set():
            for p in (tmp_path / "out").rglob("*") if (tmp_path / "out").exists() else ():
                try:
                    seen[str(p)] = stat.S_IMODE(p.stat().st_mode)
                except FileNotFoundError:
                    pass
            for p in (tmp_path / "in").rglob("*") if (tmp_path / "in").exists() else ():
                try:
                    seen[str(p)] = stat.S_IMODE(p.stat().st_mode)
                except FileNotFoundError:
                    pass

    t = threading.Thread(target=watch)
    t.start()
    try:
        r = subprocess.run([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], cwd=REPO, umask=0o022,
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stdout + r.stderr
    for p in [tmp_path / "out", tmp_path / "out" / "deep", tmp_path / "in", tmp_path / ".mdsl",
              *(tmp_path / "out").rglob("*"), *(tmp_path / "in").rglob("*"), *(tmp_path / ".mdsl").iterdir()]:
        seen[str(p)] = stat.S_IMODE(p.stat().st_mode)
    loose = {p: oct(m) for p, m in seen.items() if m & 0o077}
    assert not loose, loose
    assert any(p.endswith(".part") for p in seen) or len(seen) >= 8, sorted(seen)
