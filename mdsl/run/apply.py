"""`mdsl apply`: check, connect, preflight, then run the compiled steps with a journal.

Order of business (nothing on any host changes before the first step):
check (errors refuse; warnings ask unless `--yes`) -> compile -> lock ->
read the journal -> which steps are still to run -> read secrets -> connect
backends -> preflight (P4xx) -> re-verify the artifacts of the steps to skip
-> `--dry-run` stops here, printing commands -> stop what an interrupted run
left behind -> the steps, in order (mdsl.run.steps) -> summary.

Fabric, paramiko, rich and structlog are imported lazily (here, not in
`check`/`compile`), so `mdsl check` and `mdsl plan` start fast.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, TextIO, Tuple

from attrs import frozen

from mdsl.model import BoundPlan, Host
from mdsl.compile.actions import Feed, Gate
from mdsl.compile.plan import CompiledPlan, CompiledStep
from mdsl.findings import Severity
from mdsl.run import journal as J
from mdsl.run import log
from mdsl.run.backend import Backend, BackendError
from mdsl.run.console import Console, human_bytes, tty_ask
from mdsl.run.docker import docker_hosts
from mdsl.run.errors import Refused, StepFailed, TransferError
from mdsl.run.executor import Executor, current_step
from mdsl.run.leftovers import stop_leftovers
from mdsl.run.load import Unusable, load_plan, render_findings
from mdsl.run.preflight import run_preflight
from mdsl.run.preflight_needs import leaves_by_top, needed_secrets, plan_needs
from mdsl.run.preflight_routes import prove_routes
from mdsl.run.routes import Routes
from mdsl.run.progress import Progress
from mdsl.run.rollback import RollbackRunner, state_now, what_to_undo
from mdsl.run.schedule import Schedule, count_steps, invalidate_from, make_schedule, steps, steps_of
from mdsl.run.secrets import SecretStore
from mdsl.run.steps import STDERR_TAIL, StepRunner, Stats
from mdsl.run.transfer import remote_hash


def replications_of(compiled: CompiledPlan) -> List[str]:
    """The names of the replications the plan's live passes make (their objects are the plan's own)."""
    return [a.creates.name for leaf in compiled.leaves() for a in leaf.actions
            if isinstance(a, Feed) and a.creates is not None]


@frozen
class ApplyOptions:
    """What `mdsl apply` was asked to do."""

    plan: str
    dry_run: bool = False
    yes: bool = False
    from_label: Optional[str] = None
    log_format: Optional[str] = None  # console on a TTY, json otherwise
    accept_new_host_keys: bool = False
    restart: bool = False
    # after a failure, a no or a Ctrl-C before the point of no return: True rolls back, False does not,
    # None asks on a terminal (not answered by `--yes`; docs/reliability.md says why)
    rollback: Optional[bool] = None


def _default_backend(host: Host, plan_dir: str, accept_new_host_keys: bool) -> Backend:
    if host.local:
        from mdsl.run.local import LocalBackend

        return LocalBackend(host, cwd=plan_dir)
    from mdsl.run.ssh import SshBackend

    return SshBackend(host, accept_new_host_keys=accept_new_host_keys)


class Apply:
    """One `mdsl apply` invocation."""

    def __init__(self, opts: ApplyOptions, out: TextIO = None, err: TextIO = None,
                 ask: Callable[[str], Optional[bool]] = tty_ask,
                 backend_factory: Callable[[Host, str, bool], Backend] = _default_backend,
                 environ=None, progress: Optional[bool] = None):
        self.opts = opts
        self.console = Console(out or sys.stdout, err or sys.stderr, ask, yes=opts.yes)
        self.backend_factory = backend_factory
        self.plan_dir = os.path.dirname(os.path.abspath(opts.plan))
        self.secrets = SecretStore(environ, self.plan_dir)
        self.progress_enabled = progress
        # where the bars go: stderr, or the `err` given when asked for bars explicitly (a test's terminal)
        self.progress_file = err if (progress and err is not None) else None
        self.expected: Dict[Tuple[str, str], int] = {}  # preflight's sizes: the bars' totals
        self.backends: Dict[str, Backend] = {}
        self.stats = Stats()
        self.known_sha: Dict[Tuple[str, str], str] = {}
        self.journal: Optional[J.Journal] = None
        self.hosts: Dict[str, Host] = {}
        self.log = log.get_logger()

    # -- the whole thing

    def run(self) -> int:
        """Run the apply; returns the exit status (0 ok, 1 failed or refused, 2 unusable plan)."""
        t0 = time.monotonic()
        try:
            compiled = self._load()
        except Unusable as exc:
            return exc.code
        except Refused as exc:
            self.console.warn(f"refused: {exc}")
            return 1
        self.hosts = compiled.bound.hosts
        lock = J.PlanLock(J.lock_path(self.opts.plan))
        if not self.opts.dry_run and not self._lock(lock):
            return 1
        try:
            return self._run_locked(compiled, t0)
        except Refused as exc:
            self.console.warn(f"refused: {exc}")
            self.console.warn("nothing further was run; the journal keeps what is done")
            return 1
        except KeyboardInterrupt:
            self.console.warn("interrupted; run `mdsl apply` again to resume where it stopped")
            return 130
        finally:
            self._release(lock)
            log.clear()
            current_step.set(None)

    def _load(self) -> CompiledPlan:
        log.bind(plan=J.plan_name(self.opts.plan))
        compiled, findings = load_plan(self.opts.plan, self.console.warn, "apply", rollback=bool(self.opts.rollback))
        warnings = [f for f in findings if f.severity == Severity.WARNING]
        if warnings:
            self.console.warn(render_findings(warnings))
            self.console.ask(f"`mdsl check` found {len(warnings)} warning(s). Apply anyway?", "a plan with warnings")
        return compiled

    def _release(self, lock) -> None:
        """Close every connection and the journal, then release the plan's lock."""
        for backend in self.backends.values():
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                pass
        if self.journal is not None:
            self.journal.close()
        lock.release()

    def _lock(self, lock: J.PlanLock) -> bool:
        try:
            lock.acquire()
        except J.LockError as exc:
            self.console.warn(f"error: {exc.message}\n  help: {exc.hint}")
            return False
        prev = lock.previous
        if prev.get("pid"):  # its holder died without releasing it: the kernel dropped its flock
            self.console.warn(f"note: the previous apply of this plan (pid {prev['pid']}, started "
                              f"{prev.get('started', '?')}) ended without finishing; its lock was free, "
                              "the journal says where it stopped")
        return True

    def _run_locked(self, compiled: CompiledPlan, t0: float) -> int:
        current_step.set(None)  # no step yet (an earlier apply in this thread may have left its last one)
        jpath = J.journal_path(self.opts.plan)
        state = J.read_journal(jpath)
        if self.opts.restart:
            state = state.leftovers()  # forget the steps, not what a killed run left on the hosts
        try:
            sched = make_schedule(compiled, state, self.opts.from_label)
        except KeyError:
            labels = [s.label for s in compiled.leaves() if s.label] + [s.label for s in compiled.steps
                                                                       if s.is_parallel and s.label]
            self.console.warn(f"error: no step is labelled `{self.opts.from_label}`"
                              + (f" (labels: {', '.join(labels)})" if labels else " (the plan has no labels)"))
            return 2
        if not sched.pending(compiled):
            self.console.say(f"nothing to do: every step of {self.opts.plan} is done "
                             f"({steps(count_steps(compiled))}; journal {jpath}).")
            self.console.say("Run with --restart (or delete the journal) to run it again from the start.")
            return 0
        executor = self._prepare(compiled, sched, state)
        if executor is None:
            return 1
        if self.opts.dry_run:
            self._print_dry_run(compiled, sched)
            stop_leftovers(state, executor, self.hosts, self.console, None, dry_run=True,
                           replicating=replications_of(compiled))
            return 0
        self._refuse_unattended(sched.pending(compiled))
        return self._run_steps(compiled, sched, state, executor, t0)

    def _prepare(self, compiled: CompiledPlan, sched: Schedule, state: J.JournalState) -> Optional[Executor]:
        """Secrets, connections, preflight, the done steps' artifacts re-verified; None when preflight failed."""
        for rec in state.steps.values():
            if rec.status == "done":
                for a in rec.artifacts:
                    if a.sha256:
                        self.known_sha[(a.host, a.path)] = a.sha256
        # Hosts: those of the steps still to run, and those holding artifacts to re-verify.
        hosts = {h for s in sched.pending(compiled) for h in s.hosts}
        hosts |= {a.host for s in compiled.leaves() if sched.status.get(s.id) == "done"
                  for a in (state.steps[s.id].artifacts if s.id in state.steps else ())}
        hosts |= {r.host for r in state.running} | {f.host for f in state.secret_files.values()}
        hosts |= set(docker_hosts(compiled.bound, sched.pending(compiled)))  # preflight asks Docker there
        hosts |= {r.host for r in state.routes.values()}
        hosts |= {h for r in state.replications.values() for h in r.hosts}  # a replication the plan dropped
        # a host-to-host copy runs on its source, and its route needs the target's connection too
        hosts |= {a.route.target for s in sched.pending(compiled) for a in s.actions if getattr(a, "route", None)}
        hosts = {h for h in hosts if h in compiled.bound.hosts}
        # Preflight checks what the steps still to run need: a resume asks only for their secrets.
        pending = {id(s) for s in sched.pending(compiled)}
        resuming = len(pending) < sum(1 for _ in compiled.leaves())
        needs = plan_needs(compiled.bound, [(i, s) for i, s in leaves_by_top(compiled) if id(s) in pending],
                           every_login=not resuming)
        self._read_secrets(compiled, sched, hosts, needed_secrets(needs, hosts))
        self._connect(compiled.bound, sorted(hosts))
        if not self._preflight(compiled, needs):
            return None
        executor = Executor(self.backends, self.secrets)
        self._reverify(compiled, sched, state, executor)
        return executor

    def _run_steps(self, compiled: CompiledPlan, sched: Schedule, state: J.JournalState, executor: Executor,
                   t0: float) -> int:
        leaves = list(compiled.leaves())
        pending = sched.pending(compiled)
        jpath = J.journal_path(self.opts.plan)
        self.journal = J.Journal(jpath)
        if self.opts.restart:
            self.journal.reset()
        self.journal.started_run(os.path.abspath(self.opts.plan))
        self.log.info("apply.start", steps=len(leaves), pending=len(pending))
        title = compiled.bound.plan.title.value if compiled.bound.plan.title else self.opts.plan
        self.console.say(f"mdsl apply {self.opts.plan}: {title}")
        done = count_steps(compiled, lambda leaf: sched.status.get(leaf.id) == "done")
        if done[1]:
            self.console.say(f"resuming: {steps_of(done, count_steps(compiled))} are done in the journal; "
                             f"starting at step {compiled.steps[sched.start].id}")
        executor.journal = self.journal
        for backend in self.backends.values():
            backend.on_started = functools.partial(self._command_started, backend)
        stop_leftovers(state, executor, self.hosts, self.console, self.journal,
                       replicating=replications_of(compiled))
        total = len(compiled.steps)
        ok = False
        runner = None
        try:
            with Progress(self.progress_enabled, self.progress_file) as progress:
                self.console.pause = progress.paused
                self.routes.executor, self.routes.journal = executor, self.journal
                runner = StepRunner(executor, self.hosts, self.journal, self.console, progress, self.known_sha,
                                    self.stats, self.expected, self.routes)
                for i, top in enumerate(compiled.steps):
                    todo = [m for m in top.leaves() if m in pending]
                    if todo:
                        runner.run_top(top, todo, f"[{i + 1}/{total}]")
            ok = True
        except StepFailed as exc:
            self._report_failure(exc)
            self._after_stop(compiled, executor)
            return 1
        except Refused as exc:
            self.console.warn(f"refused: {exc}")
            self.console.warn("nothing further was run; the journal keeps what is done")
            self._after_stop(compiled, executor)
            return 1
        except KeyboardInterrupt:
            self.console.warn("interrupted")
            self._after_stop(compiled, executor)
            return 130
        finally:
            if runner is not None:
                runner.close()
            self.journal.finished(ok)
        tops = sum(1 for top in compiled.steps if any(m in pending for m in top.leaves()))
        self._summary((tops, self.stats.ran), count_steps(compiled), time.monotonic() - t0)
        return 0

    def _summary(self, ran: Tuple[int, int], whole: Tuple[int, int], elapsed: float) -> None:
        self.console.say("")
        self.console.say(f"done: ran {steps_of(ran, whole)}; {human_bytes(self.stats.bytes_moved)} moved between "
                         f"hosts; {elapsed:.1f}s wall time")
        self.console.say(f"journal: {J.journal_path(self.opts.plan)} (`mdsl status {self.opts.plan}`)")
        self.log.info("apply.done", ran=self.stats.ran, bytes=self.stats.bytes_moved, seconds=round(elapsed, 2))

    # -- before the first step

    def _command_started(self, backend: Backend, command: str, pid: int, inner: Optional[int]) -> None:
        """A backend learnt a step command's process group: journal it (no fsync; nothing secret)."""
        sid = current_step.get()
        if sid is None or self.journal is None or not getattr(backend, "token", ""):
            return
        text = " ".join(log.redact_text(command).split())
        self.journal.command_started(sid, backend.name, pid, inner, backend.token,
                                     text if len(text) <= 120 else text[:117] + "...")

    def _read_secrets(self, compiled: CompiledPlan, sched: Schedule, hosts, for_preflight) -> None:
        """Every secret this run needs, read before anything connects: the commands of the steps still to
        run, the sudo passwords of the hosts it connects to, and the passwords preflight logs in with."""
        needed = []
        for s in sched.pending(compiled):
            for a in s.actions:
                for c in a.commands():
                    needed += c.secrets
        for h in compiled.bound.hosts.values():
            if h.sudo_password is not None and h.name in hosts:
                needed.append(h.sudo_password)
        needed += for_preflight
        missing = []
        for sec in dict.fromkeys(needed):
            try:
                self.secrets.lookup(sec)
            except KeyError as exc:
                missing.append(f"{sec.masked()}: {exc.args[0]}")
        if missing:
            raise Refused("secrets needed by the plan are missing:\n  " + "\n  ".join(missing))

    def _connect(self, bound: BoundPlan, hosts: List[str]) -> None:
        """Make a backend per host; preflight connects them (an unreachable host is P401 at its span)."""
        failures = []

        def one(name):
            return name, self.backend_factory(bound.hosts[name], self.plan_dir, self.opts.accept_new_host_keys)

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            futs = [pool.submit(contextvars.copy_context().run, one, h) for h in hosts]
            for f in futs:
                try:
                    name, backend = f.result()
                    self.backends[name] = backend
                except BackendError as exc:
                    failures.append(f"{exc.host}: {exc.message}" + (f"\n  help: {exc.hint}" if exc.hint else ""))
        if failures:
            raise Refused("cannot reach every host (nothing was changed):\n  " + "\n  ".join(failures))

    def _preflight(self, compiled: CompiledPlan, needs) -> bool:
        journal = J.LazyJournal(J.journal_path(self.opts.plan))
        self.routes = Routes(Executor(self.backends, self.secrets), self.backends, self.hosts, journal)
        try:
            findings = run_preflight(compiled.bound, compiled, self.backends, journal=journal, needs=needs,
                                     estimates=self.expected)
            findings += prove_routes(self.routes, compiled)
        finally:
            journal.close()
            self.routes.journal = None
        errors = [f for f in findings if f.severity == Severity.ERROR]
        others = [f for f in findings if f.severity != Severity.ERROR]
        if others:
            self.console.warn(render_findings(others))
        if errors:
            self.console.warn(render_findings(errors))
            self.console.warn(f"preflight found {len(errors)} problem(s); nothing was stopped or changed")
            return False
        return True

    def _reverify(self, compiled: CompiledPlan, sched: Schedule, state: J.JournalState,
                  executor: Executor) -> None:
        """Artifacts of steps the journal says are done must still match, unless a later done step consumed them."""
        leaves = list(compiled.leaves())
        for idx, leaf in enumerate(leaves):
            if sched.status.get(leaf.id) != "done":
                continue
            rec = state.steps.get(leaf.id)
            later_consumed = {(c.host, c.path) for s in leaves[idx + 1:] if sched.status.get(s.id) == "done"
                              for c in s.consumes}
            for a in (rec.artifacts if rec else ()):
                if (a.host, a.path) in later_consumed or a.host not in self.backends:
                    continue
                why = self._artifact_mismatch(executor, a)
                if why:
                    self.console.say(f"step {leaf.id} ({leaf.title}) is done in the journal, but {why}: "
                                     f"running again from step {compiled.steps[leaf.path[0]].id}")
                    invalidate_from(compiled, sched, leaf.path[0], leaf.id)
                    return

    def _artifact_mismatch(self, executor: Executor, a: J.ArtifactRecord) -> Optional[str]:
        try:
            sha, size = remote_hash(executor, self.hosts[a.host], a.path)
        except TransferError as exc:
            if exc.exit is None:  # an answer of another shape
                raise Refused(exc.message) from None
            return f'{a.host}:"{a.path}" is gone'
        if a.sha256 is not None and sha != a.sha256:
            return f'{a.host}:"{a.path}" changed (sha256 {sha[:12]}..., journal {a.sha256[:12]}...)'
        if int(size) != a.size:
            return f'{a.host}:"{a.path}" changed size ({size} bytes, journal {a.size})'
        return None

    def _refuse_unattended(self, pending: List[CompiledStep]) -> None:
        """Without --yes and without a terminal, refuse before anything runs rather than halfway."""
        asking = [s for s in pending if s.destructive or s.cutover or any(isinstance(a, Gate) for a in s.actions)]
        if asking and not self.console.can_ask():
            names = ", ".join(f"{s.id} ({s.summary})" for s in asking)
            raise Refused(f"steps {names} need a confirmation, but there is no terminal to ask on; "
                          "run from a terminal or pass --yes")

    def _print_dry_run(self, compiled: CompiledPlan, sched: Schedule) -> None:
        say = self.console.say
        say(f"dry run of {self.opts.plan}: nothing will be run")
        for leaf in compiled.leaves():
            st = sched.status.get(leaf.id, "pending")
            mark = {"done": "done, skipped", "before-from": "before --from, skipped"}.get(st, "would run")
            say(f"[{leaf.id}] {leaf.title}    (line {leaf.line}; {mark})"
                + ("    DESTRUCTIVE" if leaf.destructive else "")
                + ("    POINT OF NO RETURN" if leaf.cutover else ""))
            if st not in ("done", "before-from"):
                for line in leaf.describe():
                    say("    " + line)

    # -- failure

    def _after_stop(self, compiled: CompiledPlan, executor: Executor) -> None:
        """After a failure, a no or a Ctrl-C: roll back if asked to (or the operator says so), then say what
        state the run left: which services are stopped, how to bring them back, what the journal resumes."""
        jpath = J.journal_path(self.opts.plan)
        state = J.read_journal(jpath)
        todo = what_to_undo(compiled, state)
        rolled = False
        if todo.undos and not todo.refused:
            decide = self.opts.rollback
            if decide is None and not self.console.yes and self.console.can_ask():
                decide = bool(self.console.question(
                    "Roll back now? It runs: " + "; ".join(todo.lines()) + ". The target is left as it is."))
            if decide:
                self.console.say(f"rolling back ({len(todo.undos)} step(s) to undo; the target is left as it is)")
                rolled = RollbackRunner(executor, self.journal, self.console).run(todo)
                state = J.read_journal(jpath)
        lines = state_now(compiled, state, self.opts.plan, rolled_back=rolled)
        if lines:
            self.console.warn("\n".join(lines))
        elif rolled:
            self.console.warn("rolled back: the old app serves again")

    def _report_failure(self, exc: StepFailed) -> None:
        step = exc.step
        where = f"step {step.id} `{step.title}` (line {step.line})" if step else "a step"
        lines = [f"error: {where} failed" + (f" on host {exc.host}" if exc.host else "")]
        lines.append(f"  {log.redact_text(exc.message)}")
        if exc.command:
            lines.append(f"  command: {log.redact_text(exc.command)}")
        tail = [x for x in log.redact_text(exc.stderr or "").splitlines() if x.strip()][-STDERR_TAIL:]
        if tail:
            lines.append("  stderr (last lines):")
            lines += [f"    | {x}" for x in tail]
        if exc.hint:
            lines.append(f"  help: {exc.hint}")
        lines.append(f"  the journal keeps every finished step: fix the cause, then run "
                     f"`mdsl apply {self.opts.plan}` again to resume at step {step.id if step else '?'}")
        self.console.warn("\n".join(lines))


def apply_plan(opts: ApplyOptions, **kw) -> int:
    """Run `mdsl apply` with these options; returns the exit status."""
    log.configure(opts.log_format)
    runner = Apply(opts, **kw)
    return runner.run()
