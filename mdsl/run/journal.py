"""The apply journal and lock, beside the plan in `.mdsl/`.

The journal is an append-only JSON Lines file (`.mdsl/<plan>.journal`): one
record per event (run started, step started, step done with its artifacts'
sha256 and size, step failed, reset; a step a rollback undid, a rollback's end), each written with a single `write` on
an O_APPEND descriptor and `fdatasync`ed before the step goes on. A crash can
only tear the last line, which the reader ignores. Why not SQLite: one writer
at a time (the lock), records are never updated in place, and an operator can
read it with `cat` when things went wrong; what SQLite would add (WAL,
transactions) buys nothing for an append-only log of a few hundred lines.

What the journal never holds: secret values, command output that may echo
them (error text is redacted by the caller), or the hash of a `secret` file
(a hash of a short secret can be brute-forced; its size is kept instead).

Two kinds of record are about what a killed run may have left on the hosts,
and outlive a `reset`: `pid` (a step's command started: host, process group,
the backend's run token, the command shortened and redacted; appended without
fsync, there is one per command) and `secret-file` / `secret-file-removed` (the
path of a 0600 temp file holding a password, never its content). A command
still counts as possibly running until its step is done in the same run or a
later run checked it (`reaped`); a secret file until its removal is recorded.

The lock (`.mdsl/<plan>.lock`) is a `flock` held for the whole apply; the file
holds the pid, hostname and start time of the apply that owns it, for the
message a refused apply prints. The kernel drops it with its process, so a
killed apply leaves no stale lock (`PlanLock`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from typing import Dict, Iterable, List, Optional, Tuple

from attrs import define, field, frozen

from mdsl.run.leftover_records import ReplicationLeftover, RouteLeftover

JOURNAL_DIR = ".mdsl"


def now() -> str:
    """UTC time, ISO 8601, seconds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def state_dir(plan_path: str) -> str:
    """`.mdsl/` beside the plan."""
    return os.path.join(os.path.dirname(os.path.abspath(plan_path)), JOURNAL_DIR)


def plan_name(plan_path: str) -> str:
    """The plan file's name without `.plan`."""
    base = os.path.basename(plan_path)
    return base[:-5] if base.endswith(".plan") else base


def journal_path(plan_path: str) -> str:
    """`.mdsl/<plan>.journal`."""
    return os.path.join(state_dir(plan_path), plan_name(plan_path) + ".journal")


def lock_path(plan_path: str) -> str:
    """`.mdsl/<plan>.lock`."""
    return os.path.join(state_dir(plan_path), plan_name(plan_path) + ".lock")


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- records


@frozen
class ArtifactRecord:
    """A file a step produced: where, its sha256 (None for secret files) and size."""

    host: str
    path: str
    sha256: Optional[str]
    size: int

    def to_json(self) -> dict:
        """Plain dict for the journal line."""
        return {"host": self.host, "path": self.path, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, d: dict) -> "ArtifactRecord":
        """Back from a journal line."""
        return cls(d["host"], d["path"], d.get("sha256"), int(d.get("size", 0)))


@define
class StepState:
    """What the journal says about one step (its last record wins)."""

    id: str
    fingerprint: str
    status: str  # "started" | "done" | "failed"
    at: str = ""
    seconds: Optional[float] = None
    artifacts: List[ArtifactRecord] = field(factory=list)
    error: Optional[str] = None
    host: Optional[str] = None
    command: Optional[str] = None
    bytes: int = 0


@frozen
class RunningCommand:
    """A command a step started (its process group on `host`), which may outlive an interrupted run."""

    step: str
    host: str
    pid: int
    inner: Optional[int]  # a second group (sudo's command), when there is one
    token: str  # the run marker its command line carries (mdsl.run.backend.run_marker)
    command: str  # shortened and redacted, for messages
    run: str

    @property
    def pids(self) -> List[int]:
        """The recorded process group ids."""
        return [self.pid] + ([self.inner] if self.inner and self.inner != self.pid else [])


@frozen
class SecretFileRecord:
    """A 0600 temp file (a PGPASSFILE) created on `host`, and as whom (to remove it as that user)."""

    host: str
    path: str
    user: Optional[str] = None  # run_as of the command that owned it
    sudo: bool = False


_TOKEN_CHARS = frozenset("0123456789abcdef")


def _running_from(rec: dict) -> Optional[RunningCommand]:
    """A `pid` record, or None when a field is not what mdsl writes (a hand-edited journal)."""
    pid, inner, token, host, step = rec.get("pid"), rec.get("inner"), rec.get("token"), rec.get("host"), rec.get("step")
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 1 and isinstance(token, str)
            and 8 <= len(token) <= 64 and set(token) <= _TOKEN_CHARS and isinstance(host, str)
            and isinstance(step, str)):
        return None
    if not (isinstance(inner, int) and not isinstance(inner, bool) and inner > 1):
        inner = None
    command = rec.get("command") if isinstance(rec.get("command"), str) else "?"
    return RunningCommand(step, host, pid, inner, token, command, str(rec.get("run", "")))


