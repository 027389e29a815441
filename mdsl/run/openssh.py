"""The OpenSSH client as the road for bulk bytes to one host: its options, one shared connection, probes.

A large `via = stream` copy runs its two ends as OpenSSH client processes
(mdsl.run.pipe) while the paramiko connection stays the control channel
(docs/performance.md says why). The clients of a host are sessions of one
OpenSSH connection that mdsl opens at the first bulk copy and keeps for the
run (`Master`); when it cannot be opened, clients connect on their own, and
when no client works at all the copy takes paramiko channels.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import List, Optional, Tuple

from mdsl.model import Host
from mdsl.run import log

MUX_SESSIONS = 8  # bulk clients sharing one OpenSSH master (its own session is one more)


class OpenSshRoutes:
    """How OpenSSH clients reach one host: their options, the shared master and its session slots."""

    def __init__(self, host: Host, known_hosts_file: str, connect_timeout: float):
        self.host = host
        self.known_hosts_file = known_hosts_file
        self.connect_timeout = connect_timeout
        self.unusable: Optional[str] = None  # why the client cannot be used, when it cannot
        self._lock = threading.Lock()
        self._words: Optional[List[str]] = None  # the client's words without the address; [] = unusable
        self._master: Optional[Master] = None
        self._slots = threading.BoundedSemaphore(MUX_SESSIONS)
        self._held: set = set()  # id() of the argvs holding a slot, until done()

    def argv(self, wrapped: str) -> Optional[List[str]]:
        """`ssh ... -- WRAPPED` for this host; None when the client is unusable.

        The first use opens one OpenSSH connection to the host (a master, see
        Master) and runs `true` through it; any failure there means "use
        paramiko". Later clients run their command as a session of that
        connection: no key exchange and no authentication per copy. At most
        MUX_SESSIONS clients share it (sshd's MaxSessions is 10, the master's
        own session is one); beyond that a client connects on its own. Hand
        the argv back to done() when its process has ended.
        """
        with self._lock:
            if self._words is None or (self._master is not None and not self._master.alive()):
                self._words = self._start()
            base, master = self._words, self._master
        if not base:
            return None
        tail = ["--", wrapped]
        if master is not None and self._slots.acquire(blocking=False):
            argv = base + master.client_options() + [self.host.address] + tail
            with self._lock:
                self._held.add(id(argv))
            return argv
        return base + NO_MUX + [self.host.address] + tail

    def done(self, argv: List[str]) -> None:
        """The client started with `argv` (from argv()) has ended: free its session slot."""
        with self._lock:
            held = id(argv) in self._held
            self._held.discard(id(argv))
        if held:
            self._slots.release()

    def close(self) -> None:
        """Close the master; a later argv() opens a new one."""
        with self._lock:
            master, self._master = self._master, None
            if master is not None:
                self._words = None
        if master is not None:
            master.close()

    def _client_words(self) -> Optional[List[str]]:
        """The OpenSSH client's options for this host, without the address (options go before it)."""
        client = openssh_client()
        if client is None:
            return None
        path, ciphers = client
        h = self.host
        words = [path, "-T", "-x", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                 "-o", "UserKnownHostsFile=" + self.known_hosts_file,
                 "-o", f"ConnectTimeout={max(1, int(self.connect_timeout + 0.999))}",
                 "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                 "-o", "Compression=no", "-o", "LogLevel=ERROR", "-p", str(h.port)]
        if h.known_hosts:  # paramiko reads only that file then; so must ssh
            words += ["-o", "GlobalKnownHostsFile=/dev/null"]
        if ciphers:
            words += ["-o", "Ciphers=" + ciphers]
        if h.user:
            words += ["-l", h.user]
        if h.identity:
            words += ["-i", os.path.expanduser(h.identity), "-o", "IdentitiesOnly=yes"]
        return words

    def _start(self) -> List[str]:
        """Open the master (or, with MDSL_SSH_MUX=0, probe a plain client); [] and `unusable` on failure."""
        if self._master is not None:  # it died (the host rebooted, the network dropped): open a new one
            self._master.close()
            self._master = None
        words = self._client_words()
        if not words:
            self.unusable = "no `ssh` client on this machine"
            return []
        timeout = self.connect_timeout + 10
        if os.environ.get("MDSL_SSH_MUX", "1") != "0":
            self._master, why = Master.open(words, self.host.address, timeout)
            if why is not None:  # a plain client may still work (a shared connection is only faster)
                log.get_logger().info("ssh.master_unusable", host=self.host.name, why=why)
        why = None if self._master is not None else run_probe(words + NO_MUX + [self.host.address, "--", "true"],
                                                              timeout)
        if why is not None:
            self.unusable = why
            return []
        return words


# Preferred first: AES-GCM runs on AES-NI with no separate MAC pass; the rest keeps OpenSSH's order.
_OPENSSH_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                    "aes128-ctr", "aes192-ctr", "aes256-ctr")
_openssh_cache: dict = {}


