"""`mdsl apply`: check, connect, preflight, then run the compiled steps with a journal.

Order of business (nothing on any host changes before the first step):
check (errors refuse; warnings ask unless `--yes`) -> compile -> lock ->
read the journal -> which steps are still to run -> read secrets -> connect
backends -> preflight (P4xx) -> re-verify the artifacts of the steps to skip
-> `--dry-run` stops here, printing commands -> the steps, in order, a
parallel block's members in threads -> summary.

Fabric, paramiko, rich and structlog are imported lazily (here, not in
`check`/`compile`), so `mdsl check` and `mdsl plan` start fast.
"""

from __future__ import annotations

import contextvars
import functools
import http.client
import ipaddress
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, TextIO, Tuple

import attrs
from attrs import define, field, frozen

from mdsl.model import BoundPlan, Host
from mdsl.compile.actions import (
    CopyArtifact, DnsCheck, Gate, HttpCheck, Poll, Shell, hash_command, parse_hash_answer, untrusted_answer,
)
from mdsl.compile.parts import Command, CompileError
from mdsl.compile.plan import CompiledPlan, CompiledStep, compile_plan
from mdsl.findings import Finding, PlanError, Severity
from mdsl.run import journal as J
from mdsl.run import log
from mdsl.run.backend import Backend, BackendError, Result
from mdsl.run.leftovers import stop_leftovers
from mdsl.run.progress import Progress
from mdsl.syntax import ast as A

STDERR_TAIL = 12  # lines of a failed command's stderr shown

# The step whose commands this thread runs (a parallel block's members run in copied contexts):
# the command pids and temp files journaled for it (mdsl.run.leftovers).
_STEP: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("mdsl_step", default=None)


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


class StepFailed(Exception):
    """A step did not complete: which step, on which host, which command, and what it said."""

    def __init__(self, message: str, *, host: Optional[str] = None, command: Optional[str] = None,
                 exit: Optional[int] = None, stderr: str = "", hint: Optional[str] = None):
        super().__init__(message)
        self.message, self.host, self.command, self.exit = message, host, command, exit
        self.stderr, self.hint = stderr, hint
        self.step: Optional[CompiledStep] = None


_CUTOVER = ("{what} starts the app on the data that was copied: from here on it takes writes that the old "
            "source never sees, so going back to the source would lose them. Run it?")


class Refused(Exception):
    """The operator (or the lack of one) said no; nothing further runs."""


# ---------------------------------------------------------------- secrets


class SecretStore:
    """Reads `env("X")` / `file("P")` on the control machine at apply time; every value is redacted from logs."""

    def __init__(self, environ=None, base_dir: str = "."):
        self.environ = os.environ if environ is None else environ
        self.base_dir = base_dir
        self._values: Dict[A.Secret, str] = {}

    def lookup(self, secret: A.Secret) -> str:
        """The secret's value (read once)."""
        if secret in self._values:
            return self._values[secret]
        if secret.source == "env":
            if secret.arg not in self.environ:
                raise KeyError(f"environment variable {secret.arg} is not set")
            value = self.environ[secret.arg]
        else:
            path = os.path.join(self.base_dir, os.path.expanduser(secret.arg))
            try:
                with open(path, encoding="utf-8") as f:
                    value = f.read()
            except OSError as exc:
                raise KeyError(f"cannot read {secret.arg}: {exc.strerror}") from None
            value = value[:-1] if value.endswith("\n") else value
        log.add_secret(value)
        self._values[secret] = value
        return value


# ---------------------------------------------------------------- running commands