@define
class JournalState:
    """The journal read back: per step id, its latest state since the last reset.

    `running` and `secret_files` are what earlier runs may have left on the hosts
    (a reset does not forget them: the processes and files are still there).
    """

    steps: Dict[str, StepState] = field(factory=dict)
    runs: int = 0
    last_run_at: Optional[str] = None
    finished_ok: bool = False
    torn_lines: int = 0
    running: List[RunningCommand] = field(factory=list)
    secret_files: Dict[Tuple[str, str], SecretFileRecord] = field(factory=dict)
    rolled_back: bool = False  # the last rollback finished (`mdsl rollback`, or apply's after a failure)
    routes: Dict[Tuple[str, str, str], RouteLeftover] = field(factory=dict)
    replications: Dict[str, ReplicationLeftover] = field(factory=dict)

    def leftovers(self) -> "JournalState":
        """A fresh state that keeps only what may be left on the hosts (`--restart`)."""
        return JournalState(torn_lines=self.torn_lines, running=list(self.running),
                            secret_files=dict(self.secret_files), routes=dict(self.routes),
                            replications=dict(self.replications))


class LazyJournal:
    """The journal for preflight's 0600 temp files: opened (and the file made) only when one is made.

    Preflight runs before apply opens its journal (a refused preflight or a dry run writes no
    journal), but a database login check makes a PGPASSFILE on the host; a kill in that moment would
    leave it with no record. This records its path the same way a step's is, so the next run removes it.
    """

    def __init__(self, path: str):
        self.path = path
        self._journal: Optional["Journal"] = None
        self._lock = threading.Lock()

    def _open(self) -> "Journal":
        with self._lock:
            if self._journal is None:
                self._journal = Journal(self.path)
            return self._journal

    def secret_file_created(self, sid: Optional[str], host: str, path: str, user: Optional[str],
                            sudo: bool) -> None:
        self._open().secret_file_created(sid, host, path, user, sudo)

    def secret_file_removed(self, host: str, path: str) -> None:
        self._open().secret_file_removed(host, path)

    def route_placed(self, host: str, kind: str, value: str) -> None:
        self._open().route_placed(host, kind, value)

    def route_removed(self, host: str, kind: str, value: str) -> None:
        self._open().route_removed(host, kind, value)

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None


def read_journal(path: str) -> JournalState:
    """Replay the journal; a torn (partial) line is skipped and counted."""
    st = JournalState()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return st
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            st.torn_lines += 1
            continue
        replay = _REPLAY.get(rec.get("event"))
        if replay is not None:
            st = replay(st, rec) or st
    return st


def _reset(st: JournalState, rec: dict) -> JournalState:
    return st.leftovers()


def _pid(st: JournalState, rec: dict) -> None:
    r = _running_from(rec)
    if r is not None:
        st.running.append(r)


def _reaped(st: JournalState, rec: dict) -> None:
    checked = {(p, t) for p, t in _pairs(rec.get("checked"))}
    st.running = [r for r in st.running if not (r.host == rec.get("host") and (r.pid, r.token) in checked)]


def _secret_file(st: JournalState, rec: dict) -> None:
    host, path = rec.get("host"), rec.get("path")
    if isinstance(host, str) and isinstance(path, str):
        user = rec.get("user") if isinstance(rec.get("user"), str) else None
        st.secret_files[(host, path)] = SecretFileRecord(host, path, user, rec.get("sudo") is True)


def _secret_file_removed(st: JournalState, rec: dict) -> None:
    st.secret_files.pop((rec.get("host"), rec.get("path")), None)


def _route_placed(st: JournalState, rec: dict) -> None:
    host, kind, value = rec.get("host"), rec.get("kind"), rec.get("value")
    if isinstance(host, str) and kind in ("dir", "key") and isinstance(value, str):
        st.routes[(host, kind, value)] = RouteLeftover(host, kind, value)


def _route_removed(st: JournalState, rec: dict) -> None:
    st.routes.pop((rec.get("host"), rec.get("kind"), rec.get("value")), None)


def _replication(st: JournalState, rec: dict) -> None:
    name, cleanup = rec.get("name"), rec.get("cleanup")
    if isinstance(name, str) and isinstance(cleanup, list) and all(isinstance(c, dict) for c in cleanup):
        st.replications[name] = ReplicationLeftover(name, tuple(cleanup))


