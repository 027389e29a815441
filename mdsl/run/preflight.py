"""Preflight (P401-P407): read-only checks on every host, in parallel, before the first step.

What the plan needs is derived without I/O from the compiled steps (tools,
destinations) and the AST (which dump a restore reads, which services and
databases steps touch). Then one thread per host connects and asks its
questions (`command -v`, `--version`, a `select` over the declared auth,
`df -P`, `du -sb`, `test -w`, `systemctl cat`); the answers are compared
across hosts last (P403 versions, P404 sizes). Nothing on a host changes: the
only file written is the 0600 PGPASSFILE a password check needs, removed
right after (the same path `apply` takes, through its `Executor`).
"""

from __future__ import annotations

import posixpath
import re
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Tuple, Union

from attrs import define, field, frozen

from mdsl.model import BoundPlan, Database, Host, Service
from mdsl.compile.actions import Location
from mdsl.compile.context import CompileContext, option_value
from mdsl.compile.parts import Arg, Command, Lit, sh
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.postgres.commands import RESTORE_PART_FACTOR, RestorePart
from mdsl.stores.registry import all_probes, probes_of
from mdsl.findings import Finding, Severity
from mdsl.run.backend import Backend, BackendError, CommandTimeout, Result
from mdsl.syntax import ast as A

MARGIN = 1.2  # free space must exceed the estimate times this...
SLACK = 64 << 20  # ...plus this
CHECK_TIMEOUT = 60.0
SIZE_TIMEOUT = 600.0  # `du -sb` of a large tree takes a while
FILE_LIKE = ("dump", "archive", "transfer", "move")  # the step writes PATH: its parent must be writable

# Where a missing program usually comes from (Debian/Ubuntu package names).
_PACKAGES = {
    "rsync": "rsync", "zstd": "zstd", "gzip": "gzip", "tar": "tar", "sudo": "sudo", "systemctl": "systemd",
    "python3": "python3", "ssh": "openssh-client", "scp": "openssh-client", "tailscale": "tailscale",
    "sha256sum": "coreutils", "du": "coreutils", "stat": "coreutils", "find": "findutils", "xargs": "findutils",
    **{program: package for probes in all_probes() for program, package in probes.PACKAGES.items()},
}


# ---------------------------------------------------------------- what the plan needs (no I/O)


@frozen
class _ToolNeed:
    host: str
    word: str  # what is looked up: a name on PATH, or `BIN/name` for a database with `bin`
    name: str
    step: A.Step


@frozen
class _Dest:
    host: str
    path: str
    run_as: Optional[str]
    size_of: Optional[Union[str, Location]]
    step: A.Step
    file_like: bool
    order: int = 0  # the plan's top-level step it belongs to (a parallel block's members share one)
    temporary: bool = False  # removed when its step ends (a restore's decompressed dump): counts at the peak
    if_zstd: bool = False  # written only if the file at size_of turns out to be a zstd dump


@frozen
class _RestorePair:
    dump_db: Database
    dump_step: A.Step
    restore_db: Database
    restore_step: A.Step
    plain: bool


@define
class _Needs:
    tools: List[_ToolNeed] = field(factory=list)
    databases: Dict[str, Database] = field(factory=dict)
    dumped: Dict[str, None] = field(factory=dict)  # databases a step reads before any step writes them: must exist
    written: Dict[str, None] = field(factory=dict)  # data some `run ... writes`/`restore` fills (may not exist yet)
    services: Dict[str, Service] = field(factory=dict)
    dests: List[_Dest] = field(factory=list)
    pairs: List[_RestorePair] = field(factory=list)
    dumps: List[Tuple[Database, A.Step]] = field(factory=list)
    origins: Dict[Tuple[str, str], str] = field(factory=dict)  # artifact -> the resource it holds a copy of
    # artifact -> the file it is a copy of, for copies of files the plan did not make (measured there)
    copied_from: Dict[Tuple[str, str], Tuple[str, str]] = field(factory=dict)


def _leaves(compiled) -> List[tuple]:
    """(index of its top-level step, step) for every runnable step; a parallel block's members share the index."""
    tops = compiled.steps if hasattr(compiled, "steps") else compiled
    return [(i, leaf) for i, s in enumerate(tops) for leaf in (s.leaves() if hasattr(s, "leaves") else [s])]


