"""Copying an artifact between hosts: into `PATH.part`, checksum-verified, renamed atomically.

`via = stream` (the default) pipes the source backend's `read_stream` into the
target backend's `write_stream` through a bounded queue, hashing every chunk
on the way (one pass over the data). The target then hashes what landed
(`sha256sum < PATH.part`); only when both agree is the part renamed over the
destination. A `.part` left by a broken transfer is resumed (the rest is
appended), and then both ends are hashed whole; a mismatch starts over once.
Directories (a `pg_dump -Fd`) travel as a tar stream and are compared with a
tree hash on both ends. Both ends may be the same machine.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import queue
import re
import subprocess
import threading
from typing import Callable, List, Optional

from attrs import frozen

from mdsl.model import Host
from mdsl.compile.actions import (
    CopyArtifact, hash_command, parse_hash_answer, parse_size_answer, size_command, untrusted_answer,
)
from mdsl.compile.parts import Arg, Command, sh
from mdsl.run.backend import Result

_QUEUE_DEPTH = 8  # chunks in flight between the two backends (bounded memory)

# Streams at least this large go through two OpenSSH clients (SshBackend.openssh_argv) instead of two
# paramiko channels: measured by bench/transfer.py, the OpenSSH route moves 1 GiB in about half the time,
# and starting the two clients (~0.1 s) is noise from this size on. MDSL_STREAM=paramiko|openssh forces one.
BULK_MIN = 16 << 20
_BULK_BUF = 1 << 20  # one read, one hash update, one write per MiB: memory stays at one buffer
_PID_RE = re.compile(rb"mdsl:pid=(\d+)\n")
_ERR_KEEP = 64 * 1024


class TransferError(Exception):
    """A copy failed or did not verify."""

    def __init__(self, message: str, host: Optional[str] = None, command: Optional[str] = None,
                 stderr: str = ""):
        super().__init__(message)
        self.message, self.host, self.command, self.stderr = message, host, command, stderr


@frozen
class Copied:
    """What a finished copy moved and what it verified."""

    sha256: str
    size: int
    bytes_sent: int
    resumed: bool = False


class _Cancelled(Exception):
    pass


def _cmd(host: Host, *items) -> Command:
    return Command(host.name, sh(*items), sudo=host.sudo, sudo_password=host.sudo_password)


class Copier:
    """Performs one CopyArtifact with an executor that runs Commands on hosts."""

    def __init__(self, executor, hosts, on_bytes: Callable[[int], None] = lambda n: None,
                 on_total: Callable[[int], None] = lambda n: None):
        self.x = executor
        self.hosts = hosts
        self.on_bytes = on_bytes
        self.on_total = on_total

    # -- helpers

    def _ok(self, cmd: Command, what: str, timeout: Optional[float] = None) -> Result:
        res = self.x.run(cmd, timeout=timeout)
        if not res.ok:
            raise TransferError(f"{what} failed (exit {res.exit})", cmd.host, cmd.render(masked=True), res.stderr)
        return res

    def _stat(self, host: Host, path: str):
        cmd = size_command(host.name, path, sudo=host.sudo, sudo_password=host.sudo_password)
        return self._answer(cmd, self._ok(cmd, f"looking at {path}"), parse_size_answer, f"`stat` of {path}")

    @staticmethod
    def _answer(cmd: Command, res: Result, parse, what: str):
        # A hash or size is only taken from an answer of exactly the expected shape.
        got = parse(res.stdout)
        if got is None:
            raise TransferError(untrusted_answer(cmd.host, what, res.stdout), cmd.host, cmd.render(masked=True),
                                res.stderr)
        return got

    def _hash(self, host: Host, path: str):
        cmd = hash_command(host.name, path, sudo=host.sudo, sudo_password=host.sudo_password)
        return self._answer(cmd, self._ok(cmd, f"hashing {path}"), parse_hash_answer, f"`sha256sum` of {path}")

    def _file_hash(self, host: Host, path: str):
        """sha256 and size of a file, with `openssl dgst` where the host has it (SHA-NI: ~4x sha256sum)."""
        p = Arg(path)
        cmd = Command(host.name, sh(
            "[ -f", p, "] || { echo", Arg(f"mdsl: {path} is not a file"), ">&2; exit 3; } &&",
            "{ if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; } <", p,
            "| cut -c1-64 && stat -c %s", p,
        ), sudo=host.sudo, sudo_password=host.sudo_password, tools=("sha256sum", "stat", "cut"))
        return self._answer(cmd, self._ok(cmd, f"hashing {path}"), parse_hash_answer, f"`sha256sum` of {path}")

    def _part_size(self, host: Host, part: str) -> int:
        cmd = _cmd(host, "umask 077 && mkdir -p -- \"$(dirname --", Arg(part), ")\" &&",
                   "if [ -f", Arg(part), "]; then stat -c %s", Arg(part), "; else echo 0; fi")
        return self._answer(cmd, self._ok(cmd, "preparing the target"),
                            lambda out: int(out) if re.fullmatch(r"[0-9]+\n?", out) else None, f"`stat` of {part}")

    # -- the stream pipe

    def _pipe(self, src_cmd: Command, dst_cmd: Command, timeout: Optional[float], size: int = 0) -> str:
        """Stream src_cmd's stdout into dst_cmd's stdin; returns the sha256 of what passed."""
        route = os.environ.get("MDSL_STREAM", "")
        if route == "openssh" or (route != "paramiko" and size >= BULK_MIN):
            src, dst = self._openssh_pair(src_cmd, dst_cmd)
            if src is not None and dst is not None:
                return self._pipe_openssh(src_cmd, dst_cmd, src, dst, timeout)
        return self._pipe_paramiko(src_cmd, dst_cmd, timeout)

    def _openssh_pair(self, src_cmd: Command, dst_cmd: Command):
        """Both ends' OpenSSH routes, or (None, None); the two hosts' first connections are opened at once."""
        if not hasattr(self.x, "openssh"):
            return None, None
        got: dict = {}

        def target():
            try:
                got["dst"] = self.x.openssh(dst_cmd)
            except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
                got["error"] = e

        t = threading.Thread(target=target, name="mdsl-openssh-target", daemon=True)
        t.start()
        src = error = None
        try:
            src = self.x.openssh(src_cmd)
        except BaseException as e:  # noqa: BLE001 - re-raised below, once the target's route is handed back
            error = e
        t.join()
        error = error or got.get("error")
        dst = got.get("dst")
        # src[1]: the source's sudo wants a password on stdin, which a reading client cannot take
        if error is not None or src is None or dst is None or src[1] is not None:
            for route in (src, dst):
                if route is not None:
                    _unused(route)
            if error is not None:
                raise error
            return None, None
        return src, dst

    def _pipe_openssh(self, src_cmd: Command, dst_cmd: Command, src, dst, timeout: Optional[float]) -> str:
        """The same pipe through two OpenSSH clients: read 1 MiB, hash it, write it; one buffer in memory."""
        digest = hashlib.sha256()
        try:
            reader = _SshProcess(src[0], src[2], writes=False)
        except BaseException:
            _unused(src)
            _unused(dst)
            raise
        try:
            writer = _SshProcess(dst[0], dst[2], writes=True)
        except BaseException:
            _unused(dst)
            reader.stop()
            reader.close()
            raise
        expired = threading.Event()

        def expire():
            expired.set()
            reader.stop()
            writer.stop()

        timer = threading.Timer(timeout, expire) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            fo = writer.p.stdin.fileno()
            broken = not _write_all(fo, dst[1]) if dst[1] else False
            buf = bytearray(_BULK_BUF)
            view = memoryview(buf)
            fi = reader.p.stdout
            while not broken:
                n = fi.readinto(buf)
                if not n:
                    break
                chunk = view[:n]
                digest.update(chunk)
                if not _write_all(fo, chunk):
                    broken = True  # the target exited early; its exit status says why
                    break
                self.on_bytes(n)
            writer.p.stdin.close()  # EOF: `cat > PART` finishes
            if broken:
                reader.stop()
            wres, rres = writer.wait(), reader.wait()
        except BaseException:
            reader.stop()
            writer.stop()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            reader.close()
            writer.close()
        if expired.is_set():
            raise TransferError(f"the copy ran longer than {timeout:g}s and was stopped", dst_cmd.host,
                                dst_cmd.render(masked=True))
        return _ended(src_cmd, rres, dst_cmd, wres, digest)

    def _pipe_paramiko(self, src_cmd: Command, dst_cmd: Command, timeout: Optional[float]) -> str:
        """Through the two hosts' paramiko channels, a reader thread and a bounded queue."""
        q: "queue.Queue" = queue.Queue(_QUEUE_DEPTH)
        cancel = threading.Event()
        digest = hashlib.sha256()
        outcome = {}

        def sink(chunk: bytes):
            digest.update(chunk)
            while True:
                if cancel.is_set():
                    raise _Cancelled()
                try:
                    q.put(chunk, timeout=0.2)
                    return
                except queue.Full:
                    continue

        def reader():
            try:
                outcome["src"] = self.x.read_stream(src_cmd, sink, timeout=timeout)
            except _Cancelled:
                outcome["src"] = Result(-1, "", "cancelled")
            except BaseException as exc:  # handed to the main thread
                outcome["error"] = exc
            finally:
                while True:
                    try:
                        q.put(None, timeout=0.2)
                        break
                    except queue.Full:
                        if cancel.is_set():
                            try:
                                q.get_nowait()
                            except queue.Empty:
                                pass

        def chunks():
            while True:
                item = q.get()
                if item is None:
                    return
                self.on_bytes(len(item))
                yield item

        t = threading.Thread(target=reader, name="mdsl-transfer-read", daemon=True)
        t.start()
        try:
            dst_res = self.x.write_stream(dst_cmd, chunks(), timeout=timeout)
        finally:
            cancel.set()
            while t.is_alive():  # unblock the reader if the writer stopped early
                try:
                    q.get(timeout=0.1)
                except queue.Empty:
                    pass
            t.join()
        if "error" in outcome:
            raise outcome["error"]
        src_res = outcome["src"]
        return _ended(src_cmd, src_res, dst_cmd, dst_res, digest)

    # -- the copy

    def copy(self, a: CopyArtifact, expected_sha: Optional[str] = None) -> Copied:
        """Copy, verify, rename; raises TransferError."""
        hs, hd = self.hosts[a.source.host], self.hosts[a.dest.host]
        kind, size = self._stat(hs, a.source.path)
        self.on_total(size)
        part = a.dest.path + ".part"
        if a.via != "stream":
            copied = self._external(a, hs, hd, kind, part)
        elif kind == "dir":
            copied = self._stream_dir(a, hs, hd, part, size)
        else:
            copied = self._stream_file(a, hs, hd, size, part)
        if expected_sha and a.verify and copied.sha256 != expected_sha:
            raise TransferError(f"{a.source} changed since the step that made it (sha256 {copied.sha256[:12]}..., "
                                f"journal says {expected_sha[:12]}...)", a.source.host)
        self._finish(a, hd, part, kind)
        return copied

    def _stream_file(self, a: CopyArtifact, hs: Host, hd: Host, size: int, part: str, retry: bool = True) -> Copied:
        have = self._part_size(hd, part)
        resumed = 0 < have < size
        if not resumed and have:
            self._ok(_cmd(hd, "rm -f --", Arg(part)), "removing a stale part")
        if resumed:
            self.on_bytes(have)
            src = _cmd(hs, "tail -c", Arg(f"+{have + 1}"), "<", Arg(a.source.path))
            dst = _cmd(hd, "umask 077 && cat >>", Arg(part))
        else:
            src = _cmd(hs, "cat <", Arg(a.source.path))
            dst = _cmd(hd, "umask 077 && cat >", Arg(part))
        passed = self._pipe(src, dst, a.timeout, size - have)
        got, got_size = self._file_hash(hd, part)
        want = self._file_hash(hs, a.source.path)[0] if resumed else passed
        if a.verify and got != want:
            if retry:  # a resumed part whose beginning was not the source's: start over once
                self._ok(_cmd(hd, "rm -f --", Arg(part)), "removing a bad part")
                return self._stream_file(a, hs, hd, size, part, retry=False)
            raise TransferError(f"checksum mismatch after copying to {a.dest} (sent {want[:12]}..., "
                                f"landed {got[:12]}...)", a.dest.host)
        return Copied(got, got_size, size - (have if resumed else 0), resumed)

    def _stream_dir(self, a: CopyArtifact, hs: Host, hd: Host, part: str, size: int = 0) -> Copied:
        src = _cmd(hs, "tar --no-unquote -C", Arg(a.source.path), "-cf - .")
        dst = _cmd(hd, "umask 077 && rm -rf --", Arg(part), "&& mkdir -p --", Arg(part),
                   "&& tar --no-unquote -C", Arg(part), "-xf -")
        self._pipe(src, dst, a.timeout, size)
        want, size = self._hash(hs, a.source.path)
        got, _ = self._hash(hd, part)
        if a.verify and got != want:
            raise TransferError(f"tree hash mismatch after copying to {a.dest}", a.dest.host)
        return Copied(got, size, size)

    def _external(self, a: CopyArtifact, hs: Host, hd: Host, kind: str, part: str) -> Copied:
        hash_of = self._file_hash if kind == "file" else self._hash
        # The source is an artifact nothing writes to now: hash it while the copy runs, not after.
        source = {}

        def hash_source():
            try:
                source["v"] = hash_of(hs, a.source.path)
            except BaseException as exc:  # handed to this thread below
                source["error"] = exc

        t = threading.Thread(target=contextvars.copy_context().run, args=(hash_source,), name="mdsl-hash-source",
                             daemon=True)
        t.start()
        try:
            for c in (a.push, a.pull):
                if c is not None:
                    self._ok(c, f"{a.via} copy", a.timeout)
        finally:
            t.join()
        if "error" in source:
            raise source["error"]
        want, size = source["v"]
        got, _ = hash_of(hd, part)
        self.on_bytes(size)
        if a.verify and got != want:
            raise TransferError(f"checksum mismatch after {a.via} to {a.dest}", a.dest.host)
        return Copied(got, size, size)

    def _finish(self, a: CopyArtifact, hd: Host, part: str, kind: str) -> None:
        items = []
        if kind == "dir":
            items += ["rm -rf --", Arg(a.dest.path), "&&"]
        items += ["mv -f -T --", Arg(part), Arg(a.dest.path)]
        if a.mode:
            items += ["&& chmod --", Arg(a.mode), Arg(a.dest.path)]
        if a.owner:
            items += ["&& chown -R --" if kind == "dir" else "&& chown --", Arg(a.owner), Arg(a.dest.path)]
        self._ok(_cmd(hd, *items), "renaming into place")


