"""Preflight proves every source before the first step (issue #16): a missing dir, file or SQLite
database, or a wrong PostgreSQL database name, stops the run before anything changed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest


def _apply(plan, cwd):
    env = dict(os.environ, MDSL_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def _plan(tmp_path, decl: str, step: str):
    marker = tmp_path / "MARKER"
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    plan = tmp_path / "move.plan"
    plan.write_text(f'''host a {{ local = true }}
host b {{ local = true }}
{decl}
steps {{
  run a "touch {marker}"
  {step}
}}
''')
    return plan, marker


CASES = {
    "dir": (lambda t: f'dir old_files on a {{ path = "{t}/old/files" }}\n'
                      f'dir new_files on b {{ path = "{t}/new/files"  fresh = true }}',
            "sync old_files to new_files", "does not exist"),
    "file": (lambda t: f'file old_env on a {{ path = "{t}/old/.env"  secret = true }}',
             'transfer old_env to b:"{t}/new/.env"', "does not exist"),
    "sqlite": (lambda t: f'sqlite old_db on a {{ path = "{t}/old/app.db" }}',
               'dump old_db to a:"{t}/old/app.bak"', "does not exist"),
    "not-sqlite": (lambda t: f'sqlite old_db on a {{ path = "{t}/old/app.db" }}',
                   'dump old_db to a:"{t}/old/app.bak"', "is not a readable SQLite database"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_missing_source_stops_the_run_before_the_first_step(tmp_path, case):
    decl, step, says = CASES[case]
    plan, marker = _plan(tmp_path, decl(tmp_path), step.format(t=tmp_path))
    if case == "not-sqlite":
        (tmp_path / "old" / "app.db").write_text("these are notes, not a database\n")
    r = _apply(plan, tmp_path)
    assert r.returncode != 0
    assert says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "sqlite3.OperationalError" not in r.stderr
    assert "nothing was stopped or changed" in r.stderr
    assert not marker.exists(), "the step before the one that reads the source ran"


def test_an_empty_source_dir_is_a_warning_and_a_present_source_runs(tmp_path):
    plan, marker = _plan(tmp_path, f'dir old_files on a {{ path = "{tmp_path}/old/files" }}\n'
                                   f'dir new_files on b {{ path = "{tmp_path}/new/files"  fresh = true }}',
                         "sync old_files to new_files")
    (tmp_path / "old" / "files").mkdir()
    r = _apply(plan, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning[P408]" in r.stderr and "is empty" in r.stderr
    assert marker.exists()


def test_a_source_made_by_an_earlier_step_is_not_asked_for(tmp_path):
    db = tmp_path / "old" / "app.db"
    plan, marker = _plan(tmp_path, f'sqlite old_db on a {{ path = "{db}" }}',
                         f'dump old_db to a:"{tmp_path}/old/app.bak"')
    create = f'python3 -c \'import sqlite3; sqlite3.connect(\\"{db}\\").execute(\\"create table t(x)\\")\''
    text = plan.read_text().replace(f'run a "touch {marker}"', f'run a "touch {marker} && {create}" writes = [old_db]')
    plan.write_text(text)
    r = _apply(plan, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "old" / "app.bak").exists()
    with sqlite3.connect(tmp_path / "old" / "app.bak") as conn:
        assert conn.execute("select count(*) from t").fetchone() == (0,)
