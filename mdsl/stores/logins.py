"""The login an app uses for a database, `login NAME on DB { ... }`: what the resolver needs to bind it.

The same declaration serves every store kind that has logins (`StoreKind.logins`); each of those kinds
has a `logins` module beside its `commands` that makes a login exist on the target (compile) and proves
it works as the app will connect (preflight, P411).
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from mdsl.model import Database, Login
from mdsl.stores.base import Binding, Schema

SCHEMA: Schema = {
    "user": ("str", True), "password": ("secret", False), "tcp": ("str", False), "socket": ("str", False),
    "from": ("str", False), "run_as": ("str", False), "like": ("name", False),
}


def default_source(address: str) -> Optional[str]:
    """Where a TCP login to `address` comes from when the app runs on the database's host: the
    loopback address for a loopback destination (Linux picks 127.0.0.1 for all of 127.0.0.0/8), else
    the address itself; None for a host name, which says nothing about the address it resolves to."""
    if address == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(address.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if ip.is_loopback:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return str(ip)


def bind(b: Binding, db: Database) -> Login:
    """A `login` declaration's attributes, checked against each other; how it connects defaults to its
    database's `tcp`/`socket` (the app usually reaches the server the way mdsl does, but not always:
    say so here when it does not)."""
    at = b.attrs
    tcp_host, tcp_port = b.tcp()
    socket = at.get("socket")
    if "tcp" in at and "socket" in at:
        b.error(f"`{b.name}` has both `tcp` and `socket`", "socket", help="the app connects one way: keep one")
    if socket is not None:
        b.path("socket")
    if "tcp" not in at and "socket" not in at:
        tcp_host, tcp_port, socket = (getattr(db, "tcp_host", None), getattr(db, "tcp_port", None),
                                      getattr(db, "socket", None))
    source = at.get("from")
    if source is not None:
        if not tcp_host:
            b.error(f"`from` of `{b.name}` is the address a TCP login comes from, but `{b.name}` connects over "
                    "a socket", "from", help="remove `from`, or declare `tcp = \"address:port\"`")
        try:
            source = str(ipaddress.ip_address(source))
        except ValueError:
            b.error(f"`from` of `{b.name}` must be an IP address, as the server sees the app's connection", "from",
                    help='e.g. `from = "127.0.0.1"`')
            source = None
    elif tcp_host:
        source = default_source(tcp_host)
        if source is None and "like" in at:
            b.error(f"`{b.name}` connects to `{tcp_host}`, a name: say which address the app's login comes from, "
                    "so the plan creates the login for it", "tcp", help='add e.g. `from = "10.0.0.5"`')
    user = at.get("user", "")
    if "user" in at and (not user or "\0" in user or "\n" in user):
        b.error(f"`user` of `{b.name}` must be a user name (no NUL or newline)", "user")
    like = at.get("like")
    return Login(database=db.name, user=user, password=at.get("password"), tcp_host=tcp_host, tcp_port=tcp_port,
                 socket=socket, source_address=source, run_as=at.get("run_as"),
                 like=like.name if like is not None else None,
                 **{**b.common(), "host": db.host})


def connection_text(login: Login) -> str:
    """How the app connects, for messages."""
    if login.tcp_host:
        return f"TCP to {login.tcp_host}:{login.tcp_port} from {login.source_address or 'an unknown address'}"
    return f"the socket {login.socket}" if login.socket else "the default socket"
