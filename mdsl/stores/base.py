"""What every store kind provides, at the two layers that use it.

`StoreKind` is what the resolver and the checker know (no commands): its
attribute schema, the options its `dump` and `restore` take, what the checker
calls its dump artifact, and how a declaration becomes a bound `Database`. Its
commands live in the kind's `commands` module (`StoreCommands`, loaded by
compile) and its preflight checks in `probes` (`StoreProbes`, loaded by run).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Protocol, Tuple

from attrs import frozen

from mdsl.findings import Finding
from mdsl.model import Database, normpath
from mdsl.syntax import ast as A

# attribute -> (type, required); types as the resolver knows them: str, int, bool, secret, names, strs, state
Schema = Mapping[str, Tuple[str, bool]]


class Binding:
    """One declaration being bound: its typed attributes, and a way to report what is wrong with them."""

    def __init__(self, decl: A.ResourceDecl, attrs: Dict[str, object],
                 report: Callable[[str, A.Span, Optional[str]], None]):
        self.decl, self.attrs, self._report = decl, attrs, report

    @property
    def name(self) -> str:
        """The declared name."""
        return self.decl.name.name

    def common(self) -> Dict[str, object]:
        """The attributes every resource has: name, host, fresh, span."""
        return dict(name=self.name, host=self.decl.host.name, fresh=bool(self.attrs.get("fresh", False)),
                    span=self.decl.span)

    def span_of(self, key: str) -> A.Span:
        """Where attribute `key` is written (the declaration's name when it is not)."""
        for attr in self.decl.attrs:
            if attr.key.name == key:
                return attr.span
        return self.decl.name.span

    def error(self, message: str, key: Optional[str] = None, help: Optional[str] = None) -> None:
        """Report an E106 at attribute `key` (or at the declaration's name)."""
        self._report(message, self.span_of(key) if key else self.decl.name.span, help)

    def path(self, key: str = "path") -> str:
        """An absolute path attribute, normalised; relative paths and NUL/newline are reported."""
        value = self.attrs.get(key, "")
        if value and not value.startswith("/"):
            self.error(f"`{key}` of `{self.name}` must be absolute", key, "write the full path, starting with `/`")
        if "\0" in value or "\n" in value:
            self.error(f"`{key}` of `{self.name}` contains a NUL or newline", key)
        return normpath(value)

    def tcp(self) -> Tuple[Optional[str], Optional[int]]:
        """(address, port) of `tcp = "address:port"`, or (None, None)."""
        if "tcp" not in self.attrs:
            return None, None
        address, _, port = self.attrs["tcp"].rpartition(":")
        if not address or not port.isdigit() or not 0 < int(port) < 65536:
            self.error(f'`tcp` of `{self.name}` must look like "address:port"', "tcp")
            return None, None
        return address, int(port)


@frozen
class StoreKind:
    """One kind of database as the resolver and the checker see it."""

    kind: str  # the plan's keyword: `postgres db on host { ... }`
    resource: type  # its bound declaration (a Database subclass)
    title: str  # for messages: "PostgreSQL"
    artifact: str  # what the checker calls what its `dump` writes: "a PostgreSQL dump"
    schema: Schema
    bind: Callable[[Binding], Database]
    dump_options: Mapping[str, str] = {}  # option -> type, beyond what every step takes
    restore_options: Mapping[str, str] = {}
    # The format a `dump` step writes (None when the kind has one only); the checker follows it to the restore.
    dump_format: Callable[[A.Dump], Optional[str]] = lambda step: None
    # The database is a file on its host that the app opens itself: a restore must leave it owned by the
    # app's user (`owner`, `mode`; H302 when a restore target declares none).
    is_file: bool = False
    # Files beside a file database that belong to it (SQLite: `-wal`, `-shm`, `-journal`): suffixes of its path.
    # A dir holding the database holds them as the store's piece too, carried by its dump and restore.
    companions: Tuple[str, ...] = ()
    # The role that owns what a restore creates, when the kind's objects have owners (PostgreSQL:
    # pg_restore --no-owner makes them the restoring role's); None when they have none, or it is not known.
    restore_owner: Callable[[Database], Optional[str]] = lambda db: None
    # The kind has database logins (`login NAME on DB`): its package has a `logins` module (mdsl/stores/logins.py).
    logins: bool = False
    # The kind can follow a running source into a target (`replicate DB to DB live`, then the final pass):
    # its package has a `replication` module (commands and preflight, mdsl/stores/postgres/replication.py).
    replicates: bool = False


@frozen
class DatabaseProbe:
    """What preflight learned by logging in to a database as declared."""

    ok: bool
    server_version: Optional[int] = None  # e.g. 150005 for PostgreSQL 15.5
    size: Optional[int] = None  # bytes, when the kind can tell
    error: str = ""
    help: str = ""
    skipped: bool = False  # the client program is missing: P402 says so
    missing: bool = False  # logged in, but the database itself does not exist (yet)


class StoreCommands(Protocol):
    """The interface of a kind's `commands` module (compile): these are its functions."""

    def dump(self, ctx, step: A.Dump, db: Database, host: str, path: str): ...  # -> (actions, destinations)

    def restore(self, ctx, step: A.Restore, db: Database, host: str, path: str): ...  # -> (actions, destinations)

    def drop(self, ctx, step: A.Drop, db: Database): ...  # -> actions


class StoreProbes(Protocol):
    """The interface of a kind's `probes` module (preflight): these are its functions and constants."""

    CLIENTS: Tuple[str, ...]  # its client programs (P402 says how to point at them: TOOL_HELP)
    PACKAGES: Mapping[str, str]  # program -> Debian/Ubuntu package, for P402's help
    TOOL_HELP: str

    def tool_word(self, db: Database, name: str) -> str: ...  # the program as preflight looks it up

    # Log in as declared (P406); `run(command) -> Result` runs a command on the database's host.
    # `missing` when the login works but the database does not exist (a restore creates it).
    def probe(self, ctx, run, db: Database) -> DatabaseProbe: ...

    def auth_text(self, db: Database) -> str: ...  # how it logs in, for messages

    def version_words(self, db: Database, dumps: bool, restores_archive: bool) -> List[str]: ...

    def dump_findings(self, db, step, version, probe_of) -> List[Finding]: ...  # P403 for a dump

    def pair_findings(self, source, target, restore_step, plain, version, probe_of) -> List[Finding]: ...


class StoreLogins(Protocol):
    """The interface of a kind's `logins` module (kinds with `StoreKind.logins`): an app's own login."""

    # (actions before, actions after) the restore into `db` that make `login` with the grants `like` has on
    # `like_db` (compile).
    def restore_actions(self, ctx, login, db: Database, like, like_db: Database): ...

    # P411 for one declared login on its database's host; `like` when the plan makes it (preflight).
    def preflight(self, ctx, run, login, db: Database, like) -> List[Finding]: ...
