"""Tunnels between two hosts' ports through mdsl's own connections (the `Tunnel` action).

A database server on one host (the target of `replicate ... live`) reaches another's port
(the source's server) at 127.0.0.1:PORT on its own host: on an SSH host that is a remote
forward of mdsl's connection to it (`tcpip-forward`, bound to 127.0.0.1 only), on the local
host a listening socket on 127.0.0.1; each connection accepted there becomes a `direct-tcpip`
channel of mdsl's connection to the other host (or a socket, when that host is this machine),
to the address and port as that host sees them. No port is opened to the network, and the
hosts need not reach each other. A tunnel lives as long as mdsl's run (or until a `close`):
the server at its far end retries while it is down, and the next run opens it again.
"""

from __future__ import annotations

import contextvars
import socket
import threading
from typing import Callable, Dict, Tuple

from mdsl.compile.actions import Tunnel
from mdsl.run import log
from mdsl.run.backend import Backend, BackendError

CHUNK = 1 << 16
CONNECT_TIMEOUT = 15.0


def _pump(src, dst) -> None:
    """Copy bytes from `src` to `dst` until `src` ends; then end `dst`'s writing side."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except (OSError, EOFError):  # either side went away: the other end learns it below
        pass
    finally:
        try:
            if hasattr(dst, "shutdown_write"):
                dst.shutdown_write()
            else:
                dst.shutdown(socket.SHUT_WR)
        except (OSError, EOFError):
            pass


def _splice(a, b) -> None:
    """Both directions between two streams (sockets or paramiko channels), each in its own thread."""
    def run():
        t = threading.Thread(target=_pump, args=(b, a), daemon=True, name="mdsl-tunnel")
        t.start()
        _pump(a, b)
        t.join()
        for s in (a, b):
            try:
                s.close()
            except (OSError, EOFError):
                pass
    threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True, name="mdsl-tunnel").start()


def _dial(backend: Backend, address: str, port: int):
    """A stream to `address:port` as `backend`'s host sees it."""
    transport = getattr(backend, "forwarding_transport", None)
    if transport is None:
        return socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
    chan = transport().open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT)
    chan.settimeout(None)
    return chan


class _Open:
    """One open tunnel: how to close it."""

    def __init__(self, close: Callable[[], None]):
        self.close = close


class Tunnels:
    """The tunnels of one run, by (to_host, listen port)."""

    def __init__(self, backends: Dict[str, Backend]):
        self.backends = backends
        self.open: Dict[Tuple[str, int], _Open] = {}
        self.lock = threading.Lock()
        self.log = log.get_logger()

    def perform(self, t: Tunnel) -> None:
        """Open the tunnel (nothing when it is open), or close it."""
        key = (t.to_host, t.listen)
        with self.lock:
            if t.close:
                opened = self.open.pop(key, None)
                if opened is not None:
                    opened.close()
                    self.log.info("tunnel.closed", host=t.to_host, port=t.listen)
                return
            if key in self.open:
                return
            self.open[key] = self._start(t)
            self.log.info("tunnel.open", host=t.to_host, port=t.listen, far=t.from_host)

    def close_all(self) -> None:
        """Close every tunnel still open (the end of the run)."""
        with self.lock:
            for opened in self.open.values():
                try:
                    opened.close()
                except Exception:  # noqa: BLE001 - closing must not mask the run's outcome
                    pass
            self.open.clear()

    def _start(self, t: Tunnel) -> _Open:
        far = self.backends[t.from_host]

        def accepted(stream) -> None:
            try:
                other = _dial(far, t.address, t.port)
            except Exception as exc:  # noqa: BLE001 - the server at the near end sees its connection close
                self.log.warning("tunnel.dial_failed", host=t.from_host, error=str(exc))
                stream.close()
                return
            _splice(stream, other)

        near = self.backends[t.to_host]
        transport = getattr(near, "forwarding_transport", None)
        if transport is None:
            return self._listen_here(t, accepted)
        tr = transport()

        def handler(channel, origin, server) -> None:
            threading.Thread(target=accepted, args=(channel,), daemon=True, name="mdsl-tunnel").start()

        try:
            tr.request_port_forward("127.0.0.1", t.listen, handler=handler)
        except Exception as exc:  # noqa: BLE001 - paramiko raises SSHException for a refused forward
            raise BackendError(t.to_host, f"cannot open a tunnel at 127.0.0.1:{t.listen} on {t.to_host}: {exc}",
                               hint="the port may be taken there (write `port = N` on the step), or its sshd "
                                    "refuses forwarding (AllowTcpForwarding yes)") from None

        def close() -> None:
            try:
                tr.cancel_port_forward("127.0.0.1", t.listen)
            except Exception:  # noqa: BLE001 - a dead connection has nothing left to cancel
                pass
        return _Open(close)

    def _listen_here(self, t: Tunnel, accepted) -> _Open:
        try:
            srv = socket.create_server(("127.0.0.1", t.listen))
        except OSError as exc:
            raise BackendError(t.to_host, f"cannot listen on 127.0.0.1:{t.listen}: {exc.strerror}",
                               hint="the port is taken: write `port = N` on the step") from None
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=accepted, args=(conn,), daemon=True, name="mdsl-tunnel").start()

        threading.Thread(target=contextvars.copy_context().run, args=(serve,), daemon=True,
                         name="mdsl-tunnel").start()

        def close() -> None:
            stop.set()
            try:
                srv.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            srv.close()
        return _Open(close)
