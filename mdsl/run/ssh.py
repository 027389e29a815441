"""The SSH backend: one Fabric connection per host (host keys checked), one exec channel per command.

Fabric resolves the connection (ssh_config, user, port, keys); commands then
run on bare exec channels of its paramiko transport (mdsl.run.ssh_channel),
not through Invoke's runner, which is an order of magnitude slower per
command (docs/performance.md). Channels are independent, so threads may run
commands on one host at once (up to MAX_CHANNELS; sshd's MaxSessions is 10
by default). Host keys are checked against the host's `known_hosts` file:
an unknown key is refused unless `accept_new_host_keys`, a changed key
always. Bulk bytes take the OpenSSH client instead (mdsl.run.openssh).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import os
import shlex
import socket
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import paramiko
import paramiko.agent
from fabric import Config, Connection

from mdsl.model import Host
from mdsl.run.backend import Backend, BackendError, BulkClient, Result, forward_agent, new_run_token
from mdsl.run.openssh import OpenSshRoutes
from mdsl.run.secrets import SecretStore
from mdsl.run.ssh_channel import (
    STDERR_KEEP, ChannelCommand, FastTransport, SudoWrapper, capped, chunks_of, reads_sudo_password, short, wrap,
)
from mdsl.syntax import ast as A

# Paramiko logs transport errors itself; without this, Python's last-resort
# handler would print them on stderr next to our own message.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

MAX_CHANNELS = 8  # OpenSSH's MaxSessions defaults to 10; leave room for kill channels
KILL_GRACE = 3  # seconds between TERM and KILL for a timed-out command

_known_hosts_lock = threading.Lock()


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, or (accept-new) record them in the known_hosts file."""

    def __init__(self, accept_new: bool, known_hosts: str):
        self.accept_new, self.known_hosts = accept_new, known_hosts
        self.added: Optional[Tuple[str, paramiko.PKey]] = None

    def missing_host_key(self, client, hostname, key):
        if not self.accept_new:
            raise _UnknownHostKey(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            parent = os.path.dirname(self.known_hosts)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, mode=0o700, exist_ok=True)
            # Append one line rather than paramiko's save_host_keys(), which
            # rewrites the file and drops lines it cannot parse (@cert-authority, ...).
            with open(self.known_hosts, "a", encoding="utf-8") as f:
                f.write(line)
        self.added = (hostname, key)