def _needs(bound: BoundPlan, leaves) -> _Needs:
    n = _Needs()
    res = bound.resources

    def key(t: A.Target) -> Tuple[str, str]:
        p = bound.place(t)
        return p.host, p.path

    dumped_by: Dict[Tuple[str, str], Tuple[Database, A.Step]] = {}
    for order, leaf in leaves:
        step = leaf.step
        db = res.get(step.db.name) if isinstance(step, (A.Dump, A.Restore, A.Drop)) else None
        for host, tools in getattr(leaf, "tools", ()):
            for t in tools:
                word = probes_of(db).tool_word(db, t) if db is not None and host == db.host else t
                n.tools.append(_ToolNeed(host, word, t, step))
        for d in getattr(leaf, "destinations", ()):
            part = isinstance(d, RestorePart)
            n.dests.append(_Dest(d.host, d.path, d.run_as, d.size_of, step, part or leaf.kind in FILE_LIKE,
                                 order, temporary=part, if_zstd=part and d.if_zstd))
        if db is not None:
            n.databases.setdefault(db.name, db)
        if isinstance(step, (A.Stop, A.Start, A.Restart)):
            for s in step.services:
                svc = res.get(s.name)
                if isinstance(svc, Service):
                    n.services.setdefault(svc.name, svc)
        # provenance of artifacts, followed through transfers and renames
        if isinstance(step, A.Dump):
            n.origins[key(step.to)] = step.db.name
            if db.name not in n.written:
                n.dumped[db.name] = None
            n.dumps.append((db, step))
            dumped_by[key(step.to)] = (db, step)
        elif isinstance(step, A.Archive):
            n.origins[key(step.to)] = step.dir.name
        elif isinstance(step, (A.Transfer, A.Move)):
            src, dst = key(step.source), key(step.dest)
            if src in n.origins:
                n.origins[dst] = n.origins[src]
            n.copied_from[dst] = n.copied_from.get(src, src)
            if src in dumped_by:
                dumped_by[dst] = dumped_by[src]
        elif isinstance(step, A.Run):
            n.written.update(dict.fromkeys(option_value(step, "writes", ()) + option_value(step, "deletes", ())))
        elif isinstance(step, A.Restore):
            n.written[db.name] = None
            src = dumped_by.get(key(step.source))
            if src is not None and src[0].kind == db.kind:
                plain = option_value(src[1], "format", "custom") == "plain"
                n.pairs.append(_RestorePair(src[0], src[1], db, step, plain))
    return n


# ---------------------------------------------------------------- what each host says (I/O, one thread per host)


@define
class _HostFacts:
    reachable: bool = False
    missing: Dict[str, None] = field(factory=dict)  # words not found
    versions: Dict[str, Optional[Tuple[int, int]]] = field(factory=dict)
    dbs: Dict[str, DatabaseProbe] = field(factory=dict)
    sizes: Dict[str, Optional[int]] = field(factory=dict)  # resource name or "@path" -> bytes
    space: Dict[int, Tuple[int, str]] = field(factory=dict)  # dest index -> (free bytes, mount point)
    findings: List[Finding] = field(factory=list)


def _finding(code: str, message: str, span: A.Span, help: Optional[str], notes: Iterable[str] = (),
             label: str = "") -> Finding:
    return Finding(code, Severity.ERROR, message, span, label=label, notes=tuple(notes), help=help)


class _Unavailable(Exception):
    """A check could not be made (timeout); carries the reason."""


