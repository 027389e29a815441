"""Tunnels (the `Tunnel` action) between two local hosts, with real sockets: bytes cross both ways,
opening an open tunnel is a no-op, a taken port is a clear error, and a closed tunnel refuses.
Over SSH the same tunnel is a remote forward plus direct-tcpip channels: tests/e2e/test_replication.py."""

from __future__ import annotations

import socket
import threading

import pytest

from mdsl.compile.actions import Tunnel
from mdsl.model import Host
from mdsl.run.backend import BackendError
from mdsl.run.local import LocalBackend
from mdsl.run.tunnel import Tunnels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo():
    """A TCP server answering every line with it upper-cased; its port."""
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    done.set()
    srv.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
    srv.close()
    t.join(timeout=5)


@pytest.fixture
def tunnels():
    backends = {name: LocalBackend(Host(name, local=True)) for name in ("src", "dst")}
    t = Tunnels(backends)
    yield t
    t.close_all()


def _ask(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        out = b""
        while data := c.recv(4096):
            out += data
        return out


def test_bytes_cross_the_tunnel_both_ways_and_a_second_open_is_a_no_op(echo, tunnels):
    listen = _free_port()
    t = Tunnel("src", "127.0.0.1", echo, "dst", listen)
    tunnels.perform(t)
    tunnels.perform(t)  # the final pass opens it again: nothing happens
    assert len(tunnels.open) == 1
    big = b"x" * (1 << 20) + b"end"
    assert _ask(listen, b"hello\n") == b"HELLO\n"
    assert _ask(listen, big) == big.upper()


def test_close_stops_listening(echo, tunnels):
    listen = _free_port()
    tunnels.perform(Tunnel("src", "127.0.0.1", echo, "dst", listen))
    tunnels.perform(Tunnel("src", "127.0.0.1", echo, "dst", listen, close=True))
    assert tunnels.open == {}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", listen), timeout=2)


def test_a_taken_port_is_a_clear_error(echo, tunnels):
    with pytest.raises(BackendError) as e:
        tunnels.perform(Tunnel("src", "127.0.0.1", echo, "dst", echo))
    assert "cannot listen on 127.0.0.1" in e.value.message and "port = N" in e.value.hint