class Executor:
    """Runs compiled `Command`s through the hosts' backends: secret files, sudo stdin, cleanup."""

    def __init__(self, backends: Dict[str, Backend], secrets: SecretStore):
        self.backends = backends
        self.secrets = secrets
        self.journal: Optional[J.Journal] = None  # set once steps run: secret files are journaled

    def _stdin(self, cmd: Command) -> Optional[bytes]:
        st = cmd.stdin_text()
        return st.reveal(self.secrets.lookup) if st is not None else None

    def _backend(self, cmd: Command) -> Backend:
        return self.backends[cmd.host]

    def run(self, cmd: Command, timeout: Optional[float] = None) -> Result:
        """Run one command; 0600 secret files exist only while it runs."""
        backend = self._backend(cmd)
        paths: Dict[str, str] = {}
        made: List[Tuple[Command, str]] = []
        try:
            for sf in cmd.all_secret_files():
                if sf.var in paths:
                    continue
                writer = attrs.evolve(sf.owner.private_file_writer(), stdin=sf.content)
                res = backend.run(writer.render(masked=False), stdin=self._stdin(writer), timeout=60)
                if not res.ok or not res.stdout.strip():
                    raise BackendError(cmd.host, "cannot create a private temp file: "
                                       + log.redact_text(res.stderr.strip()))
                paths[sf.var] = res.stdout.strip()
                made.append((sf.owner, paths[sf.var]))
                if self.journal is not None:  # the path only: a killed run's file is removed by the next
                    self.journal.secret_file_created(_STEP.get(), cmd.host, paths[sf.var], sf.owner.run_as,
                                                     sf.owner.sudo)
            return backend.run(cmd.render(masked=False, secret_paths=paths), stdin=self._stdin(cmd),
                               timeout=timeout)
        finally:
            for owner, p in made:
                rm = owner.remover(p)
                try:
                    gone = backend.run(rm.render(masked=False), stdin=self._stdin(rm), timeout=60).ok
                except BackendError:
                    gone = False
                if gone and self.journal is not None:
                    self.journal.secret_file_removed(cmd.host, p)

    def read_stream(self, cmd: Command, sink, timeout: Optional[float] = None) -> Result:
        """Stream a command's stdout (no stdin: a host needing a sudo password cannot be streamed from)."""
        if cmd.stdin_text() is not None or list(cmd.all_secret_files()):
            raise BackendError(cmd.host, "cannot stream from a host whose sudo needs a password",
                               hint="use `via = rsync` or passwordless sudo on that host")
        return self._backend(cmd).read_stream(cmd.render(masked=False), sink, timeout=timeout)

    def openssh(self, cmd: Command) -> Optional[Tuple[List[str], Optional[bytes], Backend]]:
        """(OpenSSH client argv, first stdin bytes, backend) to run `cmd` for bulk bytes; None when not possible."""
        if list(cmd.all_secret_files()):
            return None
        backend = self._backend(cmd)
        make = getattr(backend, "openssh_argv", None)
        argv = make(cmd.render(masked=False)) if make is not None else None
        return (argv, self._stdin(cmd), backend) if argv else None

    def write_stream(self, cmd: Command, chunks: Iterator[bytes], timeout: Optional[float] = None) -> Result:
        """Stream into a command's stdin (after the sudo password line, when there is one)."""
        first = self._stdin(cmd)

        def all_chunks():
            if first:
                yield first
            yield from chunks

        return self._backend(cmd).write_stream(cmd.render(masked=False), all_chunks(), timeout=timeout)


# ---------------------------------------------------------------- checks done on the control machine


