"""The store registry: every kind brings its whole interface, and the checker, the compiler and
apply agree on what each kind can do."""

from __future__ import annotations

import importlib
import inspect
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mdsl.stores.base import StoreCommands, StoreLogins, StoreProbes
from mdsl.stores.registry import STORES

ROOT = Path(__file__).resolve().parents[2]


def _members(protocol) -> set:
    return {n for n in vars(protocol) if not n.startswith("_")} | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("kind", sorted(STORES))
def test_every_store_kind_has_its_commands_and_probes(kind):
    store = STORES[kind]
    assert store.kind == kind and store.resource.kind == kind
    for layer, protocol in (("commands", StoreCommands), ("probes", StoreProbes)):
        module = importlib.import_module(f"mdsl.stores.{kind}.{layer}")
        missing = {n for n in _members(protocol) if not hasattr(module, n)}
        assert missing == set(), f"mdsl.stores.{kind}.{layer} lacks {sorted(missing)}"
        for name in _members(protocol):
            if inspect.isfunction(getattr(protocol, name, None)):
                want = [p for p in inspect.signature(getattr(protocol, name)).parameters if p != "self"]
                assert list(inspect.signature(getattr(module, name)).parameters) == want, (layer, name)


@pytest.mark.parametrize("kind", sorted(k for k, s in STORES.items() if s.logins))
def test_every_kind_with_logins_has_its_logins_module(kind):
    module = importlib.import_module(f"mdsl.stores.{kind}.logins")
    for name in _members(StoreLogins):
        want = [p for p in inspect.signature(getattr(StoreLogins, name)).parameters if p != "self"]
        assert list(inspect.signature(getattr(module, name)).parameters) == want, name


def _mdsl(*args, cwd):
    env = dict(os.environ, MDSL_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "mdsl", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_drop_of_a_sqlite_database_checks_compiles_and_runs(tmp_path):
    # Was: check said "no findings", then `mdsl plan` died on 'Sqlite' object has no attribute 'bin'.
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t(x)")
    plan = tmp_path / "drop.plan"
    plan.write_text(f'''host a {{ local = true }}
sqlite old_db on a {{ path = "{db}" }}
sqlite new_db on a {{ path = "{tmp_path}/new.db"  fresh = true }}
steps {{
  dump old_db to a:"{tmp_path}/old.bak"
  restore a:"{tmp_path}/old.bak" into new_db
  verify run a "sqlite3 {tmp_path}/new.db 'select count(*) from t'"
  drop old_db
}}
''')
    checked = _mdsl("check", str(plan), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shown = _mdsl("plan", str(plan), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"rm -f -- {db} {db}-wal {db}-shm {db}-journal" in shown.stdout
    applied = _mdsl("apply", "--yes", str(plan), cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert not db.exists()
    assert (tmp_path / "old.bak").stat().st_size > 0
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert conn.execute("select count(*) from t").fetchone() == (0,)


def test_dump_options_of_another_kind_are_a_check_error(tmp_path):
    # Was: check passed, then compile failed with "a SQLite dump takes no `format`...".
    plan = tmp_path / "opts.plan"
    plan.write_text('''host a { local = true }
sqlite old_db on a { path = "/srv/app/db.sqlite3" }
steps {
  dump old_db to a:"/srv/app/db.bak" format = directory jobs = 4
}
''')
    r = _mdsl("check", str(plan), cwd=tmp_path)
    assert r.returncode == 2  # errors in the plan itself
    assert "`dump` of a sqlite database has no option `format`" in r.stdout
    assert "`dump` of a sqlite database has no option `jobs`" in r.stdout
    assert "is for postgres databases" in r.stdout
    assert f"{plan}:4:" in r.stdout


def test_an_unknown_declaration_kind_is_reported_with_a_suggestion(tmp_path):
    plan = tmp_path / "kind.plan"
    plan.write_text('host a { local = true }\npostgress db on a { database = "app" }\n')
    r = _mdsl("check", str(plan), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and f"{plan}:2:1" in r.stdout
    assert "unknown kind `postgress`" in r.stdout and "did you mean `postgres`?" in r.stdout
