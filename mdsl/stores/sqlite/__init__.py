"""SQLite as a store kind: one database file, copied with SQLite's online backup API.

Its commands (backup, checked restore, drop, the preflight probe) are in
`commands.py`.
"""

from __future__ import annotations

from typing import Optional

from attrs import frozen

from mdsl.model import Database
from mdsl.stores.base import Binding, StoreKind


@frozen
class Sqlite(Database):
    """A SQLite database file."""

    path: str = ""
    owner: Optional[str] = None  # user:group the restored file (and a directory made for it) belong to
    mode: Optional[str] = None  # the restored file's mode, e.g. "0640"
    kind = "sqlite"


def bind(b: Binding) -> Sqlite:
    """A `sqlite` declaration: its absolute path."""
    return Sqlite(path=b.path(), owner=b.attrs.get("owner"), mode=b.attrs.get("mode"), **b.common())


STORE = StoreKind(
    kind="sqlite",
    resource=Sqlite,
    title="SQLite",
    artifact="a SQLite backup",
    schema={"path": ("str", True), "owner": ("str", False), "mode": ("str", False), "fresh": ("bool", False)},
    bind=bind,
    is_file=True,
    companions=("-wal", "-shm", "-journal"),
)
