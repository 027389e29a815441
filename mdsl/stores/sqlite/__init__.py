"""SQLite as a store kind: one database file, copied with SQLite's online backup API.

Its commands (backup, checked restore, drop, the preflight probe) are in
`commands.py`.
"""

from __future__ import annotations

from attrs import frozen

from mdsl.model import Database
from mdsl.stores.base import Binding, StoreKind


@frozen
class Sqlite(Database):
    """A SQLite database file."""

    path: str = ""
    kind = "sqlite"


def bind(b: Binding) -> Sqlite:
    """A `sqlite` declaration: its absolute path."""
    return Sqlite(path=b.path(), **b.common())


STORE = StoreKind(
    kind="sqlite",
    resource=Sqlite,
    title="SQLite",
    artifact="a SQLite backup",
    schema={"path": ("str", True), "fresh": ("bool", False)},
    bind=bind,
)
