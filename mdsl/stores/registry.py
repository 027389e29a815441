"""Every store kind mdsl knows: adding one is its package under mdsl/stores/ and one line here."""

from __future__ import annotations

import importlib
from typing import Dict, List

from mdsl.model import Database
from mdsl.stores import mysql, postgres, redis, sqlite
from mdsl.stores.base import StoreKind

STORES: Dict[str, StoreKind] = {store.kind: store for store in (
    postgres.STORE,
    sqlite.STORE,
    mysql.STORE,
    redis.STORE,
)}


def store_of(db: Database) -> StoreKind:
    """The kind a bound database belongs to."""
    return STORES[db.kind]


def commands_of(db: Database):
    """The `commands` module of a database's kind (dump, restore, drop): for compile only."""
    return importlib.import_module(f"mdsl.stores.{db.kind}.commands")


def probes_of(db: Database):
    """The `probes` module of a database's kind (tools, login, versions): for preflight only."""
    return importlib.import_module(f"mdsl.stores.{db.kind}.probes")


def logins_of(db: Database):
    """The `logins` module of a database's kind (create an app's login, prove it): for compile and preflight."""
    return importlib.import_module(f"mdsl.stores.{db.kind}.logins")


def replication_of(db: Database):
    """The `replication` module of a database's kind (`StoreKind.replicates`): live and final pass, preflight."""
    return importlib.import_module(f"mdsl.stores.{db.kind}.replication")


def all_probes() -> List:
    """Every kind's `probes` module, in registry order."""
    return [importlib.import_module(f"mdsl.stores.{kind}.probes") for kind in STORES]
