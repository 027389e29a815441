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

import hashlib
import queue
import threading
from typing import Callable, Optional

from attrs import frozen

from mdsl.check.resolve import Host
from mdsl.compile.actions import CopyArtifact, hash_command, size_command
from mdsl.compile.parts import Arg, Command, sh
from mdsl.run.backend import Result

_QUEUE_DEPTH = 8  # chunks in flight between the two backends (bounded memory)


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
        out = self._ok(size_command(host.name, path, sudo=host.sudo, sudo_password=host.sudo_password),
                       f"looking at {path}").stdout.split()
        return out[0], int(out[1])

    def _hash(self, host: Host, path: str):
        cmd = hash_command(host.name, path, sudo=host.sudo, sudo_password=host.sudo_password)
        lines = self._ok(cmd, f"hashing {path}").stdout.split()
        return lines[0], int(lines[1])

    def _part_size(self, host: Host, part: str) -> int:
        res = self._ok(_cmd(host, "umask 077 && mkdir -p -- \"$(dirname --", Arg(part), ")\" &&",
                            "if [ -f", Arg(part), "]; then stat -c %s", Arg(part), "; else echo 0; fi"),
                       "preparing the target")
        return int(res.stdout.strip() or 0)

    # -- the stream pipe

    def _pipe(self, src_cmd: Command, dst_cmd: Command, timeout: Optional[float]) -> str:
        """Stream src_cmd's stdout into dst_cmd's stdin; returns the sha256 of what passed."""
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
        # The writer first: when it stops early the reader is cancelled, and that is not the cause.
        if not dst_res.ok:
            raise TransferError(f"writing the target failed (exit {dst_res.exit})", dst_cmd.host,
                                dst_cmd.render(masked=True), dst_res.stderr)
        if not src_res.ok:
            raise TransferError(f"reading the source failed (exit {src_res.exit})", src_cmd.host,
                                src_cmd.render(masked=True), src_res.stderr)
        return digest.hexdigest()

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
            copied = self._stream_dir(a, hs, hd, part)
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
        passed = self._pipe(src, dst, a.timeout)
        got, got_size = self._hash(hd, part)
        want = self._hash(hs, a.source.path)[0] if resumed else passed
        if a.verify and got != want:
            if retry:  # a resumed part whose beginning was not the source's: start over once
                self._ok(_cmd(hd, "rm -f --", Arg(part)), "removing a bad part")
                return self._stream_file(a, hs, hd, size, part, retry=False)
            raise TransferError(f"checksum mismatch after copying to {a.dest} (sent {want[:12]}..., "
                                f"landed {got[:12]}...)", a.dest.host)
        return Copied(got, got_size, size - (have if resumed else 0), resumed)

    def _stream_dir(self, a: CopyArtifact, hs: Host, hd: Host, part: str) -> Copied:
        src = _cmd(hs, "tar --no-unquote -C", Arg(a.source.path), "-cf - .")
        dst = _cmd(hd, "umask 077 && rm -rf --", Arg(part), "&& mkdir -p --", Arg(part),
                   "&& tar --no-unquote -C", Arg(part), "-xf -")
        self._pipe(src, dst, a.timeout)
        want, size = self._hash(hs, a.source.path)
        got, _ = self._hash(hd, part)
        if a.verify and got != want:
            raise TransferError(f"tree hash mismatch after copying to {a.dest}", a.dest.host)
        return Copied(got, size, size)

    def _external(self, a: CopyArtifact, hs: Host, hd: Host, kind: str, part: str) -> Copied:
        for c in (a.push, a.pull):
            if c is not None:
                self._ok(c, f"{a.via} copy", a.timeout)
        want, size = self._hash(hs, a.source.path)
        got, _ = self._hash(hd, part)
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
