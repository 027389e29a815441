"""SQLite moves end to end on local hosts (issue #17): the restored file belongs to the declared owner,
WAL-mode databases leave no `-wal`/`-shm` litter, and a source with a hot journal is dumped."""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
import textwrap

import pytest


def _apply(plan, cwd):
    env = dict(os.environ, MDSL_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def _move_plan(tmp_path, owner: str = "") -> str:
    return textwrap.dedent(f'''\
        host a {{ local = true }}
        host b {{ local = true }}
        sqlite old_db on a {{ path = "{tmp_path}/old/app.db" }}
        sqlite new_db on b {{ path = "{tmp_path}/new/data/app.db" {owner} fresh = true }}
        steps {{
          dump old_db to a:"{tmp_path}/old/app.bak"
          transfer a:"{tmp_path}/old/app.bak" to b:"{tmp_path}/new/app.bak"
          restore b:"{tmp_path}/new/app.bak" into new_db
        }}
        ''')


def _wal_source(path):
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table t(x)")
    conn.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    conn.commit()
    conn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI and this suite run as root)")
def test_a_restored_database_belongs_to_its_owner_and_leaves_no_litter(tmp_path):
    _wal_source(tmp_path / "old" / "app.db")
    plan = tmp_path / "move.plan"
    plan.write_text(_move_plan(tmp_path, 'owner = "nobody:nogroup"  mode = "0640"'))
    r = _apply(plan, tmp_path)
    assert r.returncode == 0, r.stderr
    db = tmp_path / "new" / "data" / "app.db"
    nobody = pwd.getpwnam("nobody").pw_uid
    assert db.stat().st_uid == nobody and oct(db.stat().st_mode & 0o777) == "0o640"
    assert (tmp_path / "new" / "data").stat().st_uid == nobody  # made for it: the app creates -wal/-shm there
    assert sorted(os.listdir(tmp_path / "new" / "data")) == ["app.db"]
    assert sorted(os.listdir(tmp_path / "new")) == ["app.bak", "data"]
    assert sorted(os.listdir(tmp_path / "old")) == ["app.bak", "app.db"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from t").fetchone() == (1000,)


def test_a_source_with_a_hot_journal_is_rolled_back_and_dumped(tmp_path):
    source = tmp_path / "old" / "app.db"
    source.parent.mkdir(parents=True)
    with sqlite3.connect(source) as conn:
        conn.execute("create table t(x)")
        conn.executemany("insert into t values (?)", [(i,) for i in range(100)])
    # A writer killed mid-commit: its rollback journal stays behind, hot.
    subprocess.run([sys.executable, "-c", textwrap.dedent(f'''
        import os, signal, sqlite3
        conn = sqlite3.connect({str(source)!r}, isolation_level=None)
        conn.execute("pragma cache_size=1")
        conn.execute("begin")
        conn.executemany("insert into t values (?)", [("x" * 500,) for _ in range(2000)])
        os.kill(os.getpid(), signal.SIGKILL)
        ''')], check=False)
    assert (tmp_path / "old" / "app.db-journal").stat().st_size > 0
    plan = tmp_path / "move.plan"
    plan.write_text(_move_plan(tmp_path, 'owner = "root:root"'))
    r = _apply(plan, tmp_path)
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "new" / "data" / "app.db") as conn:
        assert conn.execute("select count(*) from t").fetchone() == (100,)  # the torn commit rolled back


def test_a_restore_without_owner_is_h302_on_other_machines(tmp_path):
    plan = tmp_path / "remote.plan"
    plan.write_text(_move_plan(tmp_path).replace("host b { local = true }", 'host b { ssh = "root@192.0.2.1" }'))
    env = dict(os.environ, MDSL_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "mdsl", "check", str(plan)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert "warning[H302]: `restore` into new_db, which has no `owner`" in r.stdout, r.stdout


def test_a_stop_that_did_not_stop_is_caught_before_the_backup(tmp_path):
    source = tmp_path / "old" / "app.db"
    _wal_source(source)
    # the app "stopped" by a stop command that did nothing: it still holds the database open
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f'''
        import sqlite3, sys, time
        conn = sqlite3.connect({str(source)!r})
        conn.execute("select count(*) from t").fetchone()
        print("open", flush=True)
        time.sleep(60)
        ''')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        plan = tmp_path / "move.plan"
        plan.write_text(_move_plan(tmp_path, 'owner = "root:root"').replace(
            "steps {", 'service old_app on a { start = "true"  stop = "true"  status = "false"  writes = [old_db] }\n'
                       'steps {\n  stop old_app'))
        r = _apply(plan, tmp_path)
        assert r.returncode == 1, r.stderr
        assert f"{source} is still open by " in r.stderr and f"(pid {holder.pid}) after old_app stopped" in r.stderr
        assert not (tmp_path / "old" / "app.bak").exists()
    finally:
        holder.kill()
        holder.wait()