def openssh_client() -> Optional[Tuple[str, str]]:
    """(path of the `ssh` client, the cipher list to ask for) or None when there is no client."""
    if "v" not in _openssh_cache:
        path = shutil.which("ssh")
        found = None
        if path:
            try:
                out = subprocess.run([path, "-Q", "cipher"], capture_output=True, text=True, timeout=10).stdout
                known = set(out.split())
            except (OSError, subprocess.TimeoutExpired):
                known = set()
            found = (path, ",".join(c for c in _OPENSSH_CIPHERS if c in known))
        _openssh_cache["v"] = found
    return _openssh_cache["v"]


# A client that must not touch a master: the user's ssh_config may say `ControlMaster auto` and
# `ControlPersist`, whose backgrounded master would hold our stderr pipe open past the copy.
NO_MUX = ["-o", "ControlMaster=no", "-o", "ControlPath=none"]


def run_probe(argv: List[str], timeout: float) -> Optional[str]:
    """Run `ssh ... true`; None when it worked, else why not."""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode != 0:
        return r.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit {r.returncode}"
    return None


_stale_swept = False
_TMP_MAX = 56  # + /mdsl-ssh-PID-XXXXXXXX/s.XXXXXXXXXXXXXXXX < 108


def _sweep_stale_control_dirs(tmp: str) -> None:
    """Remove control dirs of mdsl processes that are gone (killed before they could clean up)."""
    global _stale_swept
    if _stale_swept:
        return
    _stale_swept = True
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(r"mdsl-ssh-([0-9]+)-[A-Za-z0-9_]+", name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except OSError:
            continue
        path = os.path.join(tmp, name)
        if os.path.isdir(path) and not os.path.islink(path) and os.stat(path).st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


class Master:
    """One OpenSSH connection to a host that bulk clients share (`ControlMaster`), owned by this process.

    It runs `exec cat >/dev/null` on the host with its stdin a pipe from mdsl,
    in its own session (a Ctrl-C reaches mdsl, not it). Its control socket is
    in a 0700 directory of its own under the temp dir. When mdsl closes the
    pipe, or dies, even by SIGKILL, the remote `cat` sees end of file, the
    session ends and the master exits, removing its socket; nothing is left
    behind but, after a kill, the empty directory, which the next mdsl that
    opens a master removes. No `ControlPersist`: that would daemonize the
    master away from mdsl and leave it running after a crash.
    """

    def __init__(self, words: List[str], address: str):
        tmp = tempfile.gettempdir()
        if len(tmp) > _TMP_MAX and os.path.isdir("/tmp"):
            tmp = "/tmp"  # a socket's path has at most 107 bytes, and ssh adds a 17-byte suffix while binding
        _sweep_stale_control_dirs(tmp)
        self.dir = tempfile.mkdtemp(prefix=f"mdsl-ssh-{os.getpid()}-", dir=tmp)  # 0700
        self.path = os.path.join(self.dir, "s")
        self._words, self._address = words, address
        self._err = open(os.path.join(self.dir, "err"), "w+b")
        try:
            self.p = subprocess.Popen(
                words + ["-o", "ControlMaster=yes", "-o", "ControlPath=" + self.path, "-o", "ControlPersist=no",
                         address, "--", "exec cat >/dev/null"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err, start_new_session=True)
        except OSError:
            self._err.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @classmethod
    def open(cls, words: List[str], address: str, timeout: float) -> Tuple[Optional["Master"], Optional[str]]:
        """(the master, None) once a command ran through it; (None, why) when it could not be opened."""
        try:
            m = cls(words, address)
        except OSError as e:
            return None, str(e)
        why = m._wait_ready(timeout)
        if why is None:
            why = run_probe(words + m.client_options() + [address, "--", "true"], timeout)
        if why is not None:
            m.close()
            return None, why
        return m, None

    def _wait_ready(self, timeout: float) -> Optional[str]:
        """Wait for the control socket (made once the host has authenticated us) or the master's exit."""
        deadline = time.monotonic() + timeout
        pause = 0.002
        while not os.path.exists(self.path):
            if self.p.poll() is not None:
                return self._stderr() or f"exit {self.p.returncode}"
            if time.monotonic() > deadline:
                return f"no connection after {timeout:g}s"
            time.sleep(pause)
            pause = min(pause * 1.5, 0.05)
        return None

    def _stderr(self) -> str:
        try:
            self._err.seek(0)
            return self._err.read()[-4096:].decode("utf-8", "replace").strip()[-300:]
        except (OSError, ValueError):
            return ""

    def client_options(self) -> List[str]:
        """Options that make a client a session of this master (ControlMaster=no: never become one)."""
        return ["-o", "ControlMaster=no", "-o", "ControlPath=" + self.path]

    def alive(self) -> bool:
        return self.p.poll() is None and os.path.exists(self.path)

    def close(self) -> None:
        """End of file to the remote `cat`, so the master ends its session and exits; then by signal."""
        try:
            self.p.stdin.close()
        except OSError:
            pass
        for stop in (None, self.p.terminate, self.p.kill):
            if stop is not None:
                try:
                    stop()
                except OSError:
                    pass
            try:
                self.p.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        self._err.close()
        shutil.rmtree(self.dir, ignore_errors=True)
