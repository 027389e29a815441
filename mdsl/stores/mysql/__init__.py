"""MySQL and MariaDB as a store kind: a database on a server, reached over TCP or the server's socket file.

Its commands (mariadb-dump or mysqldump, the mariadb or mysql client) are in
`commands.py`, its preflight probes in `probes.py`. Which flavour a server is
comes from `SELECT VERSION()` at preflight; the commands work with either.
With `container = "NAME"` the clients run inside that Docker container (`docker exec -i`), as
for postgres: the server's own client version, none needed on the host.
"""

from __future__ import annotations

from typing import Optional, Union

from attrs import frozen

from mdsl.docker import CONTAINER_SCHEMA, bind_container
from mdsl.model import Database
from mdsl.stores.base import Binding, StoreKind
from mdsl.syntax import ast as A


@frozen
class Mysql(Database):
    """A MySQL or MariaDB database."""

    database: str = ""
    user: Optional[str] = None
    tcp_host: Optional[str] = None
    tcp_port: Optional[int] = None
    socket: Optional[str] = None  # the server's socket file (not a directory, unlike postgres)
    password: Optional[Union[A.Secret, A.Str]] = None
    run_as: Optional[str] = None
    container: Optional[str] = None  # its client programs run inside this Docker container (`docker exec -i`)
    kind = "mysql"


def bind(b: Binding) -> Mysql:
    """A `mysql` declaration's attributes, checked against each other."""
    at = b.attrs
    tcp_host, tcp_port = b.tcp()
    if "tcp" in at and "socket" in at:
        b.error(f"`{b.name}` has both `tcp` and `socket`", "socket", help="a database is reached one way: keep one")
    if "socket" in at:
        b.path("socket")
    return Mysql(database=at.get("database", ""), user=at.get("user"), tcp_host=tcp_host, tcp_port=tcp_port,
                 socket=at.get("socket"), password=at.get("password"), run_as=at.get("run_as"),
                 container=bind_container(b), **b.common())


STORE = StoreKind(
    kind="mysql",
    resource=Mysql,
    title="MySQL/MariaDB",
    artifact="a MySQL/MariaDB dump",
    schema={
        "database": ("str", True), "user": ("str", False), "tcp": ("str", False), "socket": ("str", False),
        "password": ("secret", False), "run_as": ("str", False), "fresh": ("bool", False), **CONTAINER_SCHEMA,
    },
    restore_options={"jobs": "int"},
    bind=bind,
    logins=True,
    replicates=True,  # MariaDB: snapshot plus binlog replication with GTID (replication.py)
)