class _HostChecks:
    """The questions asked of one host."""

    def __init__(self, pf: "_Preflight", host: Host, backend: Backend):
        self.pf, self.host, self.b = pf, host, backend
        self.facts = _HostFacts()
        self.name = host.name

    def cmd(self, parts, run_as: Optional[str] = None) -> Command:
        return self.pf.ctx.command(self.name, parts, run_as=run_as)

    def run(self, cmd: Command, timeout: float = CHECK_TIMEOUT) -> Result:
        try:
            return self.pf.executor.run(cmd, timeout=timeout)
        except CommandTimeout as e:
            raise _Unavailable(e.message) from None

    def go(self) -> _HostFacts:
        try:
            self.b.connect()
        except BackendError as e:
            self.facts.findings.append(_finding(
                "P401", f"cannot use host `{self.name}` ({self._where()}): {e.message}", self.host.span,
                e.hint or "check the host's `ssh`, `port`, `identity` and `known_hosts`", label="unreachable"))
            return self.facts
        self.facts.reachable = True
        checks = (("P402", self.tools), ("P403", self.versions), ("P406", self.databases), ("P404", self.sizes),
                  ("P407", self.destinations), ("P405", self.services))
        try:
            for code, check in checks:
                try:
                    check()
                except _Unavailable as e:
                    self.facts.findings.append(_finding(
                        code, f"a check on `{self.name}` did not finish: {e}", self.host.span,
                        "the host answers too slowly; retry, or look at what hangs there"))
        except BackendError as e:
            self.facts.findings.append(_finding(
                "P401", f"lost host `{self.name}` during preflight: {e.message}", self.host.span, e.hint,
                label="connection lost"))
        except KeyError as e:  # the host's sudo_password cannot be read
            self.facts.findings.append(_finding(
                "P401", f"cannot use host `{self.name}`: {e.args[0]}", self.host.span,
                "set the variable (or create the file) named by `sudo_password` before running apply"))
        return self.facts

    def _where(self) -> str:
        if self.host.local:
            return "this machine"
        return f"{self.host.login}:{self.host.port}"

    # -- P402

    def tools(self) -> None:
        words = list(dict.fromkeys(t.word for t in self.pf.needs.tools if t.host == self.name))
        if not words:
            return
        parts: list = []
        for w in words:
            if "/" in w:
                parts += sh("[ -x", Arg(w), "] || printf '%s\\n'", Arg(w), ";")
            else:
                parts += sh("command -v", Arg(w), ">/dev/null 2>&1 || printf '%s\\n'", Arg(w), ";")
        parts += sh("true")
        try:
            r = self.run(self.cmd(parts))
        except _Unavailable as e:
            self.facts.findings.append(_finding("P402", f"cannot list the programs on `{self.name}`: {e}",
                                                self.host.span, None))
            return
        if not r.ok:
            self.facts.findings.append(_finding(
                "P402", f"cannot look for programs on `{self.name}`: {_first_line(r.stderr) or f'exit {r.exit}'}",
                self.host.span, "check that the login user may run commands there (and sudo, if declared)"))
            return
        missing = [line for line in r.stdout.splitlines() if line in words]
        self.facts.missing.update(dict.fromkeys(missing))
        for word in missing:
            needs = [t for t in self.pf.needs.tools if t.host == self.name and t.word == word]
            first = needs[0]
            others = len({id(t.step) for t in needs}) - 1
            if "/" in word:
                msg = f"`{word}` does not exist or is not executable on `{self.name}`"
                help = f"fix `bin` of the database (the directory holding {first.name}), or install it"
            else:
                msg = f"`{word}` is not installed on `{self.name}` (not found on its PATH)"
                pkg = _PACKAGES.get(word)
                help = f"install it (Debian/Ubuntu: `apt install {pkg}`)" if pkg else "install it"
                store_help = next((probes.TOOL_HELP for probes in all_probes() if word in probes.CLIENTS), "")
                if store_help:
                    help += ", or " + store_help
                elif word == "zstd" and any(isinstance(t.step, (A.Dump, A.Restore)) for t in needs):
                    # a custom dump is zstd-compressed by default; pg_dump's own gzip needs no zstd
                    help += ", or write `compress = gzip` on the dump (pg_dump's own compression)"
            notes = [f"also needed by {others} later step(s)"] if others > 0 else []
            self.facts.findings.append(_finding("P402", msg, first.step.span, help, notes,
                                                label=f"needs {first.name} on {self.name}"))

    # -- P403: client versions

    def versions(self) -> None:
        want: Dict[str, object] = {}  # program -> the probes module that reads its `--version`

        def ask(db: Database, dumps: bool, restores_archive: bool) -> None:
            if db.host == self.name:
                probes = probes_of(db)
                for word in probes.version_words(db, dumps, restores_archive):
                    want.setdefault(word, probes)

        for p in self.pf.needs.pairs:
            ask(p.dump_db, True, False)
            ask(p.restore_db, False, not p.plain)
        for db, _ in self.pf.needs.dumps:
            ask(db, True, False)
        for word, probes in want.items():
            if word in self.facts.missing:
                continue
            try:
                r = self.run(self.cmd(sh(Arg(word), "--version")))
            except _Unavailable:
                continue
            self.facts.versions[word] = probes.parse_version(r.stdout) if r.ok else None

    # -- P406 (and the server version for P403, the database size for P404)

    def databases(self) -> None:
        for db in self.pf.needs.databases.values():
            if db.host != self.name:
                continue
            probes = probes_of(db)
            probe = self._probe(db)
            self.facts.dbs[db.name] = probe
            if probe.ok or probe.skipped or (probe.missing and db.name not in self.pf.needs.dumped):
                continue  # a restore creates a missing database; the login worked
            if probe.missing:
                message = f"database `{db.name}` is read by the plan but does not exist: {probe.error}"
                label = "no such database"
            else:
                message = f"database `{db.name}` does not accept the declared auth: {probe.error}"
                label = "cannot log in"
            self.facts.findings.append(_finding("P406", message, db.span, probe.help,
                                                [f"tried: {probes.auth_text(db)}"], label=label))

    def _probe(self, db: Database) -> DatabaseProbe:
        try:
            return probes_of(db).probe(self.pf.ctx, self.run, db)
        except KeyError as e:  # the password's env var / file is missing on this machine
            return DatabaseProbe(False, error=f"cannot read {db.password.masked()}: {e.args[0]}",
                                 help="set the variable (or create the file) before running apply")
        except _Unavailable as e:
            return DatabaseProbe(False, error=str(e), help="is the server reachable from the host?")
        except BackendError as e:
            if not self.b_alive():
                raise
            return DatabaseProbe(False, error=e.message, help=e.hint or "")

    def b_alive(self) -> bool:
        try:
            return self.b.run("true", timeout=CHECK_TIMEOUT).ok
        except BackendError:
            return False

    # -- P404: sizes of what will be copied, and free space where it lands

    def sizes(self) -> None:
        wanted: Dict[str, Tuple[str, str]] = {}  # key -> (kind, path) (for dirs and files on this host)
        for d in self.pf.needs.dests:
            src = self.pf.size_source(d)
            if src is None:
                continue
            kind, key, host, path = src
            if host == self.name and kind in ("dir", "file", "zstd"):
                wanted[key] = (kind, path)
        for key, (kind, path) in wanted.items():
            p = Arg(path)
            if kind == "zstd":
                # As the restore decides when it runs: a directory or pg_dump's archive is read in place.
                probe = sh("if [ -d", p, "]; then echo 0; elif [ -e", p, "]; then if [ \"$(head -c 5 <", p,
                           "| tr -cd A-Z)\" = PGDMP ]; then echo 0; else stat -L -c %s --", p, "; fi; fi")
            else:
                probe = sh("if [ -d", p, "]; then du -sb --", p, "| cut -f1; elif [ -e", p,
                           "]; then stat -L -c %s --", p, "; fi")
            try:
                r = self.run(self.cmd(probe), timeout=SIZE_TIMEOUT)
            except _Unavailable:
                self.facts.sizes[key] = None
                continue
            out = r.stdout.strip().splitlines()
            # du prints its total even when it could not read some subdirectory (and exits 1)
            self.facts.sizes[key] = int(out[-1]) if out and out[-1].isdigit() else None

    def destinations(self) -> None:
        mine = [(i, d) for i, d in enumerate(self.pf.needs.dests) if d.host == self.name]
        if not mine:
            return
        # a dump made outside the plan that is not zstd is restored in place: nothing is written beside it
        mine = [(i, d) for i, d in mine if not (d.if_zstd and self._sized(d) == 0)]
        # free space: as the connecting user (df needs no rights on the path)
        parts: list = []
        for i, d in mine:
            parts += sh("p=" + Arg(d.path).render() + ";",
                        'while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done;',
                        f"printf '{i} ';", 'df -Pk -- "$p" | tail -n 1;')
        parts += sh("true")
        try:
            r = self.run(self.cmd(parts))
            for line in r.stdout.splitlines():
                f = line.split()
                if len(f) >= 7 and f[0].isdigit() and f[4].isdigit():
                    self.facts.space[int(f[0])] = (int(f[4]) * 1024, " ".join(f[6:]))
        except _Unavailable:
            pass
        # P407: writable by the user that writes it
        by_user: Dict[Optional[str], List[Tuple[int, _Dest]]] = {}
        for i, d in mine:
            by_user.setdefault(d.run_as, []).append((i, d))
        for user, ds in by_user.items():
            parts = []
            for i, d in ds:
                start = (posixpath.dirname(d.path.rstrip("/")) or "/") if d.file_like else d.path
                parts += sh("p=" + Arg(start).render() + ";",
                            'while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done;',
                            f'if [ ! -d "$p" ]; then printf \'{i} notdir %s\\n\' "$p";',
                            f'elif [ ! -w "$p" ] || [ ! -x "$p" ]; then printf \'{i} denied %s\\n\' "$p"; fi;')
            parts += sh("id -un")
            try:
                r = self.run(self.cmd(parts, run_as=user))
            except _Unavailable as e:
                for i, d in ds:
                    self.facts.findings.append(_finding("P407", f"cannot check that `{d.path}` on `{self.name}` "
                                                        f"is writable: {e}", d.step.span, None))
                continue
            lines = r.stdout.splitlines()
            who = lines[-1] if r.ok and lines else (user or self.host.user or "the login user")
            if not r.ok and not lines:
                for i, d in ds:
                    self.facts.findings.append(_finding(
                        "P407", f"cannot check as {who} that `{d.path}` on `{self.name}` is writable: "
                        f"{_first_line(r.stderr) or f'exit {r.exit}'}", d.step.span,
                        "check that this user exists and that sudo lets the login user become it"))
                continue
            seen = set()
            for line in lines:
                m = re.match(r"^(\d+) (notdir|denied) (.*)$", line)
                if not m or int(m.group(1)) in seen:
                    continue
                i = int(m.group(1))
                seen.add(i)
                d = self.pf.needs.dests[i]
                where = m.group(3)
                if m.group(2) == "notdir":
                    msg = f"`{d.path}` on `{self.name}` cannot be created: `{where}` is not a directory"
                    help = "choose another path, or move that file away"
                else:
                    msg = (f"`{d.path}` on `{self.name}` is not writable by {who}: `{where}` denies it "
                           "(permissions, or a read-only file system)")
                    help = (f"make `{where}` writable by {who} (chown/chmod, or remount read-write), "
                            "or write somewhere else")
                self.facts.findings.append(_finding("P407", msg, d.step.span, help, label=f"written by {who}"))

    def _sized(self, d: _Dest) -> Optional[int]:
        """What sizes() measured for `d` on this host (None when it is measured elsewhere, or not at all)."""
        src = self.pf.size_source(d)
        return self.facts.sizes.get(src[1]) if src is not None and src[2] == self.name else None

    # -- P405

    def services(self) -> None:
        for svc in self.pf.needs.services.values():
            if svc.host != self.name:
                continue
            if svc.systemd:
                if "systemctl" in self.facts.missing:
                    continue
                for unit in svc.systemd:
                    r = self.run(self.cmd(sh("systemctl cat --", Arg(unit), ">/dev/null")))
                    if r.ok:
                        continue
                    err = " ".join(r.stderr.split())
                    if "booted with systemd" in err or "connect to bus" in err or "Failed to connect" in err:
                        self.facts.findings.append(_finding(
                            "P405", f"systemd is not running on `{self.name}`, so `{unit}` of service "
                            f"`{svc.name}` cannot be stopped or started: {err}", svc.span,
                            "run on a host booted with systemd, or declare the service with "
                            "`start`/`stop`/`status` commands", label="no systemd"))
                        break
                    self.facts.findings.append(_finding(
                        "P405", f"systemd unit `{unit}` of service `{svc.name}` does not exist on `{self.name}`"
                        + (f": {err}" if err else ""), svc.span,
                        f"check the unit's name (`systemctl list-units --all | grep {unit.split('.')[0]}` on the "
                        "host); a unit name without a suffix means `.service`", label="unknown unit"))
                continue
            for what, text in (("start", svc.start), ("stop", svc.stop)):
                prog = _program(text)
                if prog is None:
                    continue
                probe = sh("[ -x", Arg(prog), "]") if "/" in prog else sh("command -v", Arg(prog), ">/dev/null")
                r = self.run(self.cmd(probe))
                if not r.ok:
                    self.facts.findings.append(_finding(
                        "P405", f"the {what} command of service `{svc.name}` cannot run on `{self.name}`: "
                        f"`{prog}` not found", svc.span, f"fix `{what}` of the service, or install `{prog}`",
                        label=f"{what} command missing"))
            if svc.status:
                try:
                    r = self.run(self.cmd((Lit(svc.status),)))
                except _Unavailable as e:
                    self.facts.findings.append(_finding(
                        "P405", f"the status command of service `{svc.name}` on `{self.name}` did not finish: {e}",
                        svc.span, "a status command must answer quickly (exit 0 running, non-zero stopped)"))
                    continue
                if r.exit in (126, 127):
                    self.facts.findings.append(_finding(
                        "P405", f"the status command of service `{svc.name}` cannot run on `{self.name}`: "
                        f"{_first_line(r.stderr) or f'exit {r.exit}'}", svc.span,
                        "fix `status` of the service (it runs with `sh -c`; exit 0 means running)",
                        label="status command missing"))


