"""Helpers for the runner tests: a private copy of the demo, apply with captured output, cleanup."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from mdsl.run.apply import ApplyOptions, apply_plan

REPO = Path(__file__).resolve().parents[2]
DEMO_ROOT = "/tmp/mdsl-demo"


def demo_copy(tmp_path: Path):
    """plans/demo.plan and plans/demo/ copied under tmp_path, its folders moved to tmp_path/demo."""
    plans = tmp_path / "plans"
    shutil.copytree(REPO / "plans" / "demo", plans / "demo")
    root = tmp_path / "demo"
    text = (REPO / "plans" / "demo.plan").read_text().replace(DEMO_ROOT, str(root))
    plan = plans / "demo.plan"
    plan.write_text(text)
    return plan, root


def edit(plan: Path, old: str, new: str) -> None:
    """Replace text in a plan (exactly once)."""
    text = plan.read_text()
    assert text.count(old) == 1, old
    plan.write_text(text.replace(old, new))


def apply(plan, *, yes=True, ask=None, **opts):
    """Run apply in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    kw = {"out": out, "err": err, "progress": False}
    if ask is not None:
        kw["ask"] = ask
    code = apply_plan(ApplyOptions(plan=str(plan), yes=yes, log_format="json", **opts), **kw)
    return code, out.getvalue(), err.getvalue()


def app_running(root: Path) -> bool:
    """The demo app's status command says it runs there."""
    return subprocess.run([sys.executable, str(REPO / "plans" / "demo" / "app.py"), "status", str(root)],
                          stdout=subprocess.DEVNULL).returncode == 0


def demo_rows(db: Path) -> list:
    """The demo app's notes (id, body, at) in the SQLite file `db`, read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("select id, body, at from notes order by id").fetchall()
    finally:
        con.close()


def stop_demo(root: Path) -> None:
    """Stop the demo app wherever a test may have started it."""
    for sub in ("old", "new"):
        d = root / sub
        if d.is_dir():
            subprocess.run([sys.executable, str(REPO / "plans" / "demo" / "app.py"), "stop", str(d)],
                           stdout=subprocess.DEVNULL)


def tree_digest(path: Path) -> dict:
    """relative path -> sha256 of every file under path."""
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
