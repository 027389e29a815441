"""One command on its own paramiko exec channel: the wrapper, sudo's handshake, stdin, output, timeout.

Every command is started as

    exec sh -c 'printf "mdsl:pid=%s\\n" $$ >&2; MDSL_RUN=TOKEN; export MDSL_RUN; trap : EXIT # mdsl-run=TOKEN
    CMD'

or, with a sudo wrapper (`wrap_sudo` on a `sudo = true` host; compiled
Commands carry their own sudo, so it is off by default),

    printf 'mdsl:pid=%s\\n' $$ >&2; exec sudo -S -p PROMPT -- sh -c 'printf "mdsl:ready=%s\\n" $$ >&2; ...'

sshd makes each session its own process group (setsid), so the reported pid
is a group id: a timed-out command's whole tree gets `kill -TERM -PID`, then
KILL. The pid goes to `on_started` (apply journals it). The sudo password is
written only after sudo's prompt shows on stderr, so a cached or NOPASSWD
sudo never passes it on as the command's input; it is never in an argv, an
environment variable or a log line. A command killed by a signal reports exit
128 + N and the signal's name (sshd's `exit-signal`, which paramiko alone
ignores).
"""

from __future__ import annotations

import re
import select
import shlex
import signal
import threading
import time
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import paramiko
from attrs import frozen
from paramiko.common import MSG_CHANNEL_REQUEST

from mdsl.run.backend import PID_MARKER_RE, BackendError, CommandTimeout, marker_line

CHUNK = 256 * 1024  # read and write granularity of streams
STDERR_KEEP = 256 * 1024  # stderr kept per command (the tail)

_READY_RE = re.compile(rb"mdsl:ready=(\d+)\n")
_PROMPT = b"mdsl:sudo-password:"


