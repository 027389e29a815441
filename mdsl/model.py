"""The bound model: a plan whose names resolve to typed declarations.

`mdsl.check.resolve` builds it from the AST; the checker walks it, the compiler
turns it into commands, apply runs them. Store kinds (databases) subclass
`Database` in their own package under `mdsl/stores/`.
"""

from __future__ import annotations

import posixpath
from typing import Dict, List, Optional, Tuple, Union

from attrs import field, frozen

from mdsl.findings import Finding, Severity
from mdsl.syntax import ast as A



@frozen
class Host:
    """A machine steps run on: over SSH, or this machine (`local = true`)."""

    name: str
    local: bool = False
    user: Optional[str] = None
    address: Optional[str] = None  # where SSH connects
    port: int = 22
    identity: Optional[str] = None
    known_hosts: Optional[str] = None
    sudo: bool = False
    sudo_password: Optional[A.Secret] = None
    http_address: Optional[str] = None  # where `verify http ... via = HOST` sends requests
    span: A.Span = field(eq=False, repr=False, default=A.NOWHERE)

    @property
    def login(self) -> str:
        """`user@addr` (or `addr`): where ssh, rsync and scp log in."""
        return (f"{self.user}@" if self.user else "") + self.address

    @property
    def display(self) -> str:
        """`name (user@addr)` for messages."""
        if self.local:
            return f"{self.name} (local)"
        return f"{self.name} ({self.login})"


@frozen
class Resource:
    """Common shape of every declared piece of data or service."""

    name: str
    host: str
    fresh: bool = False
    span: A.Span = field(eq=False, repr=False, default=A.NOWHERE)

    kind = "?"
    is_data = True
    is_database = False
    is_dir = False  # a tree of files: a `dir`, or a Docker `volume` (archived, extracted and synced alike)


@frozen
class Database(Resource):
    """A database of some store kind (mdsl/stores/KIND): dumped, restored and dropped by that store's commands."""

    is_database = True


@frozen
class Login(Resource):
    """The login an app uses for a database (`login NAME on DB`): who it is and how it connects.

    `host` is the database's host: preflight logs in from there, as the app would. `like` names the
    login whose grants a restore into `database` gives this one (the plan creates it); without it the
    login must exist already, which preflight proves.
    """

    database: str = ""  # the declared database (a `mysql`/`postgres` declaration's name)
    user: str = ""
    password: Optional[Union[A.Secret, A.Str]] = None
    tcp_host: Optional[str] = None
    tcp_port: Optional[int] = None
    socket: Optional[str] = None
    source_address: Optional[str] = None  # where a TCP login comes from, as the server sees it
    run_as: Optional[str] = None  # the OS user it connects as (peer / unix_socket auth)
    like: Optional[str] = None
    kind = "login"
    is_data = False


@frozen
class Derived:
    """A subpath of a dir that may be left behind and rebuilt with `rebuild`."""

    subpath: str
    rebuild: str
    span: A.Span = field(eq=False, repr=False, default=A.NOWHERE)


@frozen
class Dir(Resource):
    """A directory of data."""

    path: str = ""
    owner: Optional[str] = None
    mode: Optional[str] = None
    derived: Tuple[Derived, ...] = ()
    kind = "dir"
    is_dir = True


@frozen
class Volume(Dir):
    """A named Docker volume: a dir whose path is its mountpoint, which Docker tells at apply time.

    `path` stays empty (no step can name a location inside it); its files keep their numeric owners.
    """

    docker: str = ""  # the volume's name as `docker volume ls` shows it
    kind = "volume"


@frozen
class File(Resource):
    """One file, e.g. `.env.production`."""

    path: str = ""
    owner: Optional[str] = None
    mode: Optional[str] = None
    secret: bool = False
    kind = "file"


@frozen
class Service(Resource):
    """Something that reads and writes data: systemd units or start/stop/status commands."""

    systemd: Tuple[str, ...] = ()
    start: Optional[str] = None
    stop: Optional[str] = None
    status: Optional[str] = None
    writes: Tuple[str, ...] = ()
    reads: Tuple[str, ...] = ()
    initially_running: bool = True
    compose: Optional[str] = None  # a Compose project's file: stopped and started with `docker compose`
    compose_services: Tuple[str, ...] = ()  # some of the project's services (none: all of them)
    container: Optional[str] = None  # one Docker container: `docker stop` / `docker start`
    app: Optional[str] = None  # the app it runs (a profile under mdsl/apps/profiles), and how it is installed
    layout: Optional[str] = None
    kind = "service"
    is_data = False




@frozen
class BoundPlan:
    """A plan whose names all resolve; built even when there are E1xx findings."""

    plan: A.Plan
    hosts: Dict[str, Host]
    resources: Dict[str, Resource]
    findings: Tuple[Finding, ...] = ()
    # host -> resources with a path there, longest path first (the most specific wins)
    by_host_path: Dict[str, List[Resource]] = field(factory=dict, eq=False, repr=False)
    # (host, path) -> resources with exactly that path, in declaration order
    by_path: Dict[Tuple[str, str], List[Resource]] = field(factory=dict, eq=False, repr=False)

    def logins_on(self, database: str) -> List["Login"]:
        """The declared logins of a database, in declaration order."""
        return [r for r in self.resources.values() if isinstance(r, Login) and r.database == database]

    @property
    def steps(self) -> Tuple[A.Step, ...]:
        """The plan's top-level steps."""
        return self.plan.steps

    @property
    def ok(self) -> bool:
        """True when no E1xx error was found, so the checker can walk the steps."""
        return not any(f.severity == Severity.ERROR for f in self.findings)

    def data(self, name: str) -> Optional[Resource]:
        """The data resource (not a service) called `name`."""
        r = self.resources.get(name)
        return r if r is not None and r.is_data else None

    def place(self, target: A.Target) -> "Place":
        """What a step's location names: a declared resource, a subpath of a dir, or an artifact path."""
        if isinstance(target, A.Ident):
            r = self.resources[target.name]
            return Place(r.host, getattr(r, "path", None) or "", r.name, None)
        host, path = target.host.name, normpath(target.path.value)
        for r in self.by_path.get((host, path), ()):
            return Place(host, path, r.name, None)
        # The nearest enclosing dir wins; walking up the path costs its depth, not the plan's size.
        up = path
        while up.startswith("/") and up != "/":
            up = up.rpartition("/")[0] or "/"
            for r in self.by_path.get((host, up), ()):
                if r.kind == "dir":
                    return Place(host, path, r.name, path[len(up.rstrip("/")) + 1:])
        return Place(host, path, None, None)


@frozen
class Place:
    """A resolved location: `resource` set when it is (inside) a declared resource."""

    host: str
    path: str
    resource: Optional[str]
    subpath: Optional[str]  # set when the path lies inside a declared dir

    def __str__(self) -> str:
        return f'{self.host}:"{self.path}"'


def normpath(p: str) -> str:
    """Collapse `//`, `/./` and trailing `/` so equal paths compare equal."""
    if not p:
        return p
    n = posixpath.normpath(p)
    return "/" + n.lstrip("/") if p.startswith("/") else n


