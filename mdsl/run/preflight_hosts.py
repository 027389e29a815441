"""The questions preflight asks each host (P401-P407), one thread per host, read-only: `command -v`,
`--version`, a login to each database as declared, `df -P`, `du -sb`, `test -w`, `systemctl cat`."""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Dict, Iterable, List, Optional, Tuple

from attrs import define, field

from mdsl.compile.parts import Arg, Command, Lit, sh
from mdsl.findings import Finding, Severity
from mdsl.model import Database, Host
from mdsl.run.backend import Backend, BackendError, CommandTimeout, Result
from mdsl.check.rules.base import Rule
from mdsl.check.rules.p_preflight import P401, P402, P403, P404, P405, P406, P407, P408, P409, P411, P413
from mdsl.compile.context import CompileContext
from mdsl.run.docker import DockerChecks
from mdsl.run.preflight_needs import DestNeed, Needs
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.registry import all_probes, logins_of, probes_of, replication_of
from mdsl.syntax import ast as A

CHECK_TIMEOUT = 60.0
SIZE_TIMEOUT = 600.0  # `du -sb` of a large tree takes a while

# Where a missing program usually comes from (Debian/Ubuntu package names).
_PACKAGES = {
    "rsync": "rsync", "zstd": "zstd", "gzip": "gzip", "tar": "tar", "sudo": "sudo", "systemctl": "systemd",
    "python3": "python3", "ssh": "openssh-client", "scp": "openssh-client", "tailscale": "tailscale",
    "sha256sum": "coreutils", "du": "coreutils", "stat": "coreutils", "find": "findutils", "xargs": "findutils",
    **{program: package for probes in all_probes() for program, package in probes.PACKAGES.items()},
}


@define
class HostFacts:
    reachable: bool = False
    missing: Dict[str, None] = field(factory=dict)  # words not found
    versions: Dict[str, Optional[Tuple[int, int]]] = field(factory=dict)
    dbs: Dict[str, DatabaseProbe] = field(factory=dict)
    sizes: Dict[str, Optional[int]] = field(factory=dict)  # resource name or "@path" -> bytes
    space: Dict[int, Tuple[int, str]] = field(factory=dict)  # dest index -> (free bytes, mount point)
    # dest index -> bytes of `PATH.part` an interrupted run left: a resumed copy continues it, a fresh one
    # removes it first, so either way that room is the destination's already
    landed: Dict[int, int] = field(factory=dict)
    findings: List[Finding] = field(factory=list)


def preflight_finding(rule: Rule, message: str, span: A.Span, help: Optional[str], notes: Iterable[str] = (),
                      label: str = "") -> Finding:
    """An error of preflight rule `rule`."""
    return rule.finding(message, span, label=label, notes=notes, help=help)


class Unavailable(Exception):
    """A check could not be made (timeout); carries the reason."""