class _ViaHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to another address than DNS gives, keeping the URL's name for SNI and certificate checks."""

    def __init__(self, host, port, connect_to, **kw):
        super().__init__(host, port, **kw)
        self._connect_to = connect_to

    def connect(self):
        sock = socket.create_connection((self._connect_to, self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _ViaHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to another address; the Host header still names the URL's host."""

    def __init__(self, host, port, connect_to, **kw):
        super().__init__(host, port, **kw)
        self._connect_to = connect_to

    def connect(self):
        self.sock = socket.create_connection((self._connect_to, self.port), self.timeout, self.source_address)


def http_check(a: HttpCheck, sleep=time.sleep) -> str:
    """GET the URL until it answers with the expected status (and text); returns what it saw.

    `via = HOST` connects to that host's address while the request keeps the
    URL's Host header, SNI and certificate name: the new server is tested
    exactly as it will be seen after the DNS switch, before that switch.
    Done with http.client (urllib's own transport), since urllib cannot
    connect to one address while naming another.
    """
    u = urllib.parse.urlsplit(a.url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise StepFailed(f"cannot check {a.url!r}: only http:// and https:// URLs")
    https = u.scheme == "https"
    port = u.port or (443 if https else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    deadline = time.monotonic() + a.timeout
    last = "no answer"
    while True:
        try:
            connect_to = a.address or u.hostname
            if https:
                conn = _ViaHTTPSConnection(u.hostname, port, connect_to, timeout=10,
                                           context=ssl.create_default_context())
            else:
                conn = _ViaHTTPConnection(u.hostname, port, connect_to, timeout=10)
            try:
                conn.request("GET", target, headers={"Host": u.netloc.rpartition("@")[2], "User-Agent": "mdsl"})
                resp = conn.getresponse()
                body = resp.read(1 << 20).decode("utf-8", "replace")
            finally:
                conn.close()
            if resp.status == a.status and (a.contains is None or a.contains in body):
                return f"status {resp.status}"
            last = f"status {resp.status}" + (f", body without {a.contains!r}" if resp.status == a.status else "")
        except (OSError, http.client.HTTPException, ssl.SSLError, UnicodeError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            where = f" via {a.via} ({a.address})" if a.via else ""
            raise StepFailed(f"GET {a.url}{where}: expected status {a.status}, got {last}",
                             hint="is the service up and reachable from this machine?")
        sleep(1.0)


def _own_addresses() -> set:
    out = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(info[4][0])
    except OSError:
        pass
    return out


def dns_check(a: DnsCheck) -> str:
    """Resolve the name; it must point at the host's address (or this machine for a local host)."""
    try:
        got = {i[4][0] for i in socket.getaddrinfo(a.name, None)}
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode (too long, empty)
        raise StepFailed(f"cannot resolve {a.name!r}: {exc}") from None
    if a.local:
        ok = any(ipaddress.ip_address(x.split("%")[0]).is_loopback for x in got) or bool(got & _own_addresses())
        want = "this machine"
    else:
        want_set = set()
        for e in a.expected:
            try:
                want_set |= {i[4][0] for i in socket.getaddrinfo(e, None)}
            except (OSError, UnicodeError):
                want_set.add(e)
        ok = bool(got & want_set)
        want = ", ".join(sorted(want_set))
    if not ok:
        raise StepFailed(f"{a.name} resolves to {', '.join(sorted(got))}, not {a.host} ({want})",
                         hint="DNS may still be propagating; check the record and its TTL")
    return f"{a.name} -> {', '.join(sorted(got))}"


# ---------------------------------------------------------------- asking the operator


def tty_ask(prompt: str) -> Optional[bool]:
    """Ask yes/no on the terminal (/dev/tty, else a TTY stdin); None when there is no terminal."""
    try:
        with open("/dev/tty", "r+", encoding="utf-8") as tty:
            tty.write(prompt + " [y/N] ")
            tty.flush()
            return tty.readline().strip().lower() in ("y", "yes")
    except OSError:
        pass
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return input(prompt + " [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:
            return False
    return None


# ---------------------------------------------------------------- the schedule


@define
class Schedule:
    """Which steps the journal lets us skip, and where the run starts."""

    status: Dict[str, str] = field(factory=dict)  # leaf id -> done | pending | changed | before-from
    start: int = 0  # index of the first top-level step with work to do

    def pending(self, compiled: CompiledPlan) -> List[CompiledStep]:
        """Leaves still to run, in order."""
        return [s for s in compiled.leaves() if self.status.get(s.id) not in ("done", "before-from")]


def make_schedule(compiled: CompiledPlan, state: J.JournalState, from_label: Optional[str] = None) -> Schedule:
    """Done leaves form a prefix (a partly done parallel block keeps its done members); fingerprints must match."""
    sched = Schedule()
    start_at = None
    if from_label is not None:
        target = compiled.by_label(from_label)
        if target is None:
            raise KeyError(from_label)
        start_at = target.path[0]
    cut = False
    sched.start = len(compiled.steps)
    for i, top in enumerate(compiled.steps):
        if start_at is not None:
            for leaf in top.leaves():
                sched.status[leaf.id] = "before-from" if i < start_at else "pending"
            if i == start_at:
                sched.start = i
            continue
        lane_cut = set()  # a lane's steps run in order: after one still to run, the rest run again too
        lane_of = {m.id: k for k, lane in enumerate(top.lanes()) for m in lane}
        for leaf in top.leaves():
            rec = state.steps.get(leaf.id)
            lane = lane_of[leaf.id]
            if (not cut and lane not in lane_cut and rec is not None and rec.status == "done"
                    and rec.fingerprint == leaf.fingerprint):
                sched.status[leaf.id] = "done"
            elif rec is not None and rec.status == "done":
                sched.status[leaf.id] = "changed" if rec.fingerprint != leaf.fingerprint else "pending"
            else:
                sched.status[leaf.id] = "pending"
            if sched.status[leaf.id] != "done":
                lane_cut.add(lane)
        if not cut and any(sched.status[x.id] != "done" for x in top.leaves()):
            cut = True
            sched.start = i
    return sched


def invalidate_from(compiled: CompiledPlan, sched: Schedule, top_index: int, leaf_id: str) -> None:
    """A done step's artifact no longer matches: that step and every later one run again."""
    # in a lane, the steps after it (which used what it made) too
    later = {m.id for lane in compiled.steps[top_index].lanes() for k, x in enumerate(lane) if x.id == leaf_id
             for m in lane[k:]}
    for i, top in enumerate(compiled.steps):
        for leaf in top.leaves():
            if i > top_index or leaf.id == leaf_id or leaf.id in later:
                if sched.status.get(leaf.id) == "done":
                    sched.status[leaf.id] = "pending"
    sched.start = min(sched.start, top_index)


# ---------------------------------------------------------------- output helpers


def format_finding(f: Finding) -> str:
    """`path:line:col: severity[CODE]: message` plus its help (the CLI's renderer does the full layout)."""
    s = f.span
    text = f"{s.file}:{s.line}:{s.col}: {f.severity.label}[{f.code}]: {f.message}"
    for n in f.notes:
        text += f"\n  = note: {n}"
    if f.help:
        text += f"\n  = help: {f.help}"
    return text


def render_findings(findings: List[Finding]) -> str:
    """Findings as rustc-style text (mdsl.render), the source lines read from the plan files."""
    try:
        from mdsl import render
    except ImportError:  # pragma: no cover - render ships with mdsl
        return "\n".join(format_finding(f) for f in findings)
    return render.render_text(findings, render.Sources(), color=render.use_color(sys.stderr)).rstrip("\n")


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def check_findings(plan: A.Plan) -> Tuple[BoundPlan, List[Finding]]:
    """`mdsl check`'s findings; when the symbolic walk is not installed yet, the resolve stage's only."""
    try:
        from mdsl.check import check_plan

        res = check_plan(plan)
        return res.bound, list(res.findings)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("mdsl.check."):
            raise
        from mdsl.check.resolve import resolve

        bound = resolve(plan)
        return bound, list(bound.findings)


# ---------------------------------------------------------------- the run


def _default_backend(host: Host, plan_dir: str, accept_new_host_keys: bool) -> Backend:
    if host.local:
        from mdsl.run.local import LocalBackend

        return LocalBackend(host, cwd=plan_dir)
    try:
        from mdsl.run.ssh import SshBackend
    except ImportError as exc:
        raise BackendError(host.name, f"the SSH backend is not available ({exc})") from None
    return SshBackend(host, accept_new_host_keys=accept_new_host_keys)


@define
class Stats:
    """Counters for the summary."""

    ran: int = 0
    skipped: int = 0
    bytes_moved: int = 0
    lock: threading.Lock = field(factory=threading.Lock)

    def add_bytes(self, n: int) -> None:
        """Count bytes copied between hosts."""
        with self.lock:
            self.bytes_moved += n


class Apply:
    """One `mdsl apply` invocation."""

    def __init__(self, opts: ApplyOptions, out: TextIO = None, err: TextIO = None,
                 ask: Callable[[str], Optional[bool]] = tty_ask,
                 backend_factory: Callable[[Host, str, bool], Backend] = _default_backend,
                 environ=None, progress: Optional[bool] = None):
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.ask_fn = ask
        self.backend_factory = backend_factory
        self.plan_dir = os.path.dirname(os.path.abspath(opts.plan))
        self.secrets = SecretStore(environ, self.plan_dir)
        self.progress_enabled = progress
        self.backends: Dict[str, Backend] = {}
        self.stats = Stats()
        self.known_sha: Dict[Tuple[str, str], str] = {}
        self._print_lock = threading.Lock()
        self.journal: Optional[J.Journal] = None
        self.hosts: Dict[str, Host] = {}
        self.progress: Optional[Progress] = None
        self.log = log.get_logger()

    # -- output

    def say(self, text: str = "") -> None:
        """A line of the narrative (stdout)."""
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        """A line on stderr."""
        with self._print_lock:
            print(text, file=self.err, flush=True)

    def ask(self, prompt: str, what: str) -> None:
        """Ask yes/no unless `--yes`; no terminal and no `--yes` refuses."""
        if self.opts.yes:
            return
        answer = self.ask_fn(prompt)
        if answer is None:
            raise Refused(f"{what} needs a confirmation, but there is no terminal to ask on; "
                          "run from a terminal or pass --yes")
        if not answer:
            raise Refused(f"{what}: not confirmed")

    # -- the whole thing

    def run(self) -> int:
        """Run the apply; returns the exit status (0 ok, 1 failed or refused, 2 unusable plan)."""
        t0 = time.monotonic()
        try:
            compiled = self._load()
        except _Exit as e:
            return e.code
        self.hosts = compiled.bound.hosts
        lock = J.PlanLock(J.lock_path(self.opts.plan))
        if not self.opts.dry_run:
            try:
                lock.acquire()
            except J.LockError as exc:
                self.warn(f"error: {exc.message}\n  help: {exc.hint}")
                return 1
            prev = lock.previous
            if prev.get("pid"):  # its holder died without releasing it: the kernel dropped its flock
                self.warn(f"note: the previous apply of this plan (pid {prev['pid']}, started "
                          f"{prev.get('started', '?')}) ended without finishing; its lock was free, "
                          "the journal says where it stopped")
        try:
            return self._run_locked(compiled, t0)
        except Refused as exc:
            self.warn(f"refused: {exc}")
            self.warn("nothing further was run; the journal keeps what is done")
            return 1
        except KeyboardInterrupt:
            self.warn("interrupted; run `mdsl apply` again to resume where it stopped")
            return 130
        finally:
            for b in self.backends.values():
                try:
                    b.close()
                except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                    pass
            if self.journal is not None:
                self.journal.close()
            lock.release()
            log.clear()
            _STEP.set(None)

    def _load(self) -> CompiledPlan:
        from mdsl.syntax.parser import parse_file

        try:
            plan = parse_file(self.opts.plan)
        except PlanError as exc:
            self.warn(render_findings(exc.findings))
            raise _Exit(2) from None
        log.bind(plan=J.plan_name(self.opts.plan))
        bound, findings = check_findings(plan)
        errors = [f for f in findings if f.severity == Severity.ERROR]
        warnings = [f for f in findings if f.severity == Severity.WARNING]
        if errors:
            self.warn(render_findings(errors + warnings))
            self.warn(f"refusing to apply: `mdsl check` found {len(errors)} error(s)")
            raise _Exit(2)
        if warnings:
            self.warn(render_findings(warnings))
            try:
                self.ask(f"`mdsl check` found {len(warnings)} warning(s). Apply anyway?", "a plan with warnings")
            except Refused as exc:
                self.warn(f"refused: {exc}")
                raise _Exit(1) from None
        try:
            return compile_plan(bound)
        except CompileError as exc:
            self.warn(format_finding(Finding("E106", Severity.ERROR, exc.message, exc.span, help=exc.help)))
            self.warn("refusing to apply: a step cannot be compiled safely")
            raise _Exit(2) from None

    def _run_locked(self, compiled: CompiledPlan, t0: float) -> int:
        _STEP.set(None)  # no step yet (an earlier apply in this thread may have left its last one)
        jpath = J.journal_path(self.opts.plan)
        state = J.read_journal(jpath)
        if self.opts.restart:
            state = state.leftovers()  # forget the steps, not what a killed run left on the hosts
        try:
            sched = make_schedule(compiled, state, self.opts.from_label)
        except KeyError:
            labels = [s.label for s in compiled.leaves() if s.label] + [s.label for s in compiled.steps
                                                                       if s.is_parallel and s.label]
            self.warn(f"error: no step is labelled `{self.opts.from_label}`"
                      + (f" (labels: {', '.join(labels)})" if labels else " (the plan has no labels)"))
            return 2
        leaves = list(compiled.leaves())
        name = self.opts.plan
        if not sched.pending(compiled):
            self.say(f"nothing to do: all {len(leaves)} steps of {name} are done (journal {jpath}).")
            self.say("Run with --restart (or delete the journal) to run it again from the start.")
            return 0
        for rec in state.steps.values():
            if rec.status == "done":
                for a in rec.artifacts:
                    if a.sha256:
                        self.known_sha[(a.host, a.path)] = a.sha256

        # Hosts: those of the steps still to run, and those holding artifacts to re-verify.
        hosts = {h for s in sched.pending(compiled) for h in s.hosts}
        hosts |= {a.host for s in leaves if sched.status.get(s.id) == "done"
                  for a in (state.steps[s.id].artifacts if s.id in state.steps else ())}
        hosts |= {r.host for r in state.running} | {f.host for f in state.secret_files.values()}
        hosts = {h for h in hosts if h in compiled.bound.hosts}
        self._read_secrets(compiled, sched)
        self._connect(compiled.bound, sorted(hosts))
        if not self._preflight(compiled):
            return 1
        executor = Executor(self.backends, self.secrets)
        self._reverify(compiled, sched, state, executor)

        pending = sched.pending(compiled)
        done_before = len(leaves) - len(pending)
        if self.opts.dry_run:
            self._print_dry_run(compiled, sched)
            stop_leftovers(self, state, executor, dry_run=True)
            return 0
        self._refuse_unattended(pending)

        self.journal = J.Journal(jpath)
        if self.opts.restart:
            self.journal.reset()
        self.journal.started_run(os.path.abspath(self.opts.plan))
        self.log.info("apply.start", steps=len(leaves), pending=len(pending))
        title = compiled.bound.plan.title.value if compiled.bound.plan.title else name
        self.say(f"mdsl apply {name}: {title}")
        if done_before:
            self.say(f"resuming: {done_before} of {len(leaves)} steps are done in the journal; "
                     f"starting at step {compiled.steps[sched.start].id}")
        executor.journal = self.journal
        for b in self.backends.values():
            b.on_started = functools.partial(self._command_started, b)
        stop_leftovers(self, state, executor)
        self.stats.skipped = done_before
        total = len(compiled.steps)
        ok = False
        try:
            with Progress(self.progress_enabled) as progress:
                self.progress = progress
                for i, top in enumerate(compiled.steps):
                    todo = [m for m in top.leaves() if m in pending]
                    if not todo:
                        continue
                    if top.is_parallel:
                        self._run_parallel(top, todo, executor, i, total)
                    else:
                        self._run_leaf(top, executor, f"[{i + 1}/{total}]")
            ok = True
        except StepFailed as exc:
            self._report_failure(exc)
            return 1
        finally:
            self.journal.finished(ok)
        elapsed = time.monotonic() - t0
        self.say("")
        tops = sum(1 for top in compiled.steps if any(m in pending for m in top.leaves()))
        self.say(f"done: {tops} step(s) run"
                 + (f" ({self.stats.ran} counting each parallel member)" if self.stats.ran != tops else "")
                 + (f", {self.stats.skipped} already done" if self.stats.skipped else "")
                 + f"; {human_bytes(self.stats.bytes_moved)} moved between hosts; {elapsed:.1f}s wall time")
        self.say(f"journal: {jpath} (`mdsl status {name}`)")
        self.log.info("apply.done", ran=self.stats.ran, bytes=self.stats.bytes_moved, seconds=round(elapsed, 2))
        return 0

    # -- before the first step

    def _command_started(self, backend: Backend, command: str, pid: int, inner: Optional[int]) -> None:
        """A backend learnt a step command's process group: journal it (no fsync; nothing secret)."""
        sid = _STEP.get()
        if sid is None or self.journal is None or not getattr(backend, "token", ""):
            return
        text = " ".join(log.redact_text(command).split())
        self.journal.command_started(sid, backend.name, pid, inner, backend.token,
                                     text if len(text) <= 120 else text[:117] + "...")

    def _read_secrets(self, compiled: CompiledPlan, sched: Schedule) -> None:
        needed = []
        for s in sched.pending(compiled):
            for a in s.actions:
                for c in a.commands():
                    needed += c.secrets
        for h in compiled.bound.hosts.values():
            if h.sudo_password is not None:
                needed.append(h.sudo_password)
        missing = []
        for sec in dict.fromkeys(needed):
            try:
                self.secrets.lookup(sec)
            except KeyError as exc:
                missing.append(f"{sec.masked()}: {exc.args[0]}")
        if missing:
            raise Refused("secrets needed by the plan are missing:\n  " + "\n  ".join(missing))

    def _connect(self, bound: BoundPlan, hosts: List[str]) -> None:
        failures = []

        def one(name):
            b = self.backend_factory(bound.hosts[name], self.plan_dir, self.opts.accept_new_host_keys)
            if not self._preflight_available():
                b.connect()  # else preflight connects, and reports an unreachable host as P401 at its span
            return name, b

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            futs = [pool.submit(contextvars.copy_context().run, one, h) for h in hosts]
            for f in futs:
                try:
                    name, b = f.result()
                    self.backends[name] = b
                except BackendError as exc:
                    failures.append(f"{exc.host}: {exc.message}" + (f"\n  help: {exc.hint}" if exc.hint else ""))
        if failures:
            raise Refused("cannot reach every host (nothing was changed):\n  " + "\n  ".join(failures))

    @staticmethod
    def _preflight_available() -> bool:
        try:
            import mdsl.run.preflight  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name != "mdsl.run.preflight":
                raise
            return False
        return True

    def _preflight(self, compiled: CompiledPlan) -> bool:
        if not self._preflight_available():
            self.log.info("preflight.unavailable")
            return True
        from mdsl.run.preflight import run_preflight

        journal = J.LazyJournal(J.journal_path(self.opts.plan))
        try:
            findings = run_preflight(compiled.bound, compiled, self.backends, journal=journal)
        finally:
            journal.close()
        errors = [f for f in findings if f.severity == Severity.ERROR]
        others = [f for f in findings if f.severity != Severity.ERROR]
        if others:
            self.warn(render_findings(others))
        if errors:
            self.warn(render_findings(errors))
            self.warn(f"preflight found {len(errors)} problem(s); nothing was stopped or changed")
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
                    self.say(f"step {leaf.id} ({leaf.title}) is done in the journal, but {why}: "
                             f"running again from step {compiled.steps[leaf.path[0]].id}")
                    invalidate_from(compiled, sched, leaf.path[0], leaf.id)
                    return

    def _artifact_mismatch(self, executor: Executor, a: J.ArtifactRecord) -> Optional[str]:
        h = self.hosts[a.host]
        res = executor.run(hash_command(a.host, a.path, sudo=h.sudo, sudo_password=h.sudo_password))
        if not res.ok:
            return f'{a.host}:"{a.path}" is gone'
        got = parse_hash_answer(res.stdout)
        if got is None:
            raise Refused(untrusted_answer(a.host, f'`sha256sum` of "{a.path}"', res.stdout))
        sha, size = got
        if a.sha256 is not None and sha != a.sha256:
            return f'{a.host}:"{a.path}" changed (sha256 {sha[:12]}..., journal {a.sha256[:12]}...)'
        if int(size) != a.size:
            return f'{a.host}:"{a.path}" changed size ({size} bytes, journal {a.size})'
        return None

    def _refuse_unattended(self, pending: List[CompiledStep]) -> None:
        """Without --yes and without a terminal, refuse before anything runs rather than halfway."""
        if self.opts.yes:
            return
        asking = [s for s in pending if s.destructive or s.cutover or any(isinstance(a, Gate) for a in s.actions)]
        if not asking:
            return
        if self.ask_fn is tty_ask and not _have_tty():
            names = ", ".join(f"{s.id} ({s.summary})" for s in asking)
            raise Refused(f"steps {names} need a confirmation, but there is no terminal to ask on; "
                          "run from a terminal or pass --yes")

    def _print_dry_run(self, compiled: CompiledPlan, sched: Schedule) -> None:
        self.say(f"dry run of {self.opts.plan}: nothing will be run")
        for top in compiled.steps:
            for leaf in top.leaves():
                st = sched.status.get(leaf.id, "pending")
                mark = {"done": "done, skipped", "before-from": "before --from, skipped"}.get(st, "would run")
                self.say(f"[{leaf.id}] {leaf.title}    (line {leaf.line}; {mark})"
                         + ("    DESTRUCTIVE" if leaf.destructive else "")
                         + ("    POINT OF NO RETURN" if leaf.cutover else ""))
                if st not in ("done", "before-from"):
                    for line in leaf.describe():
                        self.say("    " + line)

    # -- the steps

    def _run_parallel(self, top: CompiledStep, todo: List[CompiledStep], executor: Executor, i: int,
                      total: int) -> None:
        destructive = [m for m in todo if m.destructive]
        if destructive:
            self.ask(f"parallel block {top.id} has destructive steps: "
                     + "; ".join(m.summary for m in destructive) + ". Run it?", f"step {top.id}")
        cutover = [m for m in todo if m.cutover]
        if cutover and not destructive:
            self.ask(_CUTOVER.format(what="; ".join(m.summary for m in cutover)), f"step {top.id}")
        self.say(f"[{i + 1}/{total}] {top.title}")
        self._run_block(top, set(m.id for m in todo), executor)

    def _run_block(self, block: CompiledStep, todo, executor: Executor) -> None:
        """One thread per member of the block, and per lane (`sequence`): a lane runs its steps in order
        (a block inside it, its members at once) and stops at its first failure; the other members
        and lanes run on to their end. `todo`: the ids of the steps to run."""
        members = [m for m in block.members if any(x.id in todo for x in m.leaves())]
        with ThreadPoolExecutor(max_workers=max(1, len(members)), thread_name_prefix="mdsl-step") as pool:
            futs = [pool.submit(contextvars.copy_context().run, self._run_member, m, todo, executor) for m in members]
            failures = []
            for f in futs:
                try:
                    f.result()
                except StepFailed as exc:
                    failures.append(exc)
        if failures:
            raise failures[0]

    def _run_member(self, m: CompiledStep, todo, executor: Executor) -> None:
        if m.is_sequence:
            for s in m.members:
                if any(x.id in todo for x in s.leaves()):
                    self._run_member(s, todo, executor)
        elif m.is_parallel:
            self._run_block(m, todo, executor)
        else:
            self._run_leaf(m, executor, f"  [{m.id}]", True)

    def _run_leaf(self, leaf: CompiledStep, executor: Executor, prefix: str, asked: bool = False) -> None:
        log.unbind("host")
        log.bind(step=leaf.id, label=leaf.label)
        _STEP.set(leaf.id)
        if leaf.destructive and not asked:
            self.ask(f"step {leaf.id} `{leaf.summary}` destroys data. Run it?", f"step {leaf.id}")
        elif leaf.cutover and not asked:
            self.ask(_CUTOVER.format(what=f"step {leaf.id} `{leaf.summary}`"), f"step {leaf.id}")
        self.journal.step_started(leaf.id, leaf.fingerprint)
        self.log.info("step.start", kind=leaf.kind, line=leaf.line)
        t = time.monotonic()
        moved = 0
        produced: Dict[Tuple[str, str], Tuple[str, int]] = {}
        notes: List[str] = []
        try:
            for action in leaf.actions:
                moved += self._perform(leaf, action, executor, produced, notes)
            records = self._hash_artifacts(leaf, executor, produced)
        except StepFailed as exc:
            exc.step = leaf
            self.journal.step_failed(leaf.id, leaf.fingerprint, time.monotonic() - t, log.redact_text(exc.message),
                                     exc.host, exc.command)
            self.log.error("step.failed", error=exc.message, host=exc.host)
            self.say(f"{prefix} {leaf.title} ... FAILED")
            raise
        except BackendError as exc:
            err = StepFailed(exc.message, host=exc.host, hint=exc.hint)
            err.step = leaf
            self.journal.step_failed(leaf.id, leaf.fingerprint, time.monotonic() - t, log.redact_text(exc.message),
                                     exc.host)
            self.say(f"{prefix} {leaf.title} ... FAILED")
            raise err from None
        secs = time.monotonic() - t
        self.journal.step_done(leaf.id, leaf.fingerprint, secs, records, moved)
        with self.stats.lock:
            self.stats.ran += 1
        self.log.info("step.done", seconds=round(secs, 3), bytes=moved)
        extra = f", {human_bytes(moved)} copied" if moved else ""
        self.say(f"{prefix} {leaf.title} ... ok ({secs:.1f}s{extra})"
                 + "".join(f"\n{' ' * len(prefix)}   | {line}" for line in notes))

    def _fail(self, cmd: Command, res: Result, what: str) -> StepFailed:
        status = f"killed by {res.signal} (exit status {res.exit})" if res.signal else f"exit status {res.exit}"
        return StepFailed(f"{what}: {status}", host=cmd.host, command=cmd.render(masked=True),
                          exit=res.exit, stderr=res.stderr)

    def _perform(self, leaf: CompiledStep, action, executor: Executor, produced, notes: List[str]) -> int:
        """Run one action; returns bytes copied between hosts."""
        if isinstance(action, Shell):
            log.bind(host=action.command.host)
            self.log.info("command.run", command=action.command.render(masked=True))
            watcher = self._watch(action, executor)
            try:
                res = executor.run(action.command, timeout=action.timeout)
            except BackendError as exc:
                raise StepFailed(exc.message, host=exc.host, command=action.command.render(masked=True),
                                 hint=exc.hint) from None
            finally:
                if watcher:
                    watcher()
            if not res.ok:
                raise self._fail(action.command, res, action.what)
            if action.show_output:
                notes.extend(log.redact_text(res.stdout).splitlines()[-STDERR_TAIL:])
            return 0
        if isinstance(action, Poll):
            log.bind(host=action.command.host)
            deadline = time.monotonic() + action.timeout
            while True:
                res = executor.run(action.command, timeout=max(5.0, action.timeout))
                if res.ok == action.want_ok:
                    return 0
                if time.monotonic() >= deadline:
                    what = f"{action.what}: still {'not ' if action.want_ok else ''}so after {action.timeout:g}s"
                    raise self._fail(action.command, res, what)
                time.sleep(action.interval)
        if isinstance(action, CopyArtifact):
            return self._copy(action, executor, produced)
        if isinstance(action, HttpCheck):
            self.log.info("verify.http", url=action.url, via=action.via)
            http_check(action)
            return 0
        if isinstance(action, DnsCheck):
            dns_check(action)
            return 0
        if isinstance(action, Gate):
            self.say(f"  confirm: {action.message}")
            self.ask(f"{action.message} Continue?", f"the gate `confirm {action.message!r}`")
            return 0
        raise StepFailed(f"unknown action {type(action).__name__}")  # pragma: no cover

    def _watch(self, action: Shell, executor: Executor):
        """While a dump/archive runs, show the size of its growing `.part` (TTY only)."""
        progress = self.progress
        if action.watch is None or progress is None or not progress.enabled:
            return None
        task = progress.task(action.what)
        stop = threading.Event()
        h = action.command

        def poll():
            from mdsl.compile.actions import size_command

            _STEP.set(None)  # a size probe: nothing to stop after a crash, nothing to journal
            while not stop.wait(1.0):
                try:
                    res = executor.run(size_command(h.host, action.watch.path, sudo=h.sudo,
                                                    sudo_password=h.sudo_password), timeout=10)
                    if res.ok:
                        task.set_completed(int(res.stdout.split()[1]))
                except Exception:  # noqa: BLE001 - progress is best effort
                    pass

        th = threading.Thread(target=contextvars.copy_context().run, args=(poll,), daemon=True)
        th.start()

        def finish():
            stop.set()
            th.join(timeout=2)
            task.done()

        return finish

    def _copy(self, action: CopyArtifact, executor: Executor, produced) -> int:
        from mdsl.run.transfer import Copier, TransferError

        log.bind(host=action.dest.host)
        task = self.progress.task(f"{action.source} -> {action.dest.host}") if self.progress else None
        copier = Copier(executor, self.hosts, on_bytes=(task.advance if task else (lambda n: None)),
                        on_total=(task.set_total if task else (lambda n: None)))
        try:
            copied = copier.copy(action, self.known_sha.get((action.source.host, action.source.path)))
        except TransferError as exc:
            raise StepFailed(exc.message, host=exc.host, command=exc.command, stderr=exc.stderr) from None
        except BackendError as exc:
            raise StepFailed(exc.message, host=exc.host, hint=exc.hint) from None
        finally:
            if task:
                task.done()
        produced[(action.dest.host, action.dest.path)] = (copied.sha256, copied.size)
        self.stats.add_bytes(copied.bytes_sent)
        return copied.bytes_sent

    def _hash_artifacts(self, leaf: CompiledStep, executor: Executor, produced) -> List[J.ArtifactRecord]:
        out = []
        for a in leaf.artifacts:
            key = (a.host, a.path)
            if key in produced:
                sha, size = produced[key]
            else:
                h = self.hosts[a.host]
                cmd = hash_command(a.host, a.path, sudo=h.sudo, sudo_password=h.sudo_password)
                res = executor.run(cmd)
                if not res.ok:
                    raise self._fail(cmd, res, f'hashing the artifact {a.host}:"{a.path}"')
                got = parse_hash_answer(res.stdout)
                if got is None:
                    raise StepFailed(untrusted_answer(a.host, f'`sha256sum` of "{a.path}"', res.stdout),
                                     host=a.host, command=cmd.render(masked=True), stderr=res.stderr)
                sha, size = got
            self.known_sha[key] = sha
            out.append(J.ArtifactRecord(a.host, a.path, None if a.secret else sha, size))
        return out

    # -- failure

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
        self.warn("\n".join(lines))


class _Exit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _have_tty() -> bool:
    try:
        with open("/dev/tty", "r+"):
            return True
    except OSError:
        return bool(sys.stdin is not None and sys.stdin.isatty())


def apply_plan(opts: ApplyOptions, **kw) -> int:
    """Run `mdsl apply` with these options; returns the exit status."""
    log.configure(opts.log_format)
    runner = Apply(opts, **kw)
    return runner.run()
