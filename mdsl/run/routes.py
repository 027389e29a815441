"""Routes of copies between two SSH hosts: arranged for one copy, proven in preflight (P412), removed after.

Compile (mdsl/compile/routes.py) made rsync/scp on the source read the ssh_config
in `$MDSL_ROUTE_DIR`. Opening a route for one copy:

1. the source makes a key pair in a fresh 0700 `mdsl-route.XXXXXXXX` dir in its
   TMPDIR (the private half never leaves it);
2. the target gets the public half in the login user's ~/.ssh/authorized_keys
   as `restrict KEY mdsl-route:MARKER` (no pty, no forwarding, no agent);
3. the source gets a known_hosts holding the key the control machine verified
   for the target when it connected (never trust-on-first-use), and the
   ssh_config naming the target's address (direct) or the source's end of a
   tunnel (relay: `ssh -R 127.0.0.1:0:TARGET:PORT` from the control machine to
   the source, which the control's own ssh process carries).

Each piece is journaled before it exists (the marker) or as soon as its path is
known (the dir), and removed when the copy ends; what a killed run left, the
next apply removes (`remove_leftovers`, from mdsl.run.leftovers) after it has
stopped the copy that run left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shlex
import signal
import subprocess
import threading
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from mdsl.compile.files import SSH_CIPHERS
from mdsl.compile.parts import Arg, Command, Lit, sh
from mdsl.compile.routes import ROUTE_DIR_VAR, TARGET_ALIAS, Route
from mdsl.model import Host
from mdsl.run import log
from mdsl.run.backend import BackendError, forward_agent
from mdsl.run.log import redact_text
from mdsl.run.openssh import NO_MUX

ROUTE_DIR_RE = re.compile(r"/(?:[^\s\0]*/)?mdsl-route\.[A-Za-z0-9]{8}")
MARKER_RE = re.compile(r"mdsl-route:[0-9a-f]{16}")
PROBE_TIMEOUT = 30.0
TUNNEL_TIMEOUT = 20.0

# Makes the route's dir in the source's TMPDIR (/tmp when TMPDIR has blanks: rsync splits its -e on them).
_MAKE_DIR = ('umask 077 && t=${TMPDIR:-/tmp} && case $t in *[[:space:]]*) t=/tmp;; esac && '
             'd=$(mktemp -d "$t/mdsl-route.XXXXXXXX") && printf "%s\\n" "$d"')
_MAKE_KEY = ' && ssh-keygen -q -t ed25519 -N "" -C mdsl-route -f "$d/key" </dev/null >/dev/null && cat "$d/key.pub"'

# $1: the marker. Removes the lines carrying it from ~/.ssh/authorized_keys by a rename, so that sshd,
# reading the file for another copy's login meanwhile, never sees it half written; its mode stays (a
# symlinked file is rewritten in place instead).
_UNAUTHORIZE = ('f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; t="$f.mdsl-route.$$"; umask 077; '
                'grep -v -F -e "$1" -- "$f" > "$t"; rc=$?; '
                'if [ "$rc" -le 1 ]; then if [ -L "$f" ]; then cat -- "$t" > "$f"; '
                'else chmod --reference="$f" -- "$t" 2>/dev/null; mv -f -- "$t" "$f"; fi; rc=$?; fi; '
                'rm -f -- "$t"; exit $rc')


class RouteError(Exception):
    """A route could not be opened or does not work; `message` says which part and why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # the tunnel must not outlive a killed mdsl: PR_SET_PDEATHSIG(SIGKILL)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Tunnel:
    """`ssh -N -R 127.0.0.1:0:TARGET:PORT SOURCE` from the control machine: the source's end of a relay."""

    def __init__(self, words: List[str], source: Host, target: Host):
        # the first -o wins in ssh: INFO before the words' LogLevel=ERROR, so it says which port it got
        argv = [words[0], "-o", "LogLevel=INFO", "-o", "ExitOnForwardFailure=yes", "-N",
                "-R", f"127.0.0.1:0:{target.address}:{target.port}", *words[1:], *NO_MUX, source.address]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        self.port: Optional[int] = None
        self._said: List[str] = []
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self._said.append(line.rstrip())
                m = re.search(r"Allocated port (\d+) for remote forward", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(TUNNEL_TIMEOUT)
        if self.port is None:
            self.close()
            raise RouteError(f"the tunnel from this machine to {source.name} did not open: "
                             + ("; ".join(self._said[-3:]) or "no answer"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Routes:
    """Opens, proves and closes the routes of one apply; `modes` holds what preflight chose for `auto`."""

    def __init__(self, executor, backends: Mapping[str, object], hosts: Mapping[str, Host], journal=None):
        self.executor = executor
        self.backends = backends
        self.hosts = hosts
        self.journal = journal
        self.modes: Dict[Tuple[str, str, str], str] = {}  # (source, target, the plan's mode) -> mode proven
        # parallel copies to one target edit one authorized_keys: one edit at a time per host (a removal
        # rewrites the file from what it read, and would drop a key added meanwhile)
        self._key_locks: Dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # -- preflight

    def prove(self, route: Route) -> Optional[str]:
        """Open the route and log in to the target through it; None when it works, else why not.

        `auto` tries direct, then relay, and remembers the first that works for the copy to use.
        """
        key = (route.source, route.target, route.mode)
        if key in self.modes:
            return None
        tries = ("direct", "relay") if route.mode == "auto" else (route.mode,)
        whys = []
        for mode in tries:
            try:
                with self.opened(route, mode) as prefix:
                    self._login(route, prefix)
                self.modes[key] = mode
                return None
            except RouteError as exc:
                whys.append(f"{mode}: {exc.message}")
        return "; ".join(whys)

    def _login(self, route: Route, prefix: str) -> None:
        cmd = _as_copy(self.hosts[route.source], sh(Lit(prefix), Lit(f'ssh -F "${ROUTE_DIR_VAR}/config"'),
                                                    Arg(TARGET_ALIAS), "true"), tools=("ssh",))
        res = self._run(cmd)
        if not res.ok:
            raise RouteError(f"{route.source} cannot log in to {route.target} through it: "
                             f"{_tail(res.stderr) or f'ssh exit {res.exit}'}")

    # -- a copy's route

    def mode_of(self, route: Route) -> str:
        """The mode preflight chose (or the plan's)."""
        return self.modes.get((route.source, route.target, route.mode),
                              "direct" if route.mode == "auto" else route.mode)

    @contextlib.contextmanager
    def opened(self, route: Route, mode: Optional[str] = None) -> Iterator[str]:
        """Arrange the route; yields the shell text (`MDSL_ROUTE_DIR=...;`) to put before the copy's command."""
        mode = mode or self.mode_of(route)
        src, dst = self.hosts[route.source], self.hosts[route.target]
        marker = "mdsl-route:" + secrets.token_hex(8)
        tunnel: Optional[Tunnel] = None
        route_dir: Optional[str] = None
        authorized = False
        agent = None
        try:
            host_key = self._host_key(dst)
            if mode == "agent" and not os.environ.get("SSH_AUTH_SOCK"):
                raise RouteError("`route = agent` forwards this machine's ssh-agent, and none runs here "
                                 "(SSH_AUTH_SOCK is not set)")
            route_dir, public = self._make_dir(src, keygen=mode != "agent")
            if public is not None:
                self._authorize(dst, public, marker)
                authorized = True
            address, port = dst.address, dst.port
            if mode == "relay":
                tunnel = self._tunnel(src, dst)
                address, port = "127.0.0.1", tunnel.port
            self._write_config(src, route_dir, dst, address, port, host_key, key=public is not None)
            log.get_logger().info("route.open", source=src.name, target=dst.name, mode=mode)
            if mode == "agent":
                agent = forward_agent.set(True)
            try:
                yield f"{ROUTE_DIR_VAR}={shlex.quote(route_dir)};"
            finally:
                if agent is not None:
                    forward_agent.reset(agent)
        finally:
            if tunnel is not None:
                tunnel.close()
            if authorized:
                self._unauthorize(dst, marker)
            if route_dir is not None:
                self._remove_dir(src, route_dir)

    # -- the pieces

    def _run(self, cmd: Command, timeout: float = PROBE_TIMEOUT):
        try:
            return self.executor.run(cmd, timeout=timeout)
        except BackendError as exc:
            raise RouteError(exc.message) from None

    def _host_key(self, dst: Host) -> Tuple[str, str]:
        backend = self.backends.get(dst.name)
        if backend is None or not hasattr(backend, "host_key"):
            raise RouteError(f"this machine holds no verified host key of {dst.name}")
        try:
            return backend.host_key()
        except BackendError as exc:
            raise RouteError(exc.message) from None

    def _make_dir(self, src: Host, keygen: bool) -> Tuple[str, Optional[str]]:
        script = _MAKE_DIR + (_MAKE_KEY if keygen else "")
        res = self._run(_as_copy(src, sh("sh -c", Arg(script)), tools=("ssh-keygen", "mktemp")))
        lines = res.stdout.splitlines()
        if lines and ROUTE_DIR_RE.fullmatch(lines[0]):
            self._journal("route_placed", src.name, "dir", lines[0])
        if not res.ok or len(lines) < 1 + keygen or not ROUTE_DIR_RE.fullmatch(lines[0]):
            if lines and ROUTE_DIR_RE.fullmatch(lines[0]):
                self._remove_dir(src, lines[0])
            raise RouteError(f"cannot make a key pair on {src.name} (ssh-keygen, mktemp): "
                             f"{_tail(res.stderr) or f'exit {res.exit}'}")
        if not keygen:
            return lines[0], None
        public = lines[1].split()
        if len(public) < 2 or not public[0].startswith("ssh-ed25519"):
            self._remove_dir(src, lines[0])
            raise RouteError(f"ssh-keygen on {src.name} printed no ed25519 public key")
        return lines[0], f"{public[0]} {public[1]}"

    def _key_lock(self, host: str) -> threading.Lock:
        with self._locks_lock:
            return self._key_locks.setdefault(host, threading.Lock())

    def _authorize(self, dst: Host, public: str, marker: str) -> None:
        self._journal("route_placed", dst.name, "key", marker)
        line = f"restrict {public} {marker}"
        with self._key_lock(dst.name):
            res = self._run(Command(dst.name, sh(
                'umask 077 && mkdir -p -- "$HOME/.ssh" && printf "%s\\n"', Arg(line),
                '>> "$HOME/.ssh/authorized_keys"'), tools=("mkdir",)))
        if not res.ok:
            self._unauthorize(dst, marker)
            raise RouteError(f"cannot add the copy's key to {dst.name}'s ~/.ssh/authorized_keys: "
                             f"{_tail(res.stderr) or f'exit {res.exit}'}")

    def _tunnel(self, src: Host, dst: Host) -> Tunnel:
        backend = self.backends.get(src.name)
        words = backend.client_words() if backend is not None and hasattr(backend, "client_words") else None
        if not words:
            raise RouteError(f"no OpenSSH client on this machine to open a tunnel to {src.name}")
        return Tunnel(words, src, dst)

    def _write_config(self, src: Host, route_dir: str, dst: Host, address: str, port: int,
                      host_key: Tuple[str, str], key: bool) -> None:
        # route = agent: no key file, the forwarded agent's keys (ssh's default IdentityAgent)
        ident = [f'  IdentityFile "{route_dir}/key"', "  IdentitiesOnly yes"] if key else []
        config = [f"Host {TARGET_ALIAS}", f"  HostName {address}", f"  Port {int(port)}", *ident,
                  f'  UserKnownHostsFile "{route_dir}/known_hosts"', "  GlobalKnownHostsFile /dev/null",
                  f"  HostKeyAlias {TARGET_ALIAS}", "  StrictHostKeyChecking yes", "  UpdateHostKeys no",
                  "  CheckHostIP no", "  BatchMode yes", "  PasswordAuthentication no", "  ForwardAgent no",
                  "  ControlMaster no", "  ConnectTimeout 10", "  ServerAliveInterval 15", f"  Ciphers {SSH_CIPHERS}",
                  "  LogLevel ERROR"]
        if dst.user:
            config.append(f"  User {dst.user}")
        known = f"{TARGET_ALIAS} {host_key[0]} {host_key[1]}"
        res = self._run(_as_copy(src, sh(
            "umask 077 && printf '%s\\n'", Arg(known), ">", Arg(route_dir + "/known_hosts"),
            "&& printf '%s\\n'", *[Arg(c) for c in config], ">", Arg(route_dir + "/config"))))
        if not res.ok:
            raise RouteError(f"cannot write the route's known_hosts and ssh_config on {src.name}: "
                             f"{_tail(res.stderr) or f'exit {res.exit}'}")

    def _unauthorize(self, dst: Host, marker: str) -> None:
        with self._key_lock(dst.name):
            removed = remove_key(self.executor, dst.name, marker)
        if removed:
            self._journal("route_removed", dst.name, "key", marker)
        else:
            log.get_logger().warning("route.key_left", host=dst.name, marker=marker)

    def _remove_dir(self, src: Host, route_dir: str) -> None:
        if remove_dir(self.executor, src, route_dir):
            self._journal("route_removed", src.name, "dir", route_dir)
        else:
            log.get_logger().warning("route.dir_left", host=src.name, path=route_dir)

    def _journal(self, what: str, host: str, kind: str, value: str) -> None:
        if self.journal is not None:
            getattr(self.journal, what)(host, kind, value)


def remove_key(executor, host: str, marker: str) -> bool:
    """Remove the authorized_keys lines carrying `marker` on `host` (only a marker of mdsl's shape)."""
    if not MARKER_RE.fullmatch(marker):
        return False
    try:
        res = executor.run(Command(host, sh("sh -c", Arg(_UNAUTHORIZE), "mdsl-route", Arg(marker)),
                                   tools=("grep", "cat")), timeout=PROBE_TIMEOUT)
    except BackendError:
        return False
    return res.ok


def _as_copy(src: Host, parts, tools=()) -> Command:
    """A command on the source as its copy runs there: under sudo on a `sudo = true` host, so that ssh
    accepts the route's config and key as its own (it refuses a config another user owns)."""
    return Command(src.name, parts, sudo=src.sudo, sudo_password=src.sudo_password, tools=tools)


def remove_dir(executor, src: Host, route_dir: str) -> bool:
    """`rm -rf` a route's dir on `src` (only a path of mktemp's `mdsl-route.XXXXXXXX` shape)."""
    if not ROUTE_DIR_RE.fullmatch(route_dir):
        return False
    try:
        res = executor.run(_as_copy(src, sh("rm -rf --", Arg(route_dir))), timeout=PROBE_TIMEOUT)
    except BackendError:
        return False
    return res.ok


def _tail(text: str) -> str:
    return redact_text(" ".join(text.strip().splitlines()[-3:]))[-300:]