# ---------------------------------------------------------------- the whole preflight


class _Preflight:
    def __init__(self, bound: BoundPlan, compiled, backends: Dict[str, Backend], secrets, timeout: float,
                 journal=None):
        from mdsl.run.apply import Executor  # the same secret-file and sudo handling as the steps

        self.bound = bound
        self.ctx = CompileContext(bound)
        self.needs = _needs(bound, _leaves(compiled))
        self.backends = backends
        self.executor = Executor(backends, secrets)
        self.executor.journal = journal  # records the paths of the 0600 files the checks make (LazyJournal)
        self.timeout = timeout

    def size_source(self, d: _Dest) -> Optional[Tuple[str, str, str, str]]:
        """(kind, key, host, path) of what decides how much lands at `d`.

        kind "zstd": the file's size if it is a zstd dump, else 0 (a restore's decompressed copy of a
        dump made outside the plan: the step looks at the file when it runs, and so does preflight).
        """
        name = d.size_of
        if isinstance(name, Location):
            name = self.needs.origins.get((name.host, name.path))
            if name is None:  # an artifact that exists before the plan runs (or a copy of one): measure it
                host, path = self.needs.copied_from.get((d.size_of.host, d.size_of.path),
                                                        (d.size_of.host, d.size_of.path))
                if d.if_zstd:
                    return "zstd", f"@zstd@{host}:{path}", host, path
                return "file", f"@{host}:{path}", host, path
        if not name:
            return None
        r = self.bound.resources.get(name)
        if r is None:
            return None
        if r.is_database:
            return "database", r.name, r.host, ""
        return ("dir" if r.kind == "dir" else "file"), r.name, r.host, r.path

    def run(self) -> List[Finding]:
        hosts = [h for h in self.bound.hosts.values() if h.name in self.backends]
        facts: Dict[str, _HostFacts] = {}
        lock = threading.Lock()

        def one(h: Host):
            f = _HostChecks(self, h, self.backends[h.name]).go()
            with lock:
                facts[h.name] = f

        with ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="mdsl-preflight") as pool:
            for fut in [pool.submit(one, h) for h in hosts]:
                fut.result()
        findings: List[Finding] = []
        for h in hosts:
            findings.extend(facts[h.name].findings)
        findings.extend(self.versions(facts))
        findings.extend(self.space(facts))
        findings.sort(key=Finding.sort_key)
        return findings

    # -- P403

    def versions(self, facts: Dict[str, _HostFacts]) -> List[Finding]:
        out: List[Finding] = []
        seen = set()

        def ver(host: str, word: str):
            f = facts.get(host)
            return f.versions.get(word) if f else None

        def probe_of(db: Database) -> Optional[DatabaseProbe]:
            f = facts.get(db.host)
            return f.dbs.get(db.name) if f else None

        for db, step in self.needs.dumps:
            out += probes_of(db).dump_findings(db, step, ver, probe_of)
        for p in self.needs.pairs:
            key = (p.dump_db.name, p.restore_db.name, id(p.restore_step))
            if key not in seen:
                seen.add(key)
                out += probes_of(p.dump_db).pair_findings(p.dump_db, p.restore_db, p.restore_step, p.plain, ver,
                                                          probe_of)
        return out

    # -- P404

    def space(self, facts: Dict[str, _HostFacts]) -> List[Finding]:
        # What lands on one file system and stays there adds up: the plan's artifacts are all kept
        # (a later `delete` or `move` is not counted: a conservative estimate). A temporary file
        # (a restore's decompressed dump, removed when the step ends) adds only while its step runs:
        # what the file system must hold is the peak, everything written up to and during that
        # step (a parallel block's members all at once) plus the block's temporary files, or
        # everything written by the whole plan, whichever is more. Two restores one after the
        # other need room for one decompressed copy, not two.
        groups: Dict[Tuple[str, str], List[Tuple[int, _Dest, int]]] = {}
        free: Dict[Tuple[str, str], int] = {}
        for i, d in enumerate(self.needs.dests):
            f = facts.get(d.host)
            if f is None or not f.reachable or i not in f.space:
                continue
            size = self.estimate(d, facts)
            if size is None or (d.temporary and size == 0):
                continue
            avail, mount = f.space[i]
            groups.setdefault((d.host, mount), []).append((i, d, size))
            free[(d.host, mount)] = avail
        out = []
        for (host, mount), items in groups.items():
            kept = [x for x in items if not x[1].temporary]
            peak, at = kept, None  # at: the temporary file written at the peak, if any
            for order in sorted({d.order for _, d, _ in items if d.temporary}):
                during = [(i, d, n) for i, d, n in items if (d.order == order if d.temporary else d.order <= order)]
                if _total(during) > _total(peak):
                    peak, at = during, next(d for _, d, _ in during if d.temporary)
            total = _total(peak)
            need = int(total * MARGIN) + SLACK
            avail = free[(host, mount)]
            if avail >= need:
                continue
            # Named: where it runs out first, with the kept artifacts already or only with the temporary file.
            first = at if at is not None and avail >= int(_total(kept) * MARGIN) + SLACK else (kept or items)[0][1]
            notes = [f"`{d.path}` ({human(n)}, from `{d.step.keyword}` at line {d.step.span.line}"
                     + (", removed when that step ends" if d.temporary else "") + ")" for _, d, n in peak]
            more = []
            if at is not None:
                more.append(f"the most at once: while the step at line {at.step.span.line} runs (a restore's "
                            f"decompressed dump counts {RESTORE_PART_FACTOR:g}x a compressed dump found on the "
                            "host, or the database's size for a dump the plan makes)")
            out.append(_finding(
                "P404", f"not enough free space on `{host}` for `{first.path}`: {human(avail)} free on "
                f"{mount}, about {human(need)} needed ({human(total)} estimated x{MARGIN:g} + {human(SLACK)})",
                first.step.span, "free space on that file system, or write to one with room (a different path)",
                ["lands there: " + "; ".join(notes)] + more, label="file system too small"))
        return out

    def estimate(self, d: _Dest, facts: Dict[str, _HostFacts]) -> Optional[int]:
        src = self.size_source(d)
        if src is None:
            return None
        kind, key, host, _ = src
        f = facts.get(host)
        if f is None:
            return None
        if kind == "database":
            # A dump the plan makes, estimated by its database's size; for a temporary decompressed
            # copy too (the uncompressed archive stays below the database's size: no indexes).
            probe = f.dbs.get(key)
            return probe.size if probe and probe.ok else None
        size = f.sizes.get(key)
        if size is not None and d.temporary:
            # A compressed dump found on a host, measured: its decompressed copy (see RESTORE_PART_FACTOR).
            size = int(size * RESTORE_PART_FACTOR)
        return size