def _replication_removed(st: JournalState, rec: dict) -> None:
    st.replications.pop(rec.get("name"), None)


def _run(st: JournalState, rec: dict) -> None:
    st.rolled_back = False
    st.runs += 1
    st.last_run_at = rec.get("at")
    st.finished_ok = False


def _finished(st: JournalState, rec: dict) -> None:
    st.finished_ok = bool(rec.get("ok"))


def _step(st: JournalState, rec: dict) -> None:
    ev, sid = rec["event"], rec["step"]
    s = StepState(sid, rec.get("fp", ""), {"start": "started"}.get(ev, ev), rec.get("at", ""))
    if ev == "done":
        # every command of the step ended in that run
        st.running = [r for r in st.running if not (r.step == sid and r.run == rec.get("run"))]
        s.seconds = rec.get("seconds")
        s.artifacts = [ArtifactRecord.from_json(a) for a in rec.get("artifacts", ())]
        s.bytes = int(rec.get("bytes", 0))
    elif ev == "failed":
        s.seconds = rec.get("seconds")
        s.error, s.host, s.command = rec.get("error"), rec.get("host"), rec.get("command")
    st.steps[sid] = s


def _undone(st: JournalState, rec: dict) -> None:
    s = st.steps.get(rec.get("step"))
    if s is not None:  # a rollback undid it: not done any more, so a resume runs it (and all after it) again
        s.status = "rolled-back"


def _rollback(st: JournalState, rec: dict) -> None:
    st.rolled_back = bool(rec.get("ok"))


# event -> how it changes the state (a new state, or None when it changed the one it was given)
_REPLAY = {"reset": _reset, "pid": _pid, "reaped": _reaped, "secret-file": _secret_file,
           "secret-file-removed": _secret_file_removed, "route": _route_placed, "route-removed": _route_removed,
           "replication": _replication, "replication-removed": _replication_removed,
           "run": _run, "finished": _finished,
           "start": _step, "done": _step, "failed": _step, "undone": _undone,
           "rollback": _rollback}


def _pairs(value) -> List[Tuple[int, str]]:
    out = []
    for item in value if isinstance(value, list) else ():
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], str):
            out.append((item[0], item[1]))
    return out