def _release(backend, argv: List[str]) -> None:
    """The OpenSSH client of `argv` has ended, or will not run: its session slot on the host's master is free."""
    done = getattr(backend, "openssh_done", None)
    if done is not None:
        done(argv)


def _unused(route) -> None:
    """A route (argv, stdin, backend) from Executor.openssh that will not run."""
    _release(route[2], route[0])


def _write_all(fd: int, data) -> bool:
    """Write everything; False when the reading end is gone (the process exited)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


class _SshProcess:
    """One OpenSSH client running a wrapped command (`mdsl:pid=N` on stderr); stderr's tail is kept."""

    def __init__(self, argv: List[str], backend, writes: bool):
        self.backend = backend
        self.argv = argv
        # Its own session: a Ctrl-C reaches mdsl, which stops the remote command first (stop()).
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE if writes else subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL if writes else subprocess.PIPE,
                                  stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        self.pid: Optional[int] = None  # the remote command's process group
        self.err = bytearray()
        self._stopped = False
        self._lock = threading.Lock()
        self._errs = threading.Thread(target=self._read_stderr, name="mdsl-ssh-stderr", daemon=True)
        self._errs.start()

    def _read_stderr(self) -> None:
        pre = b""
        fd = self.p.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                if pre:
                    self._keep(pre)
                return
            if self.pid is None:
                pre += data
                m = _PID_RE.search(pre)
                if m is None:
                    if len(pre) > _ERR_KEEP:
                        self._keep(pre)
                        pre = b""
                    continue
                self.pid = int(m.group(1))
                data, pre = pre[: m.start()] + pre[m.end():], b""
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.err += data
        if len(self.err) > _ERR_KEEP:
            del self.err[: len(self.err) - _ERR_KEEP]

    def stop(self) -> None:
        """Stop the remote command's process group (through the control channel), then the client."""
        with self._lock:
            if self._stopped or self.p.poll() is not None:
                return
            self._stopped = True
        if self.pid is not None:
            kill = getattr(self.backend, "kill_groups", None)
            if kill is not None:
                kill([self.pid])
        self.p.terminate()

    def wait(self) -> Result:
        code = self.p.wait()
        self._errs.join(timeout=5)
        return Result(code, "", self.err.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        _release(self.backend, self.argv)
        self._errs.join(timeout=5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def _ended(src_cmd: Command, src_res: Result, dst_cmd: Command, dst_res: Result, digest) -> str:
    """The sha256 of a finished pipe, or the TransferError of the end that failed.

    The writer first: when it stops early the reader is cancelled, and that is not the cause.
    """
    if not dst_res.ok:
        raise TransferError(f"writing the target failed (exit {dst_res.exit})", dst_cmd.host,
                            dst_cmd.render(masked=True), dst_res.stderr)
    if not src_res.ok:
        raise TransferError(f"reading the source failed (exit {src_res.exit})", src_cmd.host,
                            src_cmd.render(masked=True), src_res.stderr)
    return digest.hexdigest()
