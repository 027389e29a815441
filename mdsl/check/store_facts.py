"""What the checker needs to know about each kind of database, in one place: the
walk and the rules ask these functions and never name a store kind themselves.
(The store registry, mdsl/stores/, is meant to answer them.)"""

from __future__ import annotations

from typing import Optional

from mdsl.syntax import ast as A

# What a `dump` writes, as the walk tracks it: a restore must read the same kind.
PG_DUMP, SQLITE_DUMP = "a PostgreSQL dump", "a SQLite backup"
_DUMP_ARTIFACT = {"postgres": PG_DUMP, "sqlite": SQLITE_DUMP}


def is_database(resource) -> bool:
    """True for data copied by `dump` and `restore`, not by `archive`, `sync` or `transfer`."""
    return resource.kind in _DUMP_ARTIFACT


def dump_artifact(db) -> str:
    """What a `dump` of database `db` writes (the artifact kind a `restore` into its kind reads)."""
    return _DUMP_ARTIFACT[db.kind]


def dump_format(db, step: A.Dump) -> Optional[str]:
    """The format `step` writes, for a kind with several (PostgreSQL: `custom` unless `format =`
    says otherwise); None for a kind with one. The walk follows it to the restore (H306)."""
    if db.kind != "postgres":
        return None
    opt = step.option("format")
    return opt.value.name if opt is not None and isinstance(opt.value, A.Ref) else "custom"


def jobs_allowed(db, fmt: str) -> bool:
    """True when a dump of `db` in format `fmt` can use `jobs` (pg_dump: the directory format only)."""
    return fmt == "directory"


def restorable(artifact: str, fmt: Optional[str]) -> bool:
    """False for a dump `restore` cannot read (PostgreSQL's plain format is SQL text for psql)."""
    return not (artifact == PG_DUMP and fmt == "plain")