class HostChecks:
    """The questions asked of one host."""

    def __init__(self, needs: Needs, ctx: CompileContext, executor, host: Host, backend: Backend):
        self.needs, self.ctx, self.executor, self.host, self.backend = needs, ctx, executor, host, backend
        self.facts = HostFacts()
        self.name = host.name
        self.docker = DockerChecks(self, needs.docker)

    def cmd(self, parts, run_as: Optional[str] = None) -> Command:
        return self.ctx.command(self.name, parts, run_as=run_as)

    def run(self, cmd: Command, timeout: float = CHECK_TIMEOUT) -> Result:
        try:
            return self.executor.run(cmd, timeout=timeout)
        except CommandTimeout as e:
            raise Unavailable(e.message) from None

    def go(self) -> HostFacts:
        try:
            self.backend.connect()
        except BackendError as e:
            self.facts.findings.append(preflight_finding(
                P401, f"cannot use host `{self.name}` ({self._where()}): {e.message}", self.host.span,
                e.hint or "check the host's `ssh`, `port`, `identity` and `known_hosts`", label="unreachable"))
            return self.facts
        self.facts.reachable = True
        checks = ((P402, self.tools), (P409, self.docker.go), (P403, self.versions), (P406, self.databases),
                  (P404, self.sizes), (P407, self.destinations), (P405, self.services), (P408, self.sources),
                  (P411, self.logins), (P413, self.replications))
        try:
            for code, check in checks:
                try:
                    check()
                except Unavailable as e:
                    self.facts.findings.append(preflight_finding(
                        code, f"a check on `{self.name}` did not finish: {e}", self.host.span,
                        "the host answers too slowly; retry, or look at what hangs there"))
        except BackendError as e:
            self.facts.findings.append(preflight_finding(
                P401, f"lost host `{self.name}` during preflight: {e.message}", self.host.span, e.hint,
                label="connection lost"))
        except KeyError as e:  # the host's sudo_password cannot be read
            self.facts.findings.append(preflight_finding(
                P401, f"cannot use host `{self.name}`: {e.args[0]}", self.host.span,
                "set the variable (or create the file) named by `sudo_password` before running apply"))
        return self.facts

    def _where(self) -> str:
        if self.host.local:
            return "this machine"
        return f"{self.host.login}:{self.host.port}"

    # -- P402

    def tools(self) -> None:
        words = list(dict.fromkeys(t.word for t in self.needs.tools if t.host == self.name))
        if not words:
            return
        parts: list = []
        for w in words:
            if "/" in w:
                parts += sh("[ -x", Arg(w), "] || printf '%s\\n'", Arg(w), ";")
            elif "|" in w:  # alternatives (`mariadb-dump|mysqldump`): one of them is enough
                found = " || ".join("command -v " + Arg(name).render() for name in w.split("|"))
                parts += sh("{", found, "; } >/dev/null 2>&1 || printf '%s\\n'", Arg(w), ";")
            else:
                parts += sh("command -v", Arg(w), ">/dev/null 2>&1 || printf '%s\\n'", Arg(w), ";")
        parts += sh("true")
        try:
            r = self.run(self.cmd(parts))
        except Unavailable as e:
            self.facts.findings.append(preflight_finding(P402, f"cannot list the programs on `{self.name}`: {e}",
                                                self.host.span, None))
            return
        if not r.ok:
            self.facts.findings.append(preflight_finding(
                P402, f"cannot look for programs on `{self.name}`: {_first_line(r.stderr) or f'exit {r.exit}'}",
                self.host.span, "check that the login user may run commands there (and sudo, if declared)"))
            return
        missing = [line for line in r.stdout.splitlines() if line in words]
        self.facts.missing.update(dict.fromkeys(missing))
        for word in missing:
            needs = [t for t in self.needs.tools if t.host == self.name and t.word == word]
            first = needs[0]
            others = len({id(t.step) for t in needs}) - 1
            if "/" in word:
                msg = f"`{word}` does not exist or is not executable on `{self.name}`"
                help = f"fix `bin` of the database (the directory holding {first.name}), or install it"
            else:
                shown = "` or `".join(word.split("|"))
                msg = f"`{shown}` is not installed on `{self.name}` (not found on its PATH)"
                pkg = _PACKAGES.get(word)
                help = f"install it (Debian/Ubuntu: `apt install {pkg}`)" if pkg else "install it"
                store_help = next((probes.TOOL_HELP for probes in all_probes() if word in probes.CLIENTS), "")
                if store_help:
                    help += ", or " + store_help
                elif word == "zstd" and any(isinstance(t.step, (A.Dump, A.Restore)) for t in needs):
                    # a custom dump is zstd-compressed by default; pg_dump's own gzip needs no zstd
                    help += ", or write `compress = gzip` on the dump (pg_dump's own compression)"
            notes = [f"also needed by {others} later step(s)"] if others > 0 else []
            self.facts.findings.append(preflight_finding(P402, msg, first.step.span, help, notes,
                                                label=f"needs {first.name} on {self.name}"))

    # -- P403: client versions

    def versions(self) -> None:
        want: Dict[str, object] = {}  # program -> the probes module that reads its `--version`

        def ask(db: Database, dumps: bool, restores_archive: bool) -> None:
            if db.host == self.name:
                probes = probes_of(db)
                for word in probes.version_words(db, dumps, restores_archive):
                    want.setdefault(word, probes)

        for p in self.needs.pairs:
            ask(p.dump_db, True, False)
            ask(p.restore_db, False, not p.plain)
        for db, _ in self.needs.dumps:
            ask(db, True, False)
        for word, probes in want.items():
            if word in self.facts.missing:
                continue
            try:
                r = self.run(self.cmd(sh(Arg(word), "--version")))
            except Unavailable:
                continue
            self.facts.versions[word] = probes.parse_version(r.stdout) if r.ok else None

    # -- P406 (and the server version for P403, the database size for P404)

    def databases(self) -> None:
        for db in self.needs.databases.values():
            if db.host != self.name:
                continue
            probes = probes_of(db)
            probe = self._probe(db)
            self.facts.dbs[db.name] = probe
            if probe.ok or probe.skipped or (probe.missing and db.name not in self.needs.dumped):
                continue  # a restore creates a missing database; the login worked
            if probe.missing:
                message = f"database `{db.name}` is read by the plan but does not exist: {probe.error}"
                label = "no such database"
            else:
                message = f"database `{db.name}` does not accept the declared auth: {probe.error}"
                label = "cannot log in"
            self.facts.findings.append(preflight_finding(P406, message, db.span, probe.help,
                                                [f"tried: {probes.auth_text(db)}"], label=label))

    # -- P411: the app's own logins work on the target as the app will connect, or the plan makes them

    def logins(self) -> None:
        for login in self.needs.logins:
            if login.host != self.name:
                continue
            db = self.needs.resources[login.database]
            like = self.needs.resources.get(login.like) if login.like else None
            try:
                found = logins_of(db).preflight(self.ctx, self.run, login, db, like)
            except KeyError as e:  # a password's env var / file is missing on this machine
                found = [preflight_finding(
                    P411, f"cannot check the app's login `{login.name}`: {e.args[0]}", login.span,
                    "set the variable (or create the file) before running apply")]
            self.facts.findings.extend(found)

    # -- P413: what a live replication needs of the source's and the target's servers

    def replications(self) -> None:
        for step, src, dst in self.needs.replications:
            for db, side in ((src, "source"), (dst, "target")):
                if db.host != self.name:
                    continue
                try:
                    found = replication_of(db).preflight(self.ctx, self.run, step, src, dst, side)
                except KeyError as e:  # a password's env var / file is missing on this machine
                    found = [preflight_finding(P413, f"cannot check the replication of `{src.name}`: {e.args[0]}",
                                               step.span, "set the variable (or create the file) before running "
                                               "apply")]
                self.facts.findings.extend(found)

    def _probe(self, db: Database) -> DatabaseProbe:
        found = self._login(db)
        if getattr(db, "container", None) and not found.ok:
            # Asked only when the login through `docker exec` failed (one Docker call less when it works).
            why = self.docker.database_reachable(db)
            if why == "":  # not running yet, but an earlier step starts Docker services there
                return DatabaseProbe(False, skipped=True)
            if why is not None:
                return DatabaseProbe(False, error=why, help="start the container first, or start its service "
                                     "in an earlier step; `container` names it as `docker ps` shows it")
        return found

    def _login(self, db: Database) -> DatabaseProbe:
        try:
            return probes_of(db).probe(self.ctx, self.run, db)
        except KeyError as e:  # the password's env var / file is missing on this machine
            return DatabaseProbe(False, error=f"cannot read {db.password.masked()}: {e.args[0]}",
                                 help="set the variable (or create the file) before running apply")
        except Unavailable as e:
            return DatabaseProbe(False, error=str(e), help="is the server reachable from the host?")
        except BackendError as e:
            if not self.b_alive():
                raise
            return DatabaseProbe(False, error=e.message, help=e.hint or "")

    def b_alive(self) -> bool:
        try:
            return self.backend.run("true", timeout=CHECK_TIMEOUT).ok
        except BackendError:
            return False

    # -- P404: sizes of what will be copied, and free space where it lands

    def sizes(self) -> None:
        wanted: Dict[str, Tuple[str, str]] = {}  # key -> (kind, path) (for dirs and files on this host)
        for d in self.needs.dests:
            src = self.needs.size_source(d)
            if src is None:
                continue
            kind, key, host, path = src
            if host == self.name and kind in ("dir", "file", "zstd", "volume"):
                wanted[key] = (kind, path)
        for key, (kind, path) in wanted.items():
            p = Arg(path)
            if kind == "volume":  # `path` is the volume's name: measured at its mountpoint
                probe = sh("p=$(docker volume inspect --format '{{.Mountpoint}}' --", p,
                           ") && du -sb -- \"$p\" | cut -f1")
            elif kind == "zstd":
                # As the restore decides when it runs: a directory or pg_dump's archive is read in place.
                probe = sh("if [ -d", p, "]; then echo 0; elif [ -e", p, "]; then if [ \"$(head -c 5 <", p,
                           "| tr -cd A-Z)\" = PGDMP ]; then echo 0; else stat -L -c %s --", p, "; fi; fi")
            else:
                probe = sh("if [ -d", p, "]; then du -sb --", p, "| cut -f1; elif [ -e", p,
                           "]; then stat -L -c %s --", p, "; fi")
            try:
                r = self.run(self.cmd(probe), timeout=SIZE_TIMEOUT)
            except Unavailable:
                self.facts.sizes[key] = None
                continue
            out = r.stdout.strip().splitlines()
            # du prints its total even when it could not read some subdirectory (and exits 1)
            self.facts.sizes[key] = int(out[-1]) if out and out[-1].isdigit() else None

    def destinations(self) -> None:
        mine = [(i, d) for i, d in enumerate(self.needs.dests) if d.host == self.name]
        if not mine:
            return
        # a dump made outside the plan that is not zstd is restored in place: nothing is written beside it
        mine = [(i, d) for i, d in mine if not (d.if_zstd and self._sized(d) == 0)]
        self._free_space(mine)
        by_user: Dict[Optional[str], List[Tuple[int, DestNeed]]] = {}
        for i, d in mine:
            by_user.setdefault(d.run_as, []).append((i, d))
        for user, ds in by_user.items():
            self._writable(user, ds)

    def _free_space(self, mine: List[Tuple[int, DestNeed]]) -> None:
        """P404's measure: free bytes and mount point where each destination lands (df needs no rights on it),
        and what a `.part` left there by an interrupted run already holds."""
        parts: list = []
        for i, d in mine:
            parts += sh("p=" + Arg(d.path).render() + ";",
                        'while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done;',
                        f"printf '{i} ';", 'df -Pk -- "$p" | tail -n 1;')
            if d.file_like:
                parts += sh("[ -f", Arg(d.path + ".part"), f"] && printf 'part {i} %s\\n'",
                            '"$(stat -c %s --', Arg(d.path + ".part"), ')";')
        parts += sh("true")
        try:
            r = self.run(self.cmd(parts))
        except Unavailable:
            return
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) == 3 and f[0] == "part" and f[1].isdigit() and f[2].isdigit():
                self.facts.landed[int(f[1])] = int(f[2])
            elif len(f) >= 7 and f[0].isdigit() and f[4].isdigit():
                self.facts.space[int(f[0])] = (int(f[4]) * 1024, " ".join(f[6:]))

    def _writable(self, user: Optional[str], ds: List[Tuple[int, DestNeed]]) -> None:
        """P407: each destination can be written by the user that writes it."""
        parts: list = []
        for i, d in ds:
            start = (posixpath.dirname(d.path.rstrip("/")) or "/") if d.file_like else d.path
            parts += sh("p=" + Arg(start).render() + ";",
                        'while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done;',
                        f'if [ ! -d "$p" ]; then printf \'{i} notdir %s\\n\' "$p";',
                        f'elif [ ! -w "$p" ] || [ ! -x "$p" ]; then printf \'{i} denied %s\\n\' "$p"; fi;')
        parts += sh("id -un")
        try:
            r = self.run(self.cmd(parts, run_as=user))
        except Unavailable as e:
            for _, d in ds:
                self.facts.findings.append(preflight_finding(
                    P407, f"cannot check that `{d.path}` on `{self.name}` is writable: {e}", d.step.span, None))
            return
        lines = r.stdout.splitlines()
        who = lines[-1] if r.ok and lines else (user or self.host.user or "the login user")
        if not r.ok and not lines:
            for _, d in ds:
                self.facts.findings.append(preflight_finding(
                    P407, f"cannot check as {who} that `{d.path}` on `{self.name}` is writable: "
                    f"{_first_line(r.stderr) or f'exit {r.exit}'}", d.step.span,
                    "check that this user exists and that sudo lets the login user become it"))
            return
        seen = set()
        for line in lines:
            m = re.match(r"^(\d+) (notdir|denied) (.*)$", line)
            if not m or int(m.group(1)) in seen:
                continue
            seen.add(int(m.group(1)))
            d, where = self.needs.dests[int(m.group(1))], m.group(3)
            if m.group(2) == "notdir":
                msg = f"`{d.path}` on `{self.name}` cannot be created: `{where}` is not a directory"
                help = "choose another path, or move that file away"
            else:
                msg = (f"`{d.path}` on `{self.name}` is not writable by {who}: `{where}` denies it "
                       "(permissions, or a read-only file system)")
                help = f"make `{where}` writable by {who} (chown/chmod, or remount read-write), or write somewhere else"
            self.facts.findings.append(preflight_finding(P407, msg, d.step.span, help, label=f"written by {who}"))

    def _sized(self, d: DestNeed) -> Optional[int]:
        """What sizes() measured for `d` on this host (None when it is measured elsewhere, or not at all)."""
        src = self.needs.size_source(d)
        return self.facts.sizes.get(src[1]) if src is not None and src[2] == self.name else None

    # -- P408: what the plan reads must be there before anything stops

    def sources(self) -> None:
        mine = [(i, src) for i, src in enumerate(self.needs.sources) if src.host == self.name]
        if not mine:
            return
        parts: list = []
        for i, src in mine:
            parts += sh("p=" + Arg(src.path).render() + ";",
                        f"if [ ! -e \"$p\" ]; then echo '{i} missing';",
                        f"elif [ ! -r \"$p\" ]; then echo '{i} unreadable';")
            if src.is_dir:
                parts += sh(f"elif [ ! -d \"$p\" ]; then echo '{i} notdir';",
                            f"elif [ ! -x \"$p\" ]; then echo '{i} unreadable';",
                            f"elif [ -z \"$(ls -A -- \"$p\" | head -c 1)\" ]; then echo '{i} empty';")
            parts += sh("fi;")
        parts += sh("true")
        r = self.run(self.cmd(parts))
        if not r.ok:
            self.facts.findings.append(preflight_finding(
                P408, f"cannot look at the data the plan reads on `{self.name}`: "
                f"{_first_line(r.stderr) or f'exit {r.exit}'}", self.host.span, None))
            return
        reported = set()
        for line in r.stdout.splitlines():
            index, _, verdict = line.partition(" ")
            if not index.isdigit() or int(index) >= len(self.needs.sources) or int(index) in reported:
                continue
            reported.add(int(index))
            src = self.needs.sources[int(index)]
            self.facts.findings.append(_source_finding(src, self.name, verdict))


    def services(self) -> None:
        for svc in self.needs.services.values():
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
                        self.facts.findings.append(preflight_finding(
                            P405, f"systemd is not running on `{self.name}`, so `{unit}` of service "
                            f"`{svc.name}` cannot be stopped or started: {err}", svc.span,
                            "run on a host booted with systemd, or declare the service with "
                            "`start`/`stop`/`status` commands", label="no systemd"))
                        break
                    self.facts.findings.append(preflight_finding(
                        P405, f"systemd unit `{unit}` of service `{svc.name}` does not exist on `{self.name}`"
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
                    self.facts.findings.append(preflight_finding(
                        P405, f"the {what} command of service `{svc.name}` cannot run on `{self.name}`: "
                        f"`{prog}` not found", svc.span, f"fix `{what}` of the service, or install `{prog}`",
                        label=f"{what} command missing"))
            if svc.status:
                try:
                    r = self.run(self.cmd((Lit(svc.status),)))
                except Unavailable as e:
                    self.facts.findings.append(preflight_finding(
                        P405, f"the status command of service `{svc.name}` on `{self.name}` did not finish: {e}",
                        svc.span, "a status command must answer quickly (exit 0 running, non-zero stopped)"))
                    continue
                if r.exit in (126, 127):
                    self.facts.findings.append(preflight_finding(
                        P405, f"the status command of service `{svc.name}` cannot run on `{self.name}`: "
                        f"{_first_line(r.stderr) or f'exit {r.exit}'}", svc.span,
                        "fix `status` of the service (it runs with `sh -c`; exit 0 means running)",
                        label="status command missing"))


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


def _source_finding(src, host: str, verdict: str) -> Finding:
    """P408 for one source: an error when it cannot be read, a warning when a dir is empty."""
    what = f"`{src.path}` on `{host}`" + (f" ({src.name})" if src.name != src.path else "")
    by = f"read by `{src.step.keyword}` at line {src.step.span.line}"
    if verdict == "empty":
        return P408.finding(f"{what} is empty, but the plan copies it as data", src.step.span,
                            severity=Severity.WARNING, label="empty", notes=(by,),
                            help="if a disk should be mounted there, it is not: mount it before the move; "
                                 "if the dir is really empty, this warning can be ignored")
    message, help = {
        "missing": ("does not exist", "fix the path (a typo?), or mount the disk that holds it"),
        "unreadable": ("cannot be read by the login user", "run as a user that can read it (`sudo = true` on the "
                       "host), or fix its permissions"),
        "notdir": ("is not a directory", "a dir's `path` names a directory; declare a `file` for a single file"),
    }.get(verdict, (f"cannot be read ({verdict})", "look at the path on the host"))
    return preflight_finding(P408, f"{what} {message}", src.step.span, help, (by, "nothing was stopped or changed"),
                             label=verdict)
