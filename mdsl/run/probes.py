"""The checks apply makes from the control machine itself: `verify http` and `verify dns`."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse

from mdsl.compile.actions import DnsCheck, HttpCheck
from mdsl.run.errors import StepFailed


class _ViaHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to another address than DNS gives, keeping the URL's name for SNI and certificate checks."""

    def __init__(self, host, port, connect_to, **kw):
        super().__init__(host, port, **kw)
        self._connect_to = connect_to

    def connect(self):
        sock = socket.create_connection((self._connect_to, self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _ViaHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to another address; the Host header still names the URL's host."""

    def __init__(self, host, port, connect_to, **kw):
        super().__init__(host, port, **kw)
        self._connect_to = connect_to

    def connect(self):
        self.sock = socket.create_connection((self._connect_to, self.port), self.timeout, self.source_address)


def http_check(a: HttpCheck, sleep=time.sleep) -> str:
    """GET the URL until it answers with the expected status (and text); returns what it saw.

    `via = HOST` connects to that host's address while the request keeps the
    URL's Host header, SNI and certificate name: the new server is tested
    exactly as it will be seen after the DNS switch, before that switch.
    Done with http.client (urllib's own transport), since urllib cannot
    connect to one address while naming another.
    """
    u = urllib.parse.urlsplit(a.url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise StepFailed(f"cannot check {a.url!r}: only http:// and https:// URLs")
    https = u.scheme == "https"
    port = u.port or (443 if https else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    deadline = time.monotonic() + a.timeout
    last = "no answer"
    while True:
        try:
            connect_to = a.address or u.hostname
            if https:
                conn = _ViaHTTPSConnection(u.hostname, port, connect_to, timeout=10,
                                           context=ssl.create_default_context())
            else:
                conn = _ViaHTTPConnection(u.hostname, port, connect_to, timeout=10)
            try:
                conn.request("GET", target, headers={"Host": u.netloc.rpartition("@")[2], "User-Agent": "mdsl"})
                resp = conn.getresponse()
                body = resp.read(1 << 20).decode("utf-8", "replace")
            finally:
                conn.close()
            if resp.status == a.status and (a.contains is None or a.contains in body):
                return f"status {resp.status}"
            last = f"status {resp.status}" + (f", body without {a.contains!r}" if resp.status == a.status else "")
        except (OSError, http.client.HTTPException, ssl.SSLError, UnicodeError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            where = f" via {a.via} ({a.address})" if a.via else ""
            raise StepFailed(f"GET {a.url}{where}: expected status {a.status}, got {last}",
                             hint="is the service up and reachable from this machine?")
        sleep(1.0)


def _own_addresses() -> set:
    out = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(info[4][0])
    except OSError:
        pass
    return out


def dns_check(a: DnsCheck) -> str:
    """Resolve the name; it must point at the host's address (or this machine for a local host)."""
    try:
        got = {i[4][0] for i in socket.getaddrinfo(a.name, None)}
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode (too long, empty)
        raise StepFailed(f"cannot resolve {a.name!r}: {exc}") from None
    if a.local:
        ok = any(ipaddress.ip_address(x.split("%")[0]).is_loopback for x in got) or bool(got & _own_addresses())
        want = "this machine"
    else:
        want_set = set()
        for e in a.expected:
            try:
                want_set |= {i[4][0] for i in socket.getaddrinfo(e, None)}
            except (OSError, UnicodeError):
                want_set.add(e)
        ok = bool(got & want_set)
        want = ", ".join(sorted(want_set))
    if not ok:
        raise StepFailed(f"{a.name} resolves to {', '.join(sorted(got))}, not {a.host} ({want})",
                         hint="DNS may still be propagating; check the record and its TTL")
    return f"{a.name} -> {', '.join(sorted(got))}"
