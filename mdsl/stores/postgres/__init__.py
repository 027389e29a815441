"""PostgreSQL as a store kind: a database on a server, reached over a socket or TCP, by a role.

Its commands (pg_dump, pg_restore, psql, createdb, dropdb, the preflight probes)
are in `commands.py`.
"""

from __future__ import annotations

from typing import Optional, Union

from attrs import frozen

from mdsl.docker import CONTAINER_SCHEMA, bind_container
from mdsl.model import Database
from mdsl.stores.base import Binding, StoreKind
from mdsl.syntax import ast as A


@frozen
class Postgres(Database):
    """A PostgreSQL database."""

    database: str = ""
    user: Optional[str] = None
    tcp_host: Optional[str] = None
    tcp_port: Optional[int] = None
    socket: Optional[str] = None
    password: Optional[Union[A.Secret, A.Str]] = None
    run_as: Optional[str] = None
    bin: Optional[str] = None
    container: Optional[str] = None  # its client programs run inside this Docker container (`docker exec -i`)
    kind = "postgres"


def bind(b: Binding) -> Postgres:
    """A `postgres` declaration's attributes, checked against each other."""
    at = b.attrs
    tcp_host, tcp_port = b.tcp()
    if "port" in at:
        if "tcp" in at:
            b.error(f"`{b.name}` gives the port twice: in `tcp` and in `port`", "port",
                    help='keep the port in `tcp = "address:port"`')
        elif not 0 < at["port"] < 65536:
            b.error(f"`port` of `{b.name}` must be 1-65535", "port")
        else:
            tcp_port = at["port"]  # the socket file is .s.PGSQL.<port>
    if "tcp" in at and "socket" in at:
        b.error(f"`{b.name}` has both `tcp` and `socket`", "socket", help="a database is reached one way: keep one")
    return Postgres(database=at.get("database", ""), user=at.get("user"), tcp_host=tcp_host, tcp_port=tcp_port,
                    socket=at.get("socket"), password=at.get("password"), run_as=at.get("run_as"),
                    bin=at.get("bin"), container=bind_container(b), **b.common())


def dump_format(step: A.Dump) -> str:
    """custom (the default), directory or plain."""
    opt = step.option("format")
    return opt.value.name if opt is not None and isinstance(opt.value, A.Ref) else "custom"


STORE = StoreKind(
    kind="postgres",
    resource=Postgres,
    title="PostgreSQL",
    artifact="a PostgreSQL dump",
    schema={
        "database": ("str", True), "user": ("str", False), "tcp": ("str", False), "socket": ("str", False),
        "port": ("int", False), "password": ("secret", False), "run_as": ("str", False), "fresh": ("bool", False),
        "bin": ("str", False), **CONTAINER_SCHEMA,
    },
    bind=bind,
    logins=True,
    replicates=True,
    restore_owner=lambda db: db.user or db.run_as,
    dump_options={"format": "enum:custom,directory,plain", "jobs": "int", "compress": "enum:gzip,zstd,none"},
    restore_options={"jobs": "int"},
    dump_format=dump_format,
)
