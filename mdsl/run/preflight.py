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

import os
import posixpath
import re
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Tuple, Union

from attrs import define, field, frozen

from mdsl.check.resolve import BoundPlan, Host, Postgres, Service
from mdsl.compile.actions import Location
from mdsl.compile.context import CompileContext, option_value
from mdsl.compile.parts import Arg, Command, Lit, sh
from mdsl.compile.postgres import RESTORE_PART_FACTOR, RestorePart, conninfo, libpq_quote, tool_command
from mdsl.findings import Finding, Severity
from mdsl.run.backend import Backend, BackendError, CommandTimeout, Result
from mdsl.run.console import human_bytes
from mdsl.run.executor import Executor  # the same secret-file and sudo handling as the steps
from mdsl.run.secrets import SecretStore
from mdsl.syntax import ast as A

MARGIN = 1.2  # free space must exceed the estimate times this...
SLACK = 64 << 20  # ...plus this
CHECK_TIMEOUT = 60.0
SIZE_TIMEOUT = 600.0  # `du -sb` of a large tree takes a while
PG_TOOLS = ("pg_dump", "pg_restore", "psql", "createdb", "dropdb", "pg_dumpall")
FILE_LIKE = ("dump", "archive", "transfer", "move")  # the step writes PATH: its parent must be writable