class Journal:
    """Appends records durably; safe to use from the threads of a parallel block."""

    def __init__(self, path: str):
        self.path = path
        self.run_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        _ensure_dir(os.path.dirname(path))
        existed = os.path.exists(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        if not existed:
            _fsync_dir(os.path.dirname(path))

    def append(self, event: str, *, sync: bool = True, **fields) -> None:
        """Write one record and make it durable (fdatasync; `sync=False`: a plain append, which
        survives a killed mdsl but not a crash of the machine)."""
        rec = {"event": event, "at": now(), "run": self.run_id}
        rec.update({k: v for k, v in fields.items() if v is not None})
        line = (json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            if sync:
                # fdatasync: the data and the file's new size, without the mtime/atime inode update fsync
                # also forces: half the cost per record (docs/performance.md).
                _datasync(self._fd)

    def reset(self) -> None:
        """Forget every earlier record (`--restart`): later reads start after this line."""
        self.append("reset")

    def started_run(self, plan: str) -> None:
        """A new apply began."""
        self.append("run", plan=plan, pid=os.getpid(), hostname=socket.gethostname())

    def step_started(self, sid: str, fp: str) -> None:
        """A step begins."""
        self.append("start", step=sid, fp=fp)

    def step_done(self, sid: str, fp: str, seconds: float, artifacts: Iterable[ArtifactRecord],
                  bytes_moved: int = 0) -> None:
        """A step finished and its artifacts are hashed."""
        self.append("done", step=sid, fp=fp, seconds=round(seconds, 3),
                    artifacts=[a.to_json() for a in artifacts], bytes=bytes_moved)

    def step_failed(self, sid: str, fp: str, seconds: float, error: str, host: Optional[str] = None,
                    command: Optional[str] = None) -> None:
        """A step failed (error text must already be redacted)."""
        self.append("failed", step=sid, fp=fp, seconds=round(seconds, 3), error=error, host=host, command=command)

    def command_started(self, sid: str, host: str, pid: int, inner: Optional[int], token: str,
                        command: str) -> None:
        """A step's command runs as process group `pid` on `host` (`command` shortened and redacted)."""
        self.append("pid", sync=False, step=sid, host=host, pid=pid, inner=inner, token=token, command=command)

    def commands_checked(self, host: str, checked: Iterable[RunningCommand], stopped: Iterable[int]) -> None:
        """A run checked these recorded commands on `host` (stopping those in `stopped`): forget them."""
        self.append("reaped", host=host, checked=[[r.pid, r.token] for r in checked], stopped=sorted(stopped))

    def secret_file_created(self, sid: Optional[str], host: str, path: str, user: Optional[str],
                            sudo: bool) -> None:
        """A 0600 temp file holding a secret now exists on `host` (its path only)."""
        self.append("secret-file", step=sid, host=host, path=path, user=user, sudo=sudo or None)

    def secret_file_removed(self, host: str, path: str) -> None:
        """That temp file is gone."""
        self.append("secret-file-removed", host=host, path=path)

    def step_undone(self, sid: str) -> None:
        """A rollback undid the step (started its services again, ran its `undo`): a resume runs it again."""
        self.append("undone", step=sid)

    def rolled_back(self, ok: bool, steps: Iterable[str]) -> None:
        """A rollback ended: every undo in `steps` ran (ok), or one failed."""
        self.append("rollback", ok=ok, steps=list(steps))

    def route_placed(self, host: str, kind: str, value: str) -> None:
        """A route's directory (kind "dir") or authorized_keys line ("key") is about to exist on `host`."""
        self.append("route", host=host, kind=kind, value=value)

    def route_removed(self, host: str, kind: str, value: str) -> None:
        """That route leftover is gone."""
        self.append("route-removed", host=host, kind=kind, value=value)

    def replication_created(self, name: str, cleanup: Iterable[dict]) -> None:
        """The objects of replication `name` are about to exist; `cleanup`: the commands removing them (JSON,
        secrets as references only)."""
        self.append("replication", name=name, cleanup=list(cleanup))

    def replication_removed(self, name: str) -> None:
        """Those objects are gone."""
        self.append("replication-removed", name=name)

    def finished(self, ok: bool) -> None:
        """The apply ended."""
        self.append("finished", ok=ok)

    def close(self) -> None:
        """Close the file."""
        try:
            os.close(self._fd)
        except OSError:
            pass


# ---------------------------------------------------------------- the lock


class LockError(Exception):
    """Another apply holds the lock."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


class PlanLock:
    """`.mdsl/<plan>.lock`: an exclusive `flock` held for the whole apply, plus who holds it.

    The kernel drops a flock when its process dies, however it dies: an apply killed with
    SIGKILL (or a control machine that rebooted) leaves no stale lock behind, and the next
    apply just takes it. The file's content (pid, hostname, start time) serves the message a
    refused apply prints, and tells the next holder that an earlier apply ended without
    releasing. The file is removed on release; an acquirer that locked a file just removed by
    its owner notices (the path now names another inode, or none) and starts over.
    """

    def __init__(self, path: str):
        self.path = path
        self.held = False
        self._fd: Optional[int] = None
        self.previous: dict = {}  # what the file said when we took it: an earlier holder that died

    def acquire(self) -> None:
        """Take the lock or raise LockError saying who holds it."""
        import fcntl

        _ensure_dir(os.path.dirname(self.path))
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _flock_soon(fd, fcntl.LOCK_EX):
                info = _read_info(fd)
                os.close(fd)
                raise self._held_by(info)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its owner removed it between our open and our flock
                os.close(fd)
                continue
            self.previous = _read_info(fd)
            info = {"pid": os.getpid(), "hostname": socket.gethostname(), "started": now()}
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)
            self._fd, self.held = fd, True
            return
        raise LockError(f"cannot take the lock {self.path}: it keeps being replaced",
                        "something else creates and removes it; check what else manages this directory")

    def _held_by(self, info: dict) -> LockError:
        pid, host, started = info.get("pid"), info.get("hostname"), info.get("started", "?")
        wait = "wait for it to finish; `mdsl status PLAN` shows its progress"
        if not info:
            return LockError("another apply of this plan is running (it has only just started)", wait)
        if host == socket.gethostname():
            return LockError(f"another apply of this plan is running (pid {pid}, started {started})", wait)
        return LockError(f"the plan is locked by pid {pid} on {host} (started {started})",
                         "wait for it to finish there; the lock goes when that apply ends, however it ends")

    def release(self) -> None:
        """Remove the lock file, then drop the lock."""
        if not self.held or self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked: an acquirer that opened it sees the inode go
        except OSError:
            pass
        os.close(self._fd)
        self._fd, self.held = None, False


def _flock_soon(fd: int, how: int) -> bool:
    """flock without waiting, but tried a few times: `running_apply` holds a shared lock for an instant."""
    import fcntl

    for attempt in range(5):
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except OSError:
            if attempt < 4:
                time.sleep(0.02)
    return False


def running_apply(path: str) -> Optional[dict]:
    """What the lock file at `path` says (pid, hostname, started; empty when it has only just started) while
    an apply holds it; None when no apply runs (the flock is free: a lock file without a flock is what a
    killed apply left)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_info(fd: int) -> dict:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}