def run_preflight(bound: BoundPlan, compiled=None, backends: Optional[Dict[str, Backend]] = None, *,
                  secrets=None, timeout: float = CHECK_TIMEOUT, journal=None) -> List[Finding]:
    """P401-P407 for every host in `backends` (connected here if needed), all hosts in parallel; read-only.

    `compiled` is the CompiledPlan (or a list of CompiledSteps); compiled here when None.
    `secrets` has `lookup(A.Secret) -> str` (apply's SecretStore); by default env vars and files
    relative to the plan's directory. `journal` (apply's LazyJournal) records the paths of the 0600
    temp files the database checks make, so a run killed meanwhile leaves none for good.
    """
    if compiled is None:
        from mdsl.compile import compile_plan

        compiled = compile_plan(bound)
    if backends is None:
        backends = {}
    if secrets is None:
        import os

        from mdsl.run.apply import SecretStore

        secrets = SecretStore(base_dir=os.path.dirname(os.path.abspath(bound.plan.path)))
    return _Preflight(bound, compiled, backends, secrets, timeout, journal).run()


# ---------------------------------------------------------------- small helpers


def _total(items) -> int:
    """The bytes of (index, destination, bytes) items."""
    return sum(n for _, _, n in items)


def human(n: int) -> str:
    """Bytes as `12.3 MiB`."""
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _program(command: Optional[str]) -> Optional[str]:
    """The program a simple command line starts with, when that is clear (no shell syntax before it)."""
    if not command:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words:
        return None
    w = words[0]
    if "=" in w or any(c in w for c in "$`;&|(){}<>*?[]~!") or w in ("exec", "env", "sudo", "nohup", "cd"):
        return None
    return w