# Where a missing program usually comes from (Debian/Ubuntu package names).
_PACKAGES = {
    "pg_dump": "postgresql-client", "pg_restore": "postgresql-client", "psql": "postgresql-client",
    "createdb": "postgresql-client", "dropdb": "postgresql-client", "pg_dumpall": "postgresql-client",
    "rsync": "rsync", "zstd": "zstd", "gzip": "gzip", "tar": "tar", "sudo": "sudo", "systemctl": "systemd",
    "python3": "python3", "ssh": "openssh-client", "scp": "openssh-client", "tailscale": "tailscale",
    "sha256sum": "coreutils", "du": "coreutils", "stat": "coreutils", "find": "findutils", "xargs": "findutils",
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
    dump_db: Postgres
    dump_step: A.Step
    restore_db: Postgres
    restore_step: A.Step
    plain: bool


@define
class _Needs:
    tools: List[_ToolNeed] = field(factory=list)
    databases: Dict[str, Postgres] = field(factory=dict)
    services: Dict[str, Service] = field(factory=dict)
    dests: List[_Dest] = field(factory=list)
    pairs: List[_RestorePair] = field(factory=list)
    dumps: List[Tuple[Postgres, A.Step]] = field(factory=list)
    origins: Dict[Tuple[str, str], str] = field(factory=dict)  # artifact -> the resource it holds a copy of
    # artifact -> the file it is a copy of, for copies of files the plan did not make (measured there)
    copied_from: Dict[Tuple[str, str], Tuple[str, str]] = field(factory=dict)


def _leaves(compiled) -> List[tuple]:
    """(index of its top-level step, step) for every runnable step; a parallel block's members share the index."""
    tops = compiled.steps if hasattr(compiled, "steps") else compiled
    return [(i, leaf) for i, s in enumerate(tops) for leaf in (s.leaves() if hasattr(s, "leaves") else [s])]


def _pg_word(db: Optional[Postgres], name: str) -> str:
    if db is not None and db.bin and name in PG_TOOLS:
        return db.bin.rstrip("/") + "/" + name
    return name


def _needs(bound: BoundPlan, leaves) -> _Needs:
    n = _Needs()
    res = bound.resources

    def key(t: A.Target) -> Tuple[str, str]:
        p = bound.place(t)
        return p.host, p.path

    dumped_by: Dict[Tuple[str, str], Tuple[Postgres, A.Step]] = {}
    for order, leaf in leaves:
        step = leaf.step
        db = res.get(step.db.name) if isinstance(step, (A.Dump, A.Restore, A.Drop)) else None
        pg = db if isinstance(db, Postgres) else None
        for host, tools in getattr(leaf, "tools", ()):
            for t in tools:
                word = _pg_word(pg, t) if pg is not None and host == pg.host else t
                n.tools.append(_ToolNeed(host, word, t, step))
        for d in getattr(leaf, "destinations", ()):
            part = isinstance(d, RestorePart)
            n.dests.append(_Dest(d.host, d.path, d.run_as, d.size_of, step, part or leaf.kind in FILE_LIKE,
                                 order, temporary=part, if_zstd=part and d.if_zstd))
        if pg is not None:
            n.databases.setdefault(pg.name, pg)
        if isinstance(step, (A.Stop, A.Start, A.Restart)):
            for s in step.services:
                svc = res.get(s.name)
                if isinstance(svc, Service):
                    n.services.setdefault(svc.name, svc)
        # provenance of artifacts, followed through transfers and renames
        if isinstance(step, A.Dump):
            n.origins[key(step.to)] = step.db.name
            if pg is not None:
                n.dumps.append((pg, step))
                dumped_by[key(step.to)] = (pg, step)
        elif isinstance(step, A.Archive):
            n.origins[key(step.to)] = step.dir.name
        elif isinstance(step, (A.Transfer, A.Move)):
            src, dst = key(step.source), key(step.dest)
            if src in n.origins:
                n.origins[dst] = n.origins[src]
            n.copied_from[dst] = n.copied_from.get(src, src)
            if src in dumped_by:
                dumped_by[dst] = dumped_by[src]
        elif isinstance(step, A.Restore) and pg is not None:
            src = dumped_by.get(key(step.source))
            if src is not None:
                plain = option_value(src[1], "format", "custom") == "plain"
                n.pairs.append(_RestorePair(src[0], src[1], pg, step, plain))
    return n


# ---------------------------------------------------------------- what each host says (I/O, one thread per host)


@frozen
class _DbProbe:
    ok: bool
    server_version: Optional[int] = None  # server_version_num, e.g. 150005
    size: Optional[int] = None
    error: str = ""
    help: str = ""
    skipped: bool = False  # psql itself is missing: P402 says so


@define
class _HostFacts:
    reachable: bool = False
    missing: Dict[str, None] = field(factory=dict)  # words not found
    versions: Dict[str, Optional[Tuple[int, int]]] = field(factory=dict)
    dbs: Dict[str, _DbProbe] = field(factory=dict)
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
                if word in PG_TOOLS:
                    help += ", or set `bin` on the database to the directory holding it"
                elif word == "zstd" and any(isinstance(t.step, (A.Dump, A.Restore)) for t in needs):
                    # a custom dump is zstd-compressed by default; pg_dump's own gzip needs no zstd
                    help += ", or write `compress = gzip` on the dump (pg_dump's own compression)"
            notes = [f"also needed by {others} later step(s)"] if others > 0 else []
            self.facts.findings.append(_finding("P402", msg, first.step.span, help, notes,
                                                label=f"needs {first.name} on {self.name}"))

    # -- P403: client versions

    def versions(self) -> None:
        want = []
        for p in self.pf.needs.pairs:
            if p.dump_db.host == self.name:
                want.append(_pg_word(p.dump_db, "pg_dump"))
            if p.restore_db.host == self.name and not p.plain:
                want.append(_pg_word(p.restore_db, "pg_restore"))
        for db, _ in self.pf.needs.dumps:
            if db.host == self.name:
                want.append(_pg_word(db, "pg_dump"))
        for word in dict.fromkeys(want):
            if word in self.facts.missing:
                continue
            try:
                r = self.run(self.cmd(sh(Arg(word), "--version")))
            except _Unavailable:
                continue
            self.facts.versions[word] = parse_pg_version(r.stdout) if r.ok else None

    # -- P406 (and the server version for P403, the database size for P404)

    def databases(self) -> None:
        for db in self.pf.needs.databases.values():
            if db.host != self.name:
                continue
            if _pg_word(db, "psql") in self.facts.missing:
                self.facts.dbs[db.name] = _DbProbe(False, skipped=True)
                continue
            probe = self._probe(db, db.database)
            if not probe.ok and not probe.skipped and _db_missing(probe.error, db.database):
                # A restore creates a missing database: the auth holds if the server's own database answers.
                maint = self._probe(db, "postgres")
                if maint.ok:
                    probe = _DbProbe(True, maint.server_version, 0)
            self.facts.dbs[db.name] = probe
            if not probe.ok and not probe.skipped:
                self.facts.findings.append(_finding(
                    "P406", f"database `{db.name}` does not accept the declared auth: {probe.error}",
                    db.span, probe.help, [f"tried: {_auth_text(db)}"], label="cannot log in"))

    def _probe(self, db: Postgres, database: str) -> _DbProbe:
        sql = "select current_setting('server_version_num'), pg_database_size(current_database())"
        info = conninfo(db, database) + " connect_timeout=" + libpq_quote("10")
        parts = (Lit(Arg(_pg_word(db, "psql")).render()), Lit("-X -w -q -A -t -F '|'"), Arg(info, "--dbname="),
                 Arg(sql, "--command="))
        cmd = tool_command(self.pf.ctx, db, parts, ("psql",))
        try:
            r = self.run(cmd)
        except KeyError as e:  # the password's env var / file is missing on this machine
            return _DbProbe(False, error=f"cannot read {_password_text(db)}: {e.args[0]}",
                            help="set the variable (or create the file) before running apply")
        except _Unavailable as e:
            return _DbProbe(False, error=str(e), help="is the server reachable from the host?")
        except BackendError as e:
            if not self.b_alive():
                raise
            return _DbProbe(False, error=e.message, help=e.hint or "")
        if r.exit == 127:
            return _DbProbe(False, skipped=True)
        if r.ok:
            m = re.search(r"^(\d+)\|(\d+)$", r.stdout.strip(), re.M)
            if m:
                return _DbProbe(True, int(m.group(1)), int(m.group(2)))
        # psql run as another user warns about the login user's cwd: noise, not the answer
        lines = [x for x in r.stderr.splitlines() if "could not change directory to" not in x]
        err = " ".join(" ".join(lines).split()) or r.stdout.strip() or f"psql exited with {r.exit}"
        return _DbProbe(False, error=_redact(err), help=_auth_help(err, db))

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
        if r.kind == "postgres":
            return "postgres", r.name, r.host, ""
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

        for db, step in self.needs.dumps:
            v = ver(db.host, _pg_word(db, "pg_dump"))
            probe = facts.get(db.host) and facts[db.host].dbs.get(db.name)
            if v and probe and probe.ok and probe.server_version and v[0] < probe.server_version // 10000:
                out.append(_finding(
                    "P403", f"pg_dump on `{db.host}` is version {_v(v)}, older than the server of `{db.name}` "
                    f"({_server(probe.server_version)}): pg_dump refuses to dump a newer server", step.span,
                    f"install pg_dump {probe.server_version // 10000} or newer on `{db.host}` (or set `bin` "
                    "on the database)", label="pg_dump too old"))
        for p in self.needs.pairs:
            key = (p.dump_db.name, p.restore_db.name, id(p.restore_step))
            if key in seen:
                continue
            seen.add(key)
            dv = ver(p.dump_db.host, _pg_word(p.dump_db, "pg_dump"))
            rv = ver(p.restore_db.host, _pg_word(p.restore_db, "pg_restore"))
            if not p.plain and dv and rv and rv[0] < dv[0]:
                out.append(_finding(
                    "P403", f"pg_restore on `{p.restore_db.host}` ({_v(rv)}) is older than the pg_dump on "
                    f"`{p.dump_db.host}` ({_v(dv)}) that writes the dump: it cannot read the archive",
                    p.restore_step.span, f"install pg_restore {dv[0]} or newer on `{p.restore_db.host}`, or dump "
                    f"with a pg_dump {rv[0]} (`bin` on `{p.dump_db.name}`)", label="pg_restore too old"))
            src = facts.get(p.dump_db.host) and facts[p.dump_db.host].dbs.get(p.dump_db.name)
            dst = facts.get(p.restore_db.host) and facts[p.restore_db.host].dbs.get(p.restore_db.name)
            if (src and dst and src.ok and dst.ok and src.server_version and dst.server_version
                    and dst.server_version // 10000 < src.server_version // 10000):
                out.append(_finding(
                    "P403", f"the server of `{p.restore_db.name}` ({_server(dst.server_version)}) is older than "
                    f"the server of `{p.dump_db.name}` ({_server(src.server_version)}): restoring into an older "
                    "server is not supported", p.restore_step.span,
                    f"upgrade the target server to {src.server_version // 10000} or newer before the move",
                    label="target server older"))
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
            notes = [f"`{d.path}` ({human_bytes(n)}, from `{d.step.keyword}` at line {d.step.span.line}"
                     + (", removed when that step ends" if d.temporary else "") + ")" for _, d, n in peak]
            more = []
            if at is not None:
                more.append(f"the most at once: while the step at line {at.step.span.line} runs (a restore's "
                            f"decompressed dump counts {RESTORE_PART_FACTOR:g}x a compressed dump found on the "
                            "host, or the database's size for a dump the plan makes)")
            out.append(_finding(
                "P404", f"not enough free space on `{host}` for `{first.path}`: {human_bytes(avail)} free on "
                f"{mount}, about {human_bytes(need)} needed "
                f"({human_bytes(total)} estimated x{MARGIN:g} + {human_bytes(SLACK)})",
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
        if kind == "postgres":
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
        secrets = SecretStore(base_dir=os.path.dirname(os.path.abspath(bound.plan.path)))
    return _Preflight(bound, compiled, backends, secrets, timeout, journal).run()


# ---------------------------------------------------------------- small helpers


def _total(items) -> int:
    """The bytes of (index, destination, bytes) items."""
    return sum(n for _, _, n in items)


def parse_pg_version(text: str) -> Optional[Tuple[int, int]]:
    """(major, minor) from `pg_dump (PostgreSQL) 15.5 (Debian ...)`; 9.6.24 -> (9, 6)."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", text) or re.search(r"(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def _v(v: Tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def _server(num: int) -> str:
    return f"{num // 10000}.{num % 100}" if num >= 100000 else f"{num // 10000}.{num // 100 % 100}"


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


def _db_missing(err: str, database: str) -> bool:
    return f'database "{database}" does not exist' in err


def _password_text(db: Postgres) -> str:
    return db.password.masked() if isinstance(db.password, A.Secret) else "the password"


def _auth_text(db: Postgres) -> str:
    how = []
    if db.tcp_host:
        how.append(f"tcp {db.tcp_host}:{db.tcp_port}")
    elif db.socket:
        how.append(f"socket {db.socket}")
    else:
        how.append("the default socket")
    how.append(f"user {db.user}" if db.user else "user = the OS user")
    if db.password is not None:
        how.append(f"password {_password_text(db)}")
    if db.run_as:
        how.append(f"run as OS user {db.run_as}")
    return ", ".join(how)


def _redact(err: str) -> str:
    # psql never echoes the password, but the temp file's path is noise
    return re.sub(r"/\S*mdsl-secret\.\w+", "<PGPASSFILE>", err)


def _auth_help(err: str, db: Postgres) -> str:
    e = err.lower()
    if "password authentication failed" in e:
        return f"check the password in {_password_text(db)} for role `{db.user}`"
    if "no password supplied" in e:
        return "the server asks for a password: declare `password = env(\"...\")` on the database"
    if "peer authentication failed" in e:
        return "peer auth needs `run_as` = the OS user named like the role (or a `user` matching `run_as`)"
    if "no pg_hba.conf entry" in e:
        return "allow this connection in the server's pg_hba.conf, or connect another way (`socket`, `run_as`)"
    if "role" in e and "does not exist" in e:
        return "create the role on the server, or fix `user`"
    if "does not exist" in e and "database" in e:
        return "fix `database`, or create it"
    if "connection refused" in e or "no such file or directory" in e or "could not connect" in e:
        return "is the server running there? check `tcp`/`socket` on the database"
    if "timeout" in e:
        return "the server did not answer: check `tcp` and any firewall"
    if "sudo" in e or "unknown user" in e:
        return "`run_as` needs that OS user to exist and sudo to let the login user become it"
    return "check the database's `user`, `password`, `tcp`/`socket` and `run_as`"