def _channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko's channel request handler, plus `exit-signal` (RFC 4254 6.10), which paramiko ignores.

    sshd sends exit-signal instead of exit-status when the command was killed by a signal;
    paramiko would leave the exit status at -1 and the command would look like a lost
    connection. Here it becomes 128 + the signal's number (as a shell reports it), and the
    signal's name is kept on the channel (`mdsl_exit_signal`).
    """
    start = m.packet.tell()
    try:
        key = m.get_text()
    except Exception:  # noqa: BLE001 - malformed: paramiko's own handler decides
        key = None
    if key != "exit-signal":
        m.packet.seek(start)
        paramiko.Channel._handle_request(chan, m)
        return
    m.get_boolean()  # want reply: always false for exit-signal
    name = m.get_text()
    sig = getattr(signal.Signals, "SIG" + name, None) if name.isalnum() else None
    chan.mdsl_exit_signal = "SIG" + name if name.isalnum() else "an unknown signal"
    chan.exit_status = 128 + int(sig) if sig is not None else 255
    chan.status_event.set()


class FastTransport(paramiko.Transport):
    """A transport preferring AES-GCM (no separate MAC pass; docs/performance.md) that understands `exit-signal`."""

    _preferred_ciphers = tuple(c for c in paramiko.Transport._preferred_ciphers if "gcm" in c) + tuple(
        c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c)
    _channel_handler_table = {**paramiko.Transport._channel_handler_table, MSG_CHANNEL_REQUEST: _channel_request}


@frozen
class SudoWrapper:
    """The backend runs every command under sudo: with the password line for its prompt, or NOPASSWD."""

    password_line: Optional[bytes]  # the password and a newline; None: sudo -n (NOPASSWD expected)
    source: str  # where the password came from, masked (`env(...)`), for messages


def wrap(command: str, token: str, *, sudo: Optional[SudoWrapper] = None, stdin: bool = True) -> str:
    """The command line sent to sshd (holds no secret).

    Without input (`stdin=False`) the command reads /dev/null, so no EOF is ever sent for
    it: paramiko builds an EOF under the channel's lock but sends it after releasing it, so
    one sent as a quick command ends can reach sshd after the channel was freed, and sshd
    then drops the whole connection ("ieof packet referred to nonexistent channel"),
    losing every command in flight on that host.
    """
    null = "" if stdin else "exec </dev/null\n"
    # The run's marker makes the command line of the process group's leader (and of sudo)
    # recognisable, so a later run can stop exactly what this one left running (marker_line).
    mark = f"; {marker_line(token)}\n"
    if sudo is None:
        return "exec sh -c " + shlex.quote("printf 'mdsl:pid=%s\\n' $$ >&2" + mark + null + command)
    inner = "sh -c " + shlex.quote("printf 'mdsl:ready=%s\\n' $$ >&2" + mark + null + command)
    # without a password, NOPASSWD is expected: `-n` fails at once instead of waiting for one
    prefix = f"sudo -S -p {shlex.quote(_PROMPT.decode())} -- " if sudo.password_line is not None else "sudo -n -- "
    return "printf 'mdsl:pid=%s\\n' $$ >&2; exec " + prefix + inner


def reads_sudo_password(command: str) -> bool:
    """True when `command` starts with `sudo ... -S ...` (sudo reading a password from stdin)."""
    try:
        words = shlex.split(command[:400])
    except ValueError:
        return False
    if not words or words[0] != "sudo":
        return False
    takes_arg = set("CDghpRrtTUu")
    i = 1
    while i < len(words) and words[i].startswith("-") and words[i] != "--":
        flags = words[i][1:]
        if not flags.startswith("-") and "S" in flags:
            return True
        if flags and flags[-1] in takes_arg and len(flags) == 1:
            i += 1
        i += 1
    return False


def short(command: str, limit: int = 120) -> str:
    """A command on one line, cut at `limit` characters, for messages."""
    one = " ".join(command.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def chunks_of(data: bytes) -> Iterator[bytes]:
    """`data` in CHUNK-sized pieces."""
    view = memoryview(data)
    for i in range(0, len(data), CHUNK):
        yield bytes(view[i:i + CHUNK])


def capped(buf: List[bytes], limit: int) -> Callable[[bytes], None]:
    """A sink appending to `buf` until it holds `limit` bytes, dropping the rest."""
    size = [0]

    def add(b: bytes) -> None:
        if size[0] < limit:
            buf.append(b[: limit - size[0]])
            size[0] += len(buf[-1])

    return add


class ChannelCommand:
    """One command on its own channel: start, sudo handshake, stdin, output pump, timeout.

    `on_started(command, pid, inner_pid)` learns the command's process group; `kill(pids)` stops
    groups through another channel (both None for the kill command itself).
    """

    def __init__(self, host: str, transport: paramiko.Transport, ch: paramiko.Channel, command: str,
                 wrapped: str, on_stdout: Callable[[bytes], None], stdin: Optional[Iterator[bytes]],
                 deadline: Optional[float], timeout: Optional[float], sudo: Optional[SudoWrapper] = None,
                 on_started: Optional[Callable[[str, int, Optional[int]], None]] = None,
                 kill: Optional[Callable[[Iterable[int]], None]] = None):
        self.host, self.transport, self.ch, self.command, self.wrapped = host, transport, ch, command, wrapped
        self.on_stdout, self.stdin, self.deadline, self.timeout = on_stdout, stdin, deadline, timeout
        self.sudo, self.on_started, self.kill = sudo, on_started, kill
        self.pid: Optional[int] = None  # the login shell's, a process group (sshd setsid()s sessions)
        self.inner_pid: Optional[int] = None  # sudo's command's shell (its own group if sudo uses a pty)
        self.ready = False
        self.pre = b""  # stderr before the command proper started (markers, sudo's messages)
        self.err = bytearray()
        self.err_dropped = 0
        self.prompts = 0
        self.writer: Optional[threading.Thread] = None
        self.writer_error: Optional[BaseException] = None
        self.aborted = False
        self.abort_lock = threading.Lock()

    def run(self) -> Tuple[int, str, Optional[str]]:
        """(exit status, stderr, signal name); raises BackendError when the command cannot be run to its end."""
        try:
            self.ch.exec_command(self.wrapped)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise BackendError(self.host, f"cannot start `{short(self.command)}`: {e}") from None
        try:
            self._pump()
            self._drain()
        except (EOFError, paramiko.SSHException, OSError) as e:
            self._abort()
            if e is self.writer_error:
                raise  # the stdin producer failed (e.g. the source disk): its own error, not the link's
            # paramiko reports a dead transport from recv/send as any of these
            raise self._lost() from None
        except BaseException:
            self._abort()
            raise
        return self._outcome()

    # -- moving output

    def _pump(self) -> None:
        """Move output until the command has ended (end of output and an exit status)."""
        fd = self.ch.fileno()
        while True:
            busy = self._receive()
            if self.writer_error is not None:
                raise self.writer_error
            if busy:
                continue
            if self._ended():
                return
            self._wait(fd)

    def _receive(self) -> bool:
        ch = self.ch
        busy = False
        if ch.recv_ready():
            data = ch.recv(CHUNK)
            if data:
                self.on_stdout(data)
            busy = True
        if ch.recv_stderr_ready():
            self._stderr(ch.recv_stderr(CHUNK))
            busy = True
        return busy

    def _ended(self) -> bool:
        ch = self.ch
        if ch.eof_received and ch.exit_status_ready():
            return True
        if ch.closed or not self.transport.is_active():
            if self.transport.is_active() and ch.exit_status_ready():
                return True
            raise self._lost()
        return False

    def _wait(self, fd: int) -> None:
        wait = 1.0
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self._timed_out()
            wait = min(wait, left)
        if self.ch.eof_received:
            self.ch.status_event.wait(wait)  # stdout/stderr ended; the exit status is on its way
        else:
            select.select([fd], [], [], wait)

    def _drain(self) -> None:
        """What arrived with the end of output."""
        ch = self.ch
        while ch.recv_ready() or ch.recv_stderr_ready():
            if ch.recv_ready():
                self.on_stdout(ch.recv(CHUNK))
            if ch.recv_stderr_ready():
                self._stderr(ch.recv_stderr(CHUNK))

    def _outcome(self) -> Tuple[int, str, Optional[str]]:
        if self.writer is not None:
            self.writer.join()
            if self.writer_error is not None:
                raise self.writer_error
        code = self.ch.recv_exit_status()
        if code == -1 and not self.transport.is_active():  # paramiko's default: no exit status came
            raise self._lost()
        sig = getattr(self.ch, "mdsl_exit_signal", None)  # killed by a signal (_channel_request)
        if self.sudo is not None and not self.ready:
            msg = PID_MARKER_RE.sub(b"", self.pre.replace(_PROMPT, b"")).decode("utf-8", "replace")
            msg = msg.strip() or f"sudo exited with {code}"
            raise BackendError(self.host, f"sudo refused to run `{short(self.command)}`: {msg}",
                               "check the user's sudo rights (`sudo -l` on the host)")
        err = self.err.decode("utf-8", "replace")
        if self.err_dropped:
            err = f"[{self.err_dropped} bytes of stderr dropped]\n" + err
        return code, err, sig

    # -- stderr: markers first, then the command's own

    def _stderr(self, data: bytes) -> None:
        if self.ready:
            self._keep_err(data)
            return
        self.pre += data
        if self.pid is None:
            m = PID_MARKER_RE.search(self.pre)
            if m is None:
                return
            self.pid = int(m.group(1))
            before, self.pre = self.pre[: m.start()], self.pre[m.end():]
            if self.sudo is None:
                # before: a login script's noise (ssh shows it too); after: the command's own stderr
                self._keep_err(before + self.pre)
                self.pre = b""
                self._become_ready()
                return
        self._sudo_handshake()

    def _sudo_handshake(self) -> None:
        """A prompt asks for the password; the ready marker means the command started."""
        m = _READY_RE.search(self.pre)
        if m is not None:
            self.inner_pid = int(m.group(1))
            rest = self.pre[m.end():]
            self.pre = self.pre[:m.start()]
            self._become_ready()
            self._keep_err(rest)
            return
        n = self.pre.count(_PROMPT)
        if n > self.prompts:
            self.prompts = n
            if n > 1 or self.sudo.password_line is None:
                msg = self.pre.replace(_PROMPT, b"").decode("utf-8", "replace").strip()
                raise BackendError(self.host, f"sudo rejected the password from {self.sudo.source}"
                                   + (f" ({msg})" if msg else ""), "check `sudo_password` in the host's declaration")
            self.ch.sendall(self.sudo.password_line)

    def _keep_err(self, data: bytes) -> None:
        if not data:
            return
        self.err += data
        if len(self.err) > STDERR_KEEP:
            cut = len(self.err) - STDERR_KEEP
            self.err_dropped += cut
            del self.err[:cut]

    def _become_ready(self) -> None:
        self.ready = True
        if self.on_started is not None:
            self.on_started(self.command, self.pid, self.inner_pid)
        if self.stdin is None:
            return  # the command reads /dev/null (wrap): no EOF to send
        self.writer = threading.Thread(target=self._write, name=f"mdsl-stdin-{self.host}", daemon=True)
        self.writer.start()

    def _write(self) -> None:
        try:
            for chunk in self.stdin:  # an exception of the producer lands in the outer except
                if not chunk:
                    continue
                try:
                    self.ch.sendall(chunk)
                except (OSError, EOFError, paramiko.SSHException):
                    # The command exited without reading all its input (or a timeout closed the
                    # channel): its exit status tells the story.
                    return
            ch = self.ch
            if not (ch.closed or ch.exit_status_ready()):  # it ended: no EOF after the end (see wrap())
                try:
                    ch.shutdown_write()
                except (OSError, EOFError, paramiko.SSHException):
                    pass
        except BaseException as e:  # the producer failed: the command must not see a clean EOF
            self.writer_error = e
            self._abort()

    # -- ending early

    def _lost(self) -> BackendError:
        return BackendError(self.host, f"connection lost while running `{short(self.command)}`",
                            "the command may still be running on the host; re-running apply resumes")

    def _timed_out(self) -> None:
        raise CommandTimeout(self.host, f"`{short(self.command)}` ran longer than {self.timeout:g}s and was stopped",
                             "raise the step's `timeout = N` (seconds) if it needs longer")

    def _abort(self) -> None:
        """Stop the remote command (its whole process group), then close the channel.

        Called from the reading thread and the stdin writer alike; the second caller waits for the
        first, so the channel never closes before the kill landed (closing gives the command EOF, and
        a `cat > FILE.part` would then finish as if the stream were complete).
        """
        with self.abort_lock:
            if self.aborted:
                return
            self.aborted = True
            try:
                if self.pid is not None and self.kill is not None and not self.ch.exit_status_ready():
                    self.kill(p for p in (self.pid, self.inner_pid) if p is not None)
            except (BackendError, EOFError, paramiko.SSHException, OSError):
                pass  # the connection is gone: the command lost its stdin and ends without a clean EOF
            try:
                self.ch.close()
            except (EOFError, paramiko.SSHException, OSError):
                pass
