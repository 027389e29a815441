"""One command's stdout into another command's stdin, on two hosts, hashed on the way.

Small streams go through the two hosts' paramiko channels, a reader thread
and a bounded queue. Streams of BULK_MIN or more go through two OpenSSH
client processes (mdsl.run.openssh), pumped in one thread: read 1 MiB, hash
it, write it. The OpenSSH client moves several times the bytes per CPU
second a paramiko channel does, and starting two clients is noise from this
size on (docs/performance.md). `MDSL_STREAM=paramiko|openssh` forces one route.
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import threading
from typing import Callable, Optional, Tuple

from mdsl.compile.parts import Command
from mdsl.run.backend import PID_MARKER_RE, BulkClient, Result
from mdsl.run.errors import TransferError
from mdsl.run.executor import Executor

BULK_MIN = 16 << 20
_QUEUE_DEPTH = 8  # chunks in flight between the two paramiko channels (bounded memory)
_BULK_BUF = 1 << 20  # one read, one hash update, one write per MiB: memory stays at one buffer
_ERR_KEEP = 64 * 1024


def pipe(executor: Executor, src_cmd: Command, dst_cmd: Command, timeout: Optional[float], size: int = 0,
         on_bytes: Callable[[int], None] = lambda n: None) -> str:
    """Stream src_cmd's stdout into dst_cmd's stdin; returns the sha256 of what passed; raises TransferError."""
    route = os.environ.get("MDSL_STREAM", "")
    if route == "openssh" or (route != "paramiko" and size >= BULK_MIN):
        pair = _openssh_pair(executor, src_cmd, dst_cmd)
        if pair is not None:
            return _pipe_openssh(src_cmd, dst_cmd, pair[0], pair[1], timeout, on_bytes)
    return _pipe_channels(executor, src_cmd, dst_cmd, timeout, on_bytes)


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


# ---------------------------------------------------------------- through the paramiko channels


class _Cancelled(Exception):
    pass


class _Reader:
    """Reads the source into a bounded queue in its own thread, hashing each chunk; None ends the queue."""

    def __init__(self, executor: Executor, cmd: Command, timeout: Optional[float]):
        self.q: "queue.Queue" = queue.Queue(_QUEUE_DEPTH)
        self.cancel = threading.Event()
        self.digest = hashlib.sha256()
        self.result: Optional[Result] = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._read, args=(executor, cmd, timeout), name="mdsl-transfer-read",
                                        daemon=True)
        self._thread.start()

    def _sink(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        while True:
            if self.cancel.is_set():
                raise _Cancelled()
            try:
                self.q.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def _read(self, executor: Executor, cmd: Command, timeout: Optional[float]) -> None:
        try:
            self.result = executor.read_stream(cmd, self._sink, timeout=timeout)
        except _Cancelled:
            self.result = Result(-1, "", "cancelled")
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self._end_queue()

    def _end_queue(self) -> None:
        while True:
            try:
                self.q.put(None, timeout=0.2)
                return
            except queue.Full:
                if self.cancel.is_set():
                    try:
                        self.q.get_nowait()
                    except queue.Empty:
                        pass

    def chunks(self, on_bytes: Callable[[int], None]):
        """The chunks read, until the source ends."""
        while True:
            item = self.q.get()
            if item is None:
                return
            on_bytes(len(item))
            yield item

    def stop(self) -> None:
        """Cancel the read (if it still runs) and wait for the thread, unblocking it if the writer stopped early."""
        self.cancel.set()
        while self._thread.is_alive():
            try:
                self.q.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


def _pipe_channels(executor: Executor, src_cmd: Command, dst_cmd: Command, timeout: Optional[float],
                   on_bytes: Callable[[int], None]) -> str:
    """Through the two hosts' paramiko channels, a reader thread and a bounded queue."""
    reader = _Reader(executor, src_cmd, timeout)
    try:
        dst_res = executor.write_stream(dst_cmd, reader.chunks(on_bytes), timeout=timeout)
    finally:
        reader.stop()
    if reader.error is not None:
        raise reader.error
    return _ended(src_cmd, reader.result, dst_cmd, dst_res, reader.digest)


# ---------------------------------------------------------------- through two OpenSSH clients


def _openssh_pair(executor: Executor, src_cmd: Command,
                  dst_cmd: Command) -> Optional[Tuple[BulkClient, BulkClient]]:
    """Both ends' OpenSSH routes, or None; the two hosts' first connections are opened at once."""
    got: dict = {}

    def target():
        try:
            got["dst"] = executor.bulk_client(dst_cmd)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
            got["error"] = e

    t = threading.Thread(target=target, name="mdsl-openssh-target", daemon=True)
    t.start()
    src = error = None
    try:
        src = executor.bulk_client(src_cmd)
    except BaseException as e:  # noqa: BLE001 - re-raised below, once the target's route is handed back
        error = e
    t.join()
    error = error or got.get("error")
    dst = got.get("dst")
    # the source's sudo wants a password on stdin, which a reading client cannot take
    if error is not None or src is None or dst is None or src.first_stdin is not None:
        for route in (src, dst):
            if route is not None:
                route.release()
        if error is not None:
            raise error
        return None
    return src, dst


def _write_all(fd: int, data) -> bool:
    """Write everything; False when the reading end is gone (the process exited)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _pipe_openssh(src_cmd: Command, dst_cmd: Command, src: BulkClient, dst: BulkClient,
                  timeout: Optional[float], on_bytes: Callable[[int], None]) -> str:
    """The same pipe through two OpenSSH clients: read 1 MiB, hash it, write it; one buffer in memory."""
    try:
        reader = _SshProcess(src, writes=False)
    except BaseException:
        src.release()
        dst.release()
        raise
    try:
        writer = _SshProcess(dst, writes=True)
    except BaseException:
        dst.release()
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
        digest = _pump(reader, writer, dst.first_stdin, on_bytes)
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


def _pump(reader: "_SshProcess", writer: "_SshProcess", first: Optional[bytes], on_bytes: Callable[[int], None]):
    """Copy the reader's stdout into the writer's stdin (after `first`), hashing it; then EOF to the writer."""
    digest = hashlib.sha256()
    fo = writer.p.stdin.fileno()
    broken = not _write_all(fo, first) if first else False
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
        on_bytes(n)
    writer.p.stdin.close()  # EOF: `cat > PART` finishes
    if broken:
        reader.stop()
    return digest


class _SshProcess:
    """One OpenSSH client running a wrapped command (`mdsl:pid=N` on stderr); stderr's tail is kept."""

    def __init__(self, route: BulkClient, writes: bool):
        self.route = route
        # Its own session: a Ctrl-C reaches mdsl, which stops the remote command first (stop()).
        self.p = subprocess.Popen(list(route.argv), stdin=subprocess.PIPE if writes else subprocess.DEVNULL,
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
                m = PID_MARKER_RE.search(pre)
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
            self.route.kill([self.pid])
        self.p.terminate()

    def wait(self) -> Result:
        code = self.p.wait()
        self._errs.join(timeout=5)
        return Result(code, "", self.err.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.route.release()
        self._errs.join(timeout=5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

