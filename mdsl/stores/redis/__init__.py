"""Redis as a store kind: a whole server (every logical database), reached over TCP or its socket file.

Its commands (redis-cli --rdb, a restore into the live server by a one-shot
replication master) are in `commands.py`, its preflight probes in `probes.py`.
"""

from __future__ import annotations

from typing import Optional, Union

from attrs import frozen

from mdsl.model import Database
from mdsl.stores.base import Binding, StoreKind
from mdsl.syntax import ast as A


@frozen
class Redis(Database):
    """A Redis server's whole data set."""

    tcp_host: Optional[str] = None
    tcp_port: Optional[int] = None
    socket: Optional[str] = None
    password: Optional[Union[A.Secret, A.Str]] = None
    kind = "redis"


def bind(b: Binding) -> Redis:
    """A `redis` declaration: reached by `tcp` or `socket` (one of them), maybe with a password."""
    at = b.attrs
    tcp_host, tcp_port = b.tcp()
    if "tcp" in at and "socket" in at:
        b.error(f"`{b.name}` has both `tcp` and `socket`", "socket", help="a server is reached one way: keep one")
    elif "tcp" not in at and "socket" not in at:
        b.error(f"`{b.name}` says neither `tcp` nor `socket`", None,
                help='add `tcp = "127.0.0.1:6379"` or `socket = "/run/redis/redis-server.sock"`')
    if "socket" in at:
        b.path("socket")
    return Redis(tcp_host=tcp_host, tcp_port=tcp_port, socket=at.get("socket"), password=at.get("password"),
                 **b.common())


STORE = StoreKind(
    kind="redis",
    resource=Redis,
    title="Redis",
    artifact="a Redis snapshot",
    schema={"tcp": ("str", False), "socket": ("str", False), "password": ("secret", False), "fresh": ("bool", False)},
    bind=bind,
)
