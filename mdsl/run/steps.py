"""Running the compiled steps: each step's actions in order, its artifacts hashed, the outcome journaled.

A parallel block's members (and lanes) run in threads, each in a copy of the
caller's context (structlog's bound context, `current_step`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import attrs
from attrs import define, field

from mdsl.model import Host
from mdsl.compile.actions import CopyArtifact, DnsCheck, Feed, Gate, HttpCheck, Poll, Shell, Tunnel
from mdsl.compile.parts import Command, Lit, SecretText
from mdsl.compile.plan import CompiledStep
from mdsl.run import journal as J
from mdsl.run import log
from mdsl.run.backend import BackendError, Result
from mdsl.run.console import Console, human_bytes
from mdsl.run.errors import StepFailed, TransferError
from mdsl.run.executor import Executor, current_step
from mdsl.run.probes import dns_check, http_check
from mdsl.run.progress import Progress, StepLine
from mdsl.run.rsync_meter import RsyncMeter
from mdsl.run.routes import RouteError
from mdsl.run.transfer import Copier, remote_hash, remote_size
from mdsl.run.command_json import to_json
from mdsl.run.tunnel import Tunnels

STDERR_TAIL = 12  # lines of a failed command's stderr shown

_CUTOVER = ("{what} starts the app on the data that was copied: from here on it takes writes that the old "
            "source never sees, so going back to the source would lose them. Run it?")


@define
class Stats:
    """Counters for the summary."""

    ran: int = 0  # leaves
    bytes_moved: int = 0
    lock: threading.Lock = field(factory=threading.Lock)

    def add_bytes(self, n: int) -> None:
        """Count bytes copied between hosts."""
        with self.lock:
            self.bytes_moved += n


class StepRunner:
    """Runs steps through an executor, journaling each; `known_sha`: artifacts' hashes from the journal."""

    def __init__(self, executor: Executor, hosts: Dict[str, Host], journal: J.Journal, console: Console,
                 progress: Progress, known_sha: Dict[Tuple[str, str], str], stats: Stats,
                 expected: Optional[Dict[Tuple[str, str], int]] = None, routes=None):
        self.executor, self.hosts, self.journal = executor, hosts, journal
        self.console, self.progress = console, progress
        self.known_sha, self.stats = known_sha, stats
        # (host, path) -> the bytes preflight expects to land there (a dump's database size, a dir's du): bar totals
        self.expected = expected or {}
        self.tunnels = Tunnels(executor.backends)  # open from a `replicate ... live` to its final pass
        self.log = log.get_logger()
        self.routes = routes  # opens a host-to-host copy's route around it (mdsl.run.routes)

    def close(self) -> None:
        """Close what the run keeps open across steps (tunnels)."""
        self.tunnels.close_all()

    def run_top(self, top: CompiledStep, todo: List[CompiledStep], position: str) -> None:
        """One top-level step (`todo`: its leaves still to run), shown as `position` (`[3/8]`)."""
        if top.is_parallel:
            self._run_parallel(top, todo, position)
        else:
            self._run_leaf(top, position)

    def _run_parallel(self, top: CompiledStep, todo: List[CompiledStep], position: str) -> None:
        destructive = [m for m in todo if m.destructive]
        if destructive:
            self.console.ask(f"parallel block {top.id} has destructive steps: "
                             + "; ".join(m.summary for m in destructive) + ". Run it?", f"step {top.id}")
        cutover = [m for m in todo if m.cutover]
        if cutover and not destructive:
            self.console.ask(_CUTOVER.format(what="; ".join(m.summary for m in cutover)), f"step {top.id}")
        self.console.say(f"{position} {top.title}")
        self._run_block(top, set(m.id for m in todo))

    def _run_block(self, block: CompiledStep, todo) -> None:
        """One thread per member of the block, and per lane (`sequence`): a lane runs its steps in order
        (a block inside it, its members at once) and stops at its first failure; the other members
        and lanes run on to their end. `todo`: the ids of the steps to run."""
        members = [m for m in block.members if any(x.id in todo for x in m.leaves())]
        with ThreadPoolExecutor(max_workers=max(1, len(members)), thread_name_prefix="mdsl-step") as pool:
            futs = [pool.submit(contextvars.copy_context().run, self._run_member, m, todo) for m in members]
            failures = []
            for f in futs:
                try:
                    f.result()
                except StepFailed as exc:
                    failures.append(exc)
        if failures:
            raise failures[0]

    def _run_member(self, m: CompiledStep, todo) -> None:
        if m.is_sequence:
            for s in m.members:
                if any(x.id in todo for x in s.leaves()):
                    self._run_member(s, todo)
        elif m.is_parallel:
            self._run_block(m, todo)
        else:
            self._run_leaf(m, f"  [{m.id}]", True)

    def _run_leaf(self, leaf: CompiledStep, prefix: str, asked: bool = False) -> None:
        log.unbind("host")
        log.bind(step=leaf.id, label=leaf.label)
        current_step.set(leaf.id)
        if leaf.destructive and not asked:
            self.console.ask(f"step {leaf.id} `{leaf.summary}` destroys data. Run it?", f"step {leaf.id}")
        elif leaf.cutover and not asked:
            self.console.ask(_CUTOVER.format(what=f"step {leaf.id} `{leaf.summary}`"), f"step {leaf.id}")
        self.journal.step_started(leaf.id, leaf.fingerprint)
        self.log.info("step.start", kind=leaf.kind, line=leaf.line)
        t = time.monotonic()
        moved = 0
        produced: Dict[Tuple[str, str], Tuple[str, int]] = {}
        notes: List[str] = []
        line = self.progress.line(f"{prefix} {leaf.title}")
        total = sum(self.expected[k] for k in {(d.host, d.path) for d in leaf.destinations} if k in self.expected)
        try:
            try:
                for action in leaf.actions:
                    moved += self._perform(action, produced, notes, line, total or None)
                records = self._hash_artifacts(leaf, produced)
            except BackendError as exc:
                raise StepFailed(exc.message, host=exc.host, hint=exc.hint) from None
            finally:
                line.close()
        except StepFailed as exc:
            exc.step = leaf
            self.journal.step_failed(leaf.id, leaf.fingerprint, time.monotonic() - t, log.redact_text(exc.message),
                                     exc.host, exc.command)
            self.log.error("step.failed", error=exc.message, host=exc.host)
            self.console.say(f"{prefix} {leaf.title} ... FAILED")
            raise
        secs = time.monotonic() - t
        self.journal.step_done(leaf.id, leaf.fingerprint, secs, records, moved)
        with self.stats.lock:
            self.stats.ran += 1
        self.log.info("step.done", seconds=round(secs, 3), bytes=moved)
        extra = f", {human_bytes(moved)} copied" if moved else ""
        self.console.say(f"{prefix} {leaf.title} ... ok ({secs:.1f}s{extra})"
                         + "".join(f"\n{' ' * len(prefix)}   | {line}" for line in notes))

    # -- actions

    def _perform(self, action, produced, notes: List[str], line: Optional[StepLine] = None,
                 total: Optional[int] = None) -> int:
        """Run one action (`line` says what it does, `total`: the bytes expected), through its route when it
        copies between two SSH hosts; returns bytes copied between hosts."""
        if line is not None:
            line.detail(_doing(action))
        route = getattr(action, "route", None)
        if route is not None and self.routes is not None:
            try:
                with self.routes.opened(route) as prefix:
                    return self._perform_one(with_route(action, prefix), produced, notes, total)
            except RouteError as exc:
                raise StepFailed(f"the route {route.source} -> {route.target}: {exc.message}",
                                 host=route.source) from None
        return self._perform_one(action, produced, notes, total)

    def _perform_one(self, action, produced, notes: List[str], total: Optional[int] = None) -> int:
        if isinstance(action, Shell):
            if action.meter == "rsync":
                return self._rsync(action, notes, total)
            self._shell(action, notes, total)
        elif isinstance(action, Feed):
            self._feed(action)
        elif isinstance(action, Poll):
            self._poll(action)
        elif isinstance(action, CopyArtifact):
            return self._copy(action, produced)
        elif isinstance(action, HttpCheck):
            self.log.info("verify.http", url=action.url, via=action.via)
            http_check(action)
        elif isinstance(action, DnsCheck):
            dns_check(action)
        elif isinstance(action, Tunnel):
            self.tunnels.perform(action)
        elif isinstance(action, Gate):
            self.console.say(f"  confirm: {action.message}")
            self.console.ask(f"{action.message} Continue?", f"the gate `confirm {action.message!r}`")
        else:  # pragma: no cover
            raise StepFailed(f"unknown action {type(action).__name__}")
        return 0

    def _shell(self, action: Shell, notes: List[str], total: Optional[int] = None) -> None:
        watcher = self._watch(action, total)
        try:
            stdout = self._checked(action.command, action.timeout, action.what)
        finally:
            if watcher:
                watcher()
        if action.show_output:
            notes.extend(log.redact_text(stdout).splitlines()[-STDERR_TAIL:])

    def _rsync(self, action: Shell, notes: List[str], total: Optional[int]) -> int:
        """A sync: rsync's progress lines drive a bar (its bytes, rate and ETA; the total preflight measured,
        else the percentage it reports), its `--stats` give the bytes it moved. Returns those when the sync
        goes between two hosts."""
        cmd = action.command
        task = self.progress.task(action.what, total)

        def shown(done: int, percent: int, rate: float, eta: float) -> None:
            if total is None and percent > 0:
                task.set_total(max(done, done * 100 // percent))
            task.set_completed(done)
            task.set_fields(rate=rate, eta=eta)

        meter = RsyncMeter(shown)
        log.bind(host=cmd.host)
        self.log.info("command.run", command=cmd.render(masked=True))
        try:
            if self.progress.enabled and cmd.stdin_text() is None and not list(cmd.all_secret_files()):
                res = self.executor.read_stream(cmd, meter.feed, timeout=action.timeout)
            else:  # off a terminal, or sudo reads a password on stdin: the totals at the end only
                res = self.executor.run(cmd, timeout=action.timeout)
                meter.feed(res.stdout.encode())
        except BackendError as exc:
            raise StepFailed(exc.message, host=exc.host, command=cmd.render(masked=True), hint=exc.hint) from None
        finally:
            task.done()
        meter.close()
        if not res.ok:
            raise _fail(cmd, res, action.what)
        if action.show_output:
            notes.extend(log.redact_text(meter.output()).splitlines()[-STDERR_TAIL:])
        if not action.between_hosts:
            return 0
        self.stats.add_bytes(meter.moved)
        return meter.moved

    def _feed(self, action: Feed) -> None:
        """Run `source` (if any), then `command` with its script and what `source` printed on stdin."""
        cmd = action.command
        if action.creates is not None:
            self.journal.replication_created(action.creates.name, [to_json(c) for c in action.creates.cleanup])
        if action.source is not None:
            printed = self._checked(action.source, action.timeout, action.what)
            if len(printed.encode()) > action.limit:
                raise StepFailed(f"{action.what}: `{action.source.host}` printed more than {action.limit} bytes; "
                                 "not feeding that on", host=action.source.host,
                                 command=action.source.render(masked=True))
            own = cmd.stdin.parts if cmd.stdin is not None else ()
            cmd = attrs.evolve(cmd, stdin=SecretText((*own, Lit(printed))))
        self._checked(cmd, action.timeout, action.what)
        if action.removes:
            self.journal.replication_removed(action.removes)

    def _checked(self, cmd: Command, timeout, what: str) -> str:
        """Run one command; its stdout, or StepFailed."""
        log.bind(host=cmd.host)
        self.log.info("command.run", command=cmd.render(masked=True))
        try:
            res = self.executor.run(cmd, timeout=timeout)
        except BackendError as exc:
            raise StepFailed(exc.message, host=exc.host, command=cmd.render(masked=True), hint=exc.hint) from None
        if not res.ok:
            raise _fail(cmd, res, what)
        return res.stdout

    def _poll(self, action: Poll) -> None:
        log.bind(host=action.command.host)
        deadline = time.monotonic() + action.timeout
        while True:
            res = self.executor.run(action.command, timeout=max(5.0, action.timeout))
            if res.ok == action.want_ok:
                return
            if time.monotonic() >= deadline:
                what = f"{action.what}: still {'not ' if action.want_ok else ''}so after {action.timeout:g}s"
                raise _fail(action.command, res, what)
            time.sleep(action.interval)

    def _watch(self, action: Shell, total: Optional[int] = None):
        """While a dump/archive runs, show the size of its growing `.part` against the size preflight
        measured (the database's, the dir's: a compressed file stays below it) (TTY only)."""
        progress = self.progress
        if action.watch is None or not progress.enabled:
            return None
        task = progress.task(action.what, total)
        stop = threading.Event()
        host = self.hosts[action.watch.host]

        def poll():
            current_step.set(None)  # a size probe: nothing to stop after a crash, nothing to journal
            while not stop.wait(1.0):
                try:
                    size = remote_size(self.executor, host, action.watch.path, timeout=10)
                except Exception:  # noqa: BLE001 - progress is best effort
                    size = None
                if size is not None:
                    task.set_completed(size)

        th = threading.Thread(target=contextvars.copy_context().run, args=(poll,), daemon=True)
        th.start()

        def finish():
            stop.set()
            th.join(timeout=2)
            task.done()

        return finish

    def _copy(self, action: CopyArtifact, produced) -> int:
        log.bind(host=action.dest.host)
        task = self.progress.task(f"{action.source} -> {action.dest.host}")
        copier = Copier(self.executor, self.hosts, on_bytes=task.advance, on_total=task.set_total)
        try:
            copied = copier.copy(action, self.known_sha.get((action.source.host, action.source.path)))
        except TransferError as exc:
            raise StepFailed(exc.message, host=exc.host, command=exc.command, stderr=exc.stderr) from None
        finally:
            task.done()
        produced[(action.dest.host, action.dest.path)] = (copied.sha256, copied.size)
        self.stats.add_bytes(copied.bytes_sent)
        return copied.bytes_sent

    def _hash_artifacts(self, leaf: CompiledStep, produced) -> List[J.ArtifactRecord]:
        out = []
        for a in leaf.artifacts:
            key = (a.host, a.path)
            try:
                sha, size = produced[key] if key in produced else remote_hash(self.executor, self.hosts[a.host], a.path)
            except TransferError as exc:
                raise StepFailed(exc.message, host=exc.host, command=exc.command, stderr=exc.stderr,
                                 exit=exc.exit) from None
            self.known_sha[key] = sha
            out.append(J.ArtifactRecord(a.host, a.path, None if a.secret else sha, size))
        return out


def _doing(action) -> str:
    """What a step's line says while `action` runs."""
    if isinstance(action, Poll):
        return f"waiting until {action.what} (up to {action.timeout:g}s)"
    if isinstance(action, (Shell, Feed)):
        return f"{action.what} on {action.command.host}: waiting for it to finish"
    if isinstance(action, CopyArtifact):
        return f"copying {action.source} to {action.dest.host}"
    if isinstance(action, HttpCheck):
        return f"GET {action.url}"
    if isinstance(action, Gate):
        return "waiting for the operator"
    return type(action).__name__


def with_route(action, prefix: str):
    """The action with its route's `MDSL_ROUTE_DIR=...;` before the command that copies."""
    def prefixed(cmd: Command) -> Command:
        return attrs.evolve(cmd, parts=(Lit(prefix), *cmd.parts))
    if isinstance(action, Shell):
        return attrs.evolve(action, command=prefixed(action.command))
    if isinstance(action, CopyArtifact) and action.push is not None:
        return attrs.evolve(action, push=prefixed(action.push))
    return action


def _fail(cmd: Command, res: Result, what: str) -> StepFailed:
    status = f"killed by {res.signal} (exit status {res.exit})" if res.signal else f"exit status {res.exit}"
    return StepFailed(f"{what}: {status}", host=cmd.host, command=cmd.render(masked=True),
                      exit=res.exit, stderr=res.stderr)