class SshBackend(Backend):
    """A host reached over SSH (Fabric connection, paramiko exec channels)."""

    def __init__(self, host: Host, *, accept_new_host_keys: bool = False, connect_timeout: float = 10.0,
                 command_timeout: Optional[float] = None, wrap_sudo: bool = False,
                 secret_reader: Optional[Callable[[A.Secret], str]] = None):
        if host.local:
            raise ValueError(f"host {host.name} is local; use the local backend")
        self.host = host
        self.name = host.name
        self.accept_new_host_keys = accept_new_host_keys
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        # Compiled Commands carry their own `sudo` (mdsl.compile.parts.Command); the backend adds one
        # only when asked, for callers that send plain commands to a `sudo = true` host.
        self.wrap_sudo = wrap_sudo and host.sudo
        self._secret_reader = secret_reader  # default: apply's SecretStore
        self._sudo_password: Optional[bytes] = None
        self._conn: Optional[Connection] = None
        self._lock = threading.Lock()  # guards (re)connecting
        self._slots = threading.BoundedSemaphore(MAX_CHANNELS)
        self.host_key_added: Optional[str] = None  # fingerprint, when accept-new recorded a key
        self._openssh = OpenSshRoutes(host, self.known_hosts_file, connect_timeout)  # bulk bytes
        self.token = new_run_token()  # in every wrapped command's text: see wrap()

    # ------------------------------------------------------------------ connection

    @property
    def known_hosts_file(self) -> str:
        """The file host keys are checked against (and accept-new appends to)."""
        return os.path.expanduser(self.host.known_hosts or "~/.ssh/known_hosts")

    @property
    def target(self) -> str:
        """`user@address:port` for messages."""
        return f"{self.host.login}:{self.host.port}"

    def connect(self) -> None:
        """Open the connection (idempotent); raises BackendError saying what failed and how to fix it."""
        with self._lock:
            if self._conn is not None and self._conn.transport is not None and self._conn.transport.is_active():
                return
            self._close_locked()
            if self.wrap_sudo and self.host.sudo_password is not None and self._sudo_password is None:
                reader = self._secret_reader
                if reader is None:
                    reader = SecretStore().lookup  # env vars, files; values redacted from logs
                try:
                    pw = reader(self.host.sudo_password)
                except (OSError, KeyError, UnicodeDecodeError) as e:
                    raise BackendError(self.name, f"cannot read sudo_password {self.host.sudo_password.masked()}: {e}",
                                       "set the variable or create the file before running apply") from None
                if "\n" in pw or "\r" in pw:
                    raise BackendError(self.name, "sudo_password contains a newline; sudo reads one line")
                self._sudo_password = pw.encode() + b"\n"
            conn = self._open()
            try:
                self._check_quiet_login(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    def _check_quiet_login(self, conn: Connection) -> None:
        """A command's stdout must be only its own: refuse a host whose login shell prints on it.

        A banner echoed from ~/.bashrc or /etc/bash.bashrc lands on stdout before
        every command: in front of a streamed file (and inside its hash, so the
        copy would verify) and in front of every `sha256sum` answer. One empty
        command per connection finds it.
        """
        out = b""
        try:
            ch = conn.transport.open_session(timeout=self.connect_timeout)
            try:
                ch.settimeout(self.connect_timeout)
                ch.exec_command("exit 0")
                while len(out) < 4096:
                    data = ch.recv(4096)
                    if not data:
                        break
                    out += data
            finally:
                ch.close()
        except (socket.timeout, TimeoutError):
            raise BackendError(self.name, f"{self.target} did not run an empty command within "
                               f"{self.connect_timeout:g}s", "is the host overloaded?") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise BackendError(self.name, f"{self.target} cannot run commands: {e or type(e).__name__}") from None
        if out:
            text = out[:200].decode("utf-8", "replace")
            raise BackendError(
                self.name, f"the login shell of {self.target} writes to stdout before every command ({text!r}); "
                "that text would end up inside copied files and checksums, so mdsl does not use this host",
                "make the shell's startup files (~/.bashrc, ~/.profile, /etc/bash.bashrc) print nothing when not "
                "interactive, e.g. guard the output with `[ -t 1 ] &&` or `case $- in *i*)`")

    def _open(self) -> Connection:
        h = self.host
        kwargs = {"timeout": self.connect_timeout, "banner_timeout": self.connect_timeout,
                  "auth_timeout": self.connect_timeout, "transport_factory": FastTransport}
        identity = os.path.expanduser(h.identity) if h.identity else None
        if identity:
            if not os.path.isfile(identity):
                raise BackendError(self.name, f"identity file {identity} does not exist",
                                   "fix `identity` in the host's declaration")
            # An explicit identity is the only key offered, so an auth failure names it.
            kwargs.update(key_filename=identity, look_for_keys=False, allow_agent=False)
        conn = Connection(h.address, user=h.user, port=h.port, config=Config(), connect_kwargs=kwargs)
        conn.connect_timeout = None  # Fabric would truncate it to an int; connect_kwargs carry the float
        client = conn.client
        policy = _HostKeyPolicy(self.accept_new_host_keys, self.known_hosts_file)
        client.set_missing_host_key_policy(policy)
        try:
            if os.path.exists(self.known_hosts_file):
                client.load_host_keys(self.known_hosts_file)
            if not h.known_hosts and os.path.exists("/etc/ssh/ssh_known_hosts"):
                client.load_system_host_keys("/etc/ssh/ssh_known_hosts")
        except (OSError, paramiko.SSHException) as e:
            raise BackendError(self.name, f"cannot read known_hosts {self.known_hosts_file}: {e}") from None

        addr, port = conn.host, conn.port
        sock = None
        if conn.gateway is None:  # a ProxyJump/ProxyCommand from ssh_config brings its own socket
            sock = self._tcp_connect(addr, port)
            conn.connect_kwargs["sock"] = sock
        try:
            conn.open()
        except (_UnknownHostKey, paramiko.SSHException, EOFError, OSError) as e:
            conn.close()
            raise self._handshake_error(e, addr, port, identity) from None
        t = conn.transport
        t.set_keepalive(15)
        if sock is None and isinstance(t.sock, socket.socket):
            t.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if policy.added:
            self.host_key_added = policy.added[1].fingerprint
        return conn

    def _handshake_error(self, e: BaseException, addr: str, port: int, identity: Optional[str]) -> BackendError:
        """What went wrong while opening the connection, and how to fix it."""
        kh = self.known_hosts_file
        if isinstance(e, _UnknownHostKey):
            fp = e.key.fingerprint
            scan = f"ssh-keyscan -p {port} {shlex.quote(addr)}" if port != 22 else f"ssh-keyscan {shlex.quote(addr)}"
            return BackendError(
                self.name,
                f"host key of {e.hostname} is unknown: {e.key.get_name()} {fp} (not in {kh})",
                f"verify {fp} on the host itself (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`), then add it: "
                f"`{scan} >> {kh}`; or run apply with --accept-new-host-keys")
        if isinstance(e, paramiko.BadHostKeyException):
            # known_hosts names a host on another port than 22 `[address]:port`; paramiko's e.hostname is bare
            entry = e.hostname if port == 22 else f"[{e.hostname}]:{port}"
            return BackendError(
                self.name,
                f"HOST KEY CHANGED for {e.hostname}: it presented {e.key.get_name()} {e.key.fingerprint}, "
                f"but {kh} has {e.expected_key.get_name()} {e.expected_key.fingerprint}. "
                "Someone may be intercepting the connection; refusing to connect",
                f"if the host was really reinstalled, verify the new fingerprint on it, then "
                f"`ssh-keygen -R {shlex.quote(entry)} -f {shlex.quote(kh)}` and add the new key")
        if isinstance(e, paramiko.BadAuthenticationType):
            return BackendError(self.name, f"{self.target} does not accept public keys (allows: "
                                f"{', '.join(e.allowed_types)})", "enable PubkeyAuthentication on the host")
        if isinstance(e, paramiko.PasswordRequiredException):
            return BackendError(self.name, f"identity {identity} is encrypted with a passphrase",
                                "load it into ssh-agent (`ssh-add`) and leave `identity` out")
        if isinstance(e, paramiko.AuthenticationException):
            return BackendError(self.name, f"authentication failed for {self.target}; tried: {self._keys_tried()}",
                                f"add the public key to ~{self.host.user or ''}/.ssh/authorized_keys on the host, "
                                "or set `identity` to the right key")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return BackendError(self.name, f"{self.target} accepted TCP but did not complete the SSH handshake "
                                f"within {self.connect_timeout:g}s", "is it an SSH server? is it overloaded?")
        return BackendError(self.name, f"SSH handshake with {self.target} failed: {e or type(e).__name__}",
                            "check that the port is an SSH server")

    def _tcp_connect(self, addr: str, port: int) -> socket.socket:
        try:
            infos = socket.getaddrinfo(addr, port, 0, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:  # UnicodeError: not a host name at all (IDNA)
            raise BackendError(self.name, f"cannot resolve {addr!r}: {getattr(e, 'strerror', None) or e}",
                               "check the address in `ssh = \"user@address\"` (DNS, /etc/hosts)") from None
        last: Optional[BaseException] = None
        for family, kind, proto, _, sa in infos:
            s = socket.socket(family, kind, proto)
            s.settimeout(self.connect_timeout)
            try:
                s.connect(sa)
            except OSError as e:  # refused, unreachable, timed out: try the next address
                s.close()
                last = e
                continue
            # Nagle delays each small SSH packet by up to 40 ms; commands are small packets.
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Notice a dead peer in about a minute instead of TCP's ~15.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, val in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, opt):
                    s.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
            s.settimeout(None)
            return s
        if isinstance(last, (socket.timeout, TimeoutError)):
            raise BackendError(self.name, f"no answer from {addr}:{port} within {self.connect_timeout:g}s",
                               "check the address, the port, and any firewall in between")
        if isinstance(last, ConnectionRefusedError):
            raise BackendError(self.name, f"connection refused by {addr}:{port}",
                               "is sshd running there, and on this port (`port = N` in the host)?")
        raise BackendError(self.name, f"cannot connect to {addr}:{port}: {getattr(last, 'strerror', None) or last}",
                           "check the address and the network route")

    def _keys_tried(self) -> str:
        def describe(path: str) -> str:
            try:
                blob = paramiko.PublicBlob.from_file(path + ".pub")
            except (OSError, ValueError):
                return path
            digest = base64.b64encode(hashlib.sha256(blob.key_blob).digest()).decode().rstrip("=")
            return f"{path} (SHA256:{digest})"

        if self.host.identity:
            return "identity " + describe(os.path.expanduser(self.host.identity))
        tried = []
        if os.environ.get("SSH_AUTH_SOCK"):
            tried.append("keys of ssh-agent")
        for n in ("id_rsa", "id_ecdsa", "id_ed25519", "id_dsa"):
            p = os.path.expanduser(f"~/.ssh/{n}")
            if os.path.exists(p):
                tried.append(describe(p))
        return ", ".join(tried) if tried else "no key at all (no `identity`, no ssh-agent, no ~/.ssh/id_*)"

    # ------------------------------------------------------------------ bulk bytes (the OpenSSH client)

    # ------------------------------------------------------------------ bulk bytes (the OpenSSH client)

    def bulk_client(self, command: str) -> Optional[BulkClient]:
        """`ssh ... -- WRAPPED` running `command` on this host with the OpenSSH client; None when unusable.

        Same host key file, identity, user and port as the Fabric connection; the control channel
        (this connection) is what stops the command's process group when the copy is stopped.
        """
        if self.wrap_sudo:  # the sudo prompt handshake lives in the exec channel
            return None
        argv = self._openssh.argv(self.wrap(command))
        if argv is None:
            return None
        return BulkClient(tuple(argv), functools.partial(self._openssh.done, argv), self.kill_groups)

    @property
    def openssh_unusable(self) -> Optional[str]:
        """Why the OpenSSH client cannot be used for this host, once that is known."""
        return self._openssh.unusable

    def host_key(self) -> Tuple[str, str]:
        """(key type, base64) of the host key this connection verified against known_hosts."""
        key = self._transport().get_remote_server_key()
        return key.get_name(), key.get_base64()

    def client_words(self) -> Optional[List[str]]:
        """The OpenSSH client's options reaching this host as mdsl does, without the address (None: no client)."""
        return self._openssh._client_words()

    def _transport(self) -> paramiko.Transport:
        conn = self._conn
        if conn is None or conn.transport is None or not conn.transport.is_active():
            self.connect()  # first use, or the connection dropped since the last command
            conn = self._conn
        return conn.transport

    def forwarding_transport(self) -> paramiko.Transport:
        """The connection's transport, for tunnels (mdsl.run.tunnel): forwards and direct-tcpip channels."""
        return self._transport()

    def close(self) -> None:
        """Close the connection and the OpenSSH master; a later command reconnects."""
        with self._lock:
            self._close_locked()
        self._openssh.close()

    def _close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a dead connection may raise; nothing to save
                pass
            self._conn = None

    # ------------------------------------------------------------------ commands

    def wrap(self, command: str, stdin: bool = True) -> str:
        """The command line sent to sshd for `command` (holds no secret; see ssh_channel.wrap)."""
        return wrap(command, self.token, sudo=self._sudo_wrapper(), stdin=stdin)

    def _sudo_wrapper(self) -> Optional[SudoWrapper]:
        if not self.wrap_sudo:
            return None
        pw = self.host.sudo_password
        return SudoWrapper(self._sudo_password if pw is not None else None, pw.masked() if pw else "nowhere")

    def run(self, command: str, *, stdin: Optional[bytes] = None, timeout: Optional[float] = None) -> Result:
        """Run `command`; collect stdout and stderr; never raises on a non-zero exit."""
        out: List[bytes] = []
        chunks = None if stdin is None else chunks_of(stdin)
        code, err, sig = self._execute(command, out.append, chunks, timeout)
        return Result(code, b"".join(out).decode("utf-8", "replace"), err, sig)

    def read_stream(self, command: str, sink: Callable[[bytes], None], *, timeout: Optional[float] = None) -> Result:
        """Run `command`, feeding its stdout to `sink` in chunks of up to 256 KiB (bounded memory)."""
        code, err, sig = self._execute(command, sink, None, timeout)
        return Result(code, "", err, sig)

    def write_stream(self, command: str, chunks: Iterator[bytes], *, timeout: Optional[float] = None) -> Result:
        """Run `command` with `chunks` as its stdin, then EOF; memory bounded by the channel window."""
        out: List[bytes] = []
        code, err, sig = self._execute(command, capped(out, STDERR_KEEP), iter(chunks), timeout)
        return Result(code, b"".join(out).decode("utf-8", "replace"), err, sig)

    def _execute(self, command: str, on_stdout: Callable[[bytes], None], stdin: Optional[Iterator[bytes]],
                 timeout: Optional[float], *, killer: bool = False) -> Tuple[int, str, Optional[str]]:
        if self.wrap_sudo and reads_sudo_password(command):
            # Our sudo would run it as root, and root's sudo reads no password: the password line meant
            # for the inner sudo would become the command's input (a file's first line, say).
            raise BackendError(self.name, "refusing a command that runs `sudo -S` itself on a backend that "
                               "already wraps every command in sudo", "construct the backend with wrap_sudo=False")
        timeout = self.command_timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        # A kill must not wait for a slot: the commands it stops may hold them all.
        with (contextlib.nullcontext() if killer else self._slots):
            transport = self._transport()
            try:
                ch = transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as e:
                raise BackendError(self.name, f"cannot open a channel to run `{short(command)}`: {e}") from None
            agent = paramiko.agent.AgentRequestHandler(ch) if forward_agent.get() and not killer else None
            ex = ChannelCommand(self.name, transport, ch, command, self.wrap(command, stdin=stdin is not None),
                                on_stdout, stdin, deadline, timeout, sudo=self._sudo_wrapper(),
                                on_started=None if killer else self._started, kill=None if killer else self.kill_groups)
            try:
                return ex.run()
            finally:
                ch.close()
                if agent is not None:
                    agent.close()

    def kill_groups(self, pids: Iterable[int]) -> None:
        """TERM the process groups `pids` now, KILL them a few seconds later (detached: returns at once).

        With sudo the command runs as root and sudo itself drops the user's
        uid, so the signal has to be sent through sudo too.
        """
        groups = " ".join(f"-{p}" for p in pids)
        cmd = (f"kill -TERM {groups} 2>/dev/null; "
               f"(sleep {KILL_GRACE}; kill -KILL {groups} 2>/dev/null) </dev/null >/dev/null 2>&1 &")
        try:
            self._execute(cmd, lambda _: None, None, 10.0, killer=True)
        except BackendError:  # best effort: the connection may be what failed
            pass
