"""H3: operations. Services left stopped, files left with foreign uids,
unverified copies, secrets in the plan, opaque commands, dump formats, DNS.
Each rule is followed by its checks; `CHECKS` at the bottom lists them in order."""

from __future__ import annotations

import functools
import re
from typing import Dict, Iterator, List, Optional

from mdsl.check.rules.base import ERROR, WARNING, Rule
from mdsl.check.rules.examples import DBS, FILES, HOSTS, MOVE, SERVICES, plan
from mdsl.findings import Finding
from mdsl.stores.postgres import STORE as POSTGRES
from mdsl.stores.registry import store_of
from mdsl.syntax import ast as A

_DECLS = HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES
_VERIFY = '  verify http "https://app.example.net/health" via = new status = 200\n'

# ---------------------------------------------------------------- H301

H301 = Rule(
    "H301", "a service that ran at the start runs nowhere at the end", WARNING,
    summary=(
        "Every service running when the plan starts should run somewhere when it ends: its systemd "
        "units are stopped on the old host, so some service on the new host must run the same units. "
        "Compose services are compared by name the same way: each one an old declaration lists "
        "(`services = [...]`) must run in a Compose project running at the end (one started whole runs "
        "every service of its file). A service with start/stop commands has no unit names to compare: "
        "it counts as moved when a "
        "service running at the end writes the data its own writes were copied into. The usual miss "
        "is a timer or worker unit (a cron timer, a queue worker) that the old box ran and the new "
        "service declaration forgot."),
    bad=plan(MOVE, _DECLS.replace('systemd = ["app"]  writes = [old_db',
                                  'systemd = ["app", "app-cleanup.timer"]  writes = [old_db')),
    fixed=plan(MOVE, _DECLS.replace('systemd = ["app"]', 'systemd = ["app", "app-cleanup.timer"]')),
    source="Nextcloud's background jobs run from a cron timer; moved without it, the new server "
           "silently stops cleaning up and sending notifications.",
)


@H301.at_end
def runs_nowhere(walk) -> Iterator[Finding]:
    """Units of services that ran at the start that run nowhere at the end."""
    res = walk.bound.resources
    running = walk.state.running
    units = set()
    compose_running = set()
    for name in running:
        units.update(res[name].systemd)
        compose_running.update(res[name].compose_services)
    compose_whole = any(res[n].compose and not res[n].compose_services for n in running)
    for svc in res.values():
        if svc.kind != "service" or not svc.initially_running:
            continue
        if svc.app and any(res[n].app == svc.app and res[n].layout != svc.layout for n in running):
            continue  # the app runs on under another layout's unit names (A106 holds them to its profile)
        by = "units" if svc.systemd else "data"
        if svc.systemd:
            missing = [u for u in svc.systemd if u not in units]
        elif svc.compose and compose_whole:
            missing = []  # a project running whole at the end runs whatever its file declares
        elif svc.compose_services and compose_running:
            # Compose services have names to compare, as units do: each one the old project ran must
            # run in a project running at the end.
            by = "compose"
            missing = [c for c in svc.compose_services if c not in compose_running]
        else:
            # A command service has no unit names to compare: it lives on where its
            # data went, if a service running at the end writes a copy of that data.
            missing = [] if svc.name in running or _job_moved(walk, svc, running) else [svc.name]
        if missing:
            yield _runs_nowhere(walk, svc, missing, by)


def _runs_nowhere(walk, svc, missing: List[str], by: str) -> Finding:
    """`by`: what was compared: systemd `units`, `compose` service names, or where the `data` went."""
    stop = walk.last_stop.get(svc.name)
    span = stop.span if stop is not None else svc.span
    if by == "data":
        return H301.finding(
            f"{svc.name} ran at the start and runs nowhere at the end", span, label=f"{svc.name} stops here",
            notes=("no later step starts it, here or on another host",),
            help=f"start {svc.name} again, or a service that writes the data where it went")
    what = ", ".join(missing)
    if by == "compose":
        return H301.finding(
            f"{svc.name} ran at the start, but its Compose service{'s' if len(missing) > 1 else ''} {what} "
            f"{'runs' if len(missing) == 1 else 'run'} nowhere at the end", span, label=f"{svc.name} stops here",
            notes=("no Compose service running at the end of the plan lists "
                   f"{'it' if len(missing) == 1 else 'them'} (a worker the new project forgot?)",),
            help=f"add {'it' if len(missing) == 1 else 'them'} to `services` of a service on the new host and "
                 f"`start` it, or start {svc.name} again")
    return H301.finding(
        f"{svc.name} ran at the start, but {what} {'runs' if len(missing) == 1 else 'run'} nowhere at the end",
        span, label=f"{svc.name} stops here",
        notes=(f"no service running at the end of the plan has {'this unit' if len(missing) == 1 else 'these units'}",),
        help=("declare the missing units in a service on the new host and `start` it, "
              f"or start {svc.name} again"))


def _job_moved(walk, svc, running) -> bool:
    """True when a running service writes a resource holding a copy of data `svc` wrote."""
    res = walk.bound.resources
    successors = set()
    for data in svc.writes:
        for piece in walk.state.pieces.get(data, ()):
            successors.update(k for k in piece.holders if isinstance(k, str) and k != data)
    return any(successors.intersection(res[name].writes) for name in running)


# ---------------------------------------------------------------- H302

H302 = Rule(
    "H302", "files are unpacked into a dir (or a database file restored) with no owner", WARNING,
    summary=(
        "`extract` and `sync` chown what they write to the target dir's `owner`. Without one, files "
        "keep the source's owners as tar and rsync running as root map them: by user and group name "
        "where the target has that name, else the source's numeric id, which names another user (or "
        "nobody) there. The app's user may not even exist under the same name: the app cannot read "
        "its own uploads, or another account can. A `restore` into a SQLite database without `owner` "
        "leaves the new file to the login user with mode 0600, and the app cannot open it. Where every "
        "end is this machine (`local = true` hosts) the ids name the same users, and nothing is reported."),
    bad=plan(MOVE, _DECLS.replace('dir new_files on new { path = "/srv/app/files"  owner = "app:app" }',
                                  'dir new_files on new { path = "/srv/app/files" }')),
    fixed=plan(MOVE),
    source="the seed: 'remember to check file permissions when you do this (guess why I know)'.",
)


@H302.on(A.Extract, A.Sync, A.Restore)
def unowned(facts, walk) -> Iterator[Finding]:
    """Extract or sync into a dir, or restore into a database file, that declares no owner, from
    another machine."""
    d, step = facts.into, facts.step
    if isinstance(step, A.Restore) and not store_of(d).is_file:
        return  # a database server owns its files
    if d.owner is not None or d.kind == "volume":
        return  # a volume's files keep their numeric owners: the image's users, the same on every host
    pieces = walk.pieces[step.source.name] if isinstance(step, A.Sync) else facts.pieces
    hosts = walk.bound.hosts
    origins = {p.resource.host for p in pieces} | {d.host}
    if all(hosts[h].local for h in origins):
        return  # every end is this machine: the numeric uids are the same users
    if d.is_database:
        yield H302.finding(
            f"`restore` into {d.name}, which has no `owner`: the new database file belongs to the login user, "
            "mode 0600", step.span, label=f"{d.name} declares no owner to chown to",
            notes=("the app opens the file as its own user, which then cannot read or write it",),
            help=f'declare `owner = "user:group"` (and `mode`, if not 0600) on {d.name}')
        return
    # Files that come out of a volume keep their numeric owners (tar --numeric-owner, rsync --numeric-ids).
    how = ("their numeric ids, from a Docker volume" if any(p.resource.kind == "volume" for p in pieces)
           else "by name where the target has that user, else by numeric id")
    yield H302.finding(
        f"`{step.keyword}` into {d.name}, which has no `owner`: files keep the source's owners, {how}", step.span,
        label=f"{d.name} declares no owner to chown to",
        notes=("user and group ids differ between machines: the app's user may be 991 on one and 998 on "
               "the other, or be missing under that name",),
        help=f'declare `owner = "user:group"` on {d.name}')


# ---------------------------------------------------------------- H303

H303 = Rule(
    "H303", "a copy is used without a verified checksum", WARNING,
    summary=(
        "A `transfer` hashes the file on both ends and fails on a mismatch; `verify = false` turns "
        "that off, so a truncated or corrupted copy is restored as if it were whole. Reading an "
        "artifact across hosts (a `restore` on one host of a file that lies on another) streams it "
        "without any verified copy on the target either."),
    bad=plan(MOVE.replace('to new:"/root/app.dump"\n', 'to new:"/root/app.dump" verify = false\n', 1)),
    fixed=plan(MOVE),
    source="the seed moved its archives with `tailscale file cp`, which checks nothing end to end.",
)


@H303.on(A.Transfer)
def unverified_transfer(facts, walk) -> Iterator[Finding]:
    """A transfer that skips the checksum comparison."""
    opt = facts.unverified
    if opt is None:
        return
    yield H303.finding(
        "`transfer` with `verify = false` copies without comparing checksums", opt.span,
        label="this copy is never checked",
        help="remove `verify = false`: a transfer hashes both ends and fails on a mismatch")


@H303.on(A.Restore, A.Extract)
def cross_host_read(facts, walk) -> Iterator[Finding]:
    """A restore or extract on one host reads an artifact lying on another."""
    src, into, step = facts.src, facts.into, facts.step
    if not src.exists or src.host == into.host:
        return
    yield H303.finding(
        f"`{step.keyword}` into {into.name} on {into.host} reads {src.show()}: there is no "
        f"verified copy on {into.host}", step.span,
        label="read across hosts, unverified",
        help=f"transfer it to {into.host} first (a transfer compares checksums), then {step.keyword} from there")


# ---------------------------------------------------------------- H304

H304 = Rule(
    "H304", "a literal secret in the plan", ERROR,
    summary=(
        "A password, token or key written into the plan ends up in version control, in shell "
        "history, in logs and in every copy of the plan. Use `env(\"NAME\")` or `file(\"PATH\")`: "
        "secrets are read at apply time, never logged and never put in a command line."),
    bad=plan(MOVE, _DECLS.replace('password = env("APP_DB_PASSWORD")', 'password = "hunter2"')),
    fixed=plan(MOVE),
    source="the seed: 'How to manage password in NixOS is a question I don't feel comfortable answering yet'.",
)

_SECRET_NAME = re.compile(r"pass(word|wd)?|token|secret|api_?key|credential", re.I)
# name=value in a command (PGPASSWORD=x, --token=x, ?api_key=x); values that are variables or paths are fine
_SECRET_ASSIGN = re.compile(
    r"[\w-]*(?:password|passwd|token|secret|api[_-]?key)[\w-]*(?:=|:(?=\S))(?![$/~.])['\"]?[^\s'\"&]{3,}", re.I)
_URL_USERINFO = re.compile(r"://[^/\s:@]+:(?!\$)[^@\s/]+@")
_BEARER = re.compile(r"\bbearer\s+(?!\$)[A-Za-z0-9._~+/-]{8,}", re.I)


# Every pattern above needs one of these words (or the `@` of a URL's userinfo): one cheap
# search rules out almost every string of a plan.
_SECRET_HINT = re.compile(r"pass|token|secret|api.?key|bearer|@", re.I)


def _secret_in(s: A.Str) -> Optional[A.Span]:
    if not _SECRET_HINT.search(s.value):
        return None
    for rx in (_SECRET_ASSIGN, _URL_USERINFO, _BEARER):
        m = rx.search(s.value)
        if m:
            sp = s.span
            # point into the string when its source is the value verbatim (no escapes)
            if sp.line == sp.end_line and sp.end_col - sp.col - 2 == len(s.value):
                return A.Span(sp.file, sp.line, sp.col + 1 + m.start(), sp.line, sp.col + 1 + m.end())
            return sp
    return None


@functools.lru_cache(maxsize=None)
def _secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def _literal_attr(key: A.Ident, value, where: str) -> Iterator[Finding]:
    if isinstance(value, A.Str) and _secret_name(key.name):
        yield H304.finding(
            f"a literal secret in the plan: `{key.name}` of {where}", value.span,
            label="written into the plan",
            help=f'use `{key.name} = env("NAME")` or `file("PATH")`: secrets are read at apply time and never shown')
        return
    strs = value.items if isinstance(value, A.ListValue) else (value,)
    for s in strs:
        if isinstance(s, A.Str):
            yield from _literal_text(s, f"`{key.name}` of {where}")


def _literal_text(s: A.Str, where: str) -> Iterator[Finding]:
    span = _secret_in(s)
    if span is not None:
        yield H304.finding(
            f"a literal secret in {where}", span, label="a secret written into the plan",
            help='pass it through the environment at apply time (declare it with env("NAME") where an '
                 'attribute takes one; in a command, read it from a file or a variable)')


_STEP_TEXT = {A.Run: "command", A.VerifyRun: "command", A.VerifyHttp: "url", A.Confirm: "message"}


@H304.on_text
def literal_secrets(walk) -> Iterator[Finding]:
    """Literal passwords, tokens and keys in attributes, options and command text."""
    plan = walk.bound.plan
    for d in plan.decls:
        where = f"`{d.name.name}`"
        for a in d.attrs:
            yield from _literal_attr(a.key, a.value, where)
        for dv in getattr(d, "derived", ()):
            yield from _literal_text(dv.rebuild, f"the rebuild command of {where}")
    str_types = (A.Str, A.ListValue)
    for s in A.walk_steps(plan.steps):
        for opt in s.options:
            if type(opt.value) in str_types:  # names, numbers and flags hold no secret
                yield from _literal_attr(opt.key, opt.value, f"a `{s.keyword}` step")
        field = _STEP_TEXT.get(type(s))
        if field is not None:
            yield from _literal_text(getattr(s, field), f"a `{s.keyword}` step")


# ---------------------------------------------------------------- H305

H305 = Rule(
    "H305", "an opaque command touches data it does not declare", WARNING,
    summary=(
        "The checker cannot see inside a `run` command. When its text mentions the path of a "
        "declared dir, database or file, or uses a destructive tool (rm, mv, dropdb, truncate, "
        "DROP ...), but the step declares neither `writes` nor `deletes`, every finding about that "
        "data may be wrong. Declare what it touches: `reads = [...]`, `writes = [...]`, "
        "`deletes = [...]`."),
    bad=plan(MOVE + '  run new "chown -R app:app /srv/app/files"\n'),
    fixed=plan(MOVE + '  run new "chown -R app:app /srv/app/files" writes = [new_files]\n'),
    source="the seed lost its avatars to an opaque `rm` of the cache: a checker that cannot see inside a "
           "command has to be told what the command touches.",
)

_DESTRUCTIVE_TOOL = re.compile(
    r"(?:^|[\s;&|(`'\"])(?:sudo\s+(?:-\S+\s+(?:\w+\s+)?)*)?(rm|rmdir|mv|dropdb|shred|unlink|truncate)(?=\s|$)")
_DESTRUCTIVE_SQL = re.compile(
    r"\b(DROP\s+(?:DATABASE|TABLE|SCHEMA|OWNED|INDEX|VIEW)|TRUNCATE\s+(?:TABLE\s+)?\w+|DELETE\s+FROM)\b", re.I)
_FIND_DELETE = re.compile(r"\s(-delete)\b")


# A path-like word: what a shell command names a declared path with. Declared paths made only of these
# characters are looked up word by word in a dict; a regex alternation of every path on a host costs a
# compile per host, which dominated the check of plans with hundreds of hosts.
_PATH_WORD = re.compile(r"(?<![\w./-])[\w./-]+")
_PLAIN_PATH = re.compile(r"[\w./-]+")


class _HostPaths:
    """The data paths declared on one host, and how to find them in a command."""

    def __init__(self, by_path: Dict[str, List[str]]):
        self.by_path = by_path
        unusual = [p for p in by_path if not _PLAIN_PATH.fullmatch(p)]
        self.unusual_rx = None
        if unusual:  # a path with spaces or quotes: only a regex finds it inside a word
            alts = "|".join(re.escape(p) for p in sorted(unusual, key=len, reverse=True))
            self.unusual_rx = re.compile(r"(?<![\w./-])(" + alts + r")(?![\w.-])")

    def named_in(self, cmd: str) -> Iterator[str]:
        """The declared paths `cmd` names: at a word's start, ending where the word ends or at a `/`
        (the longest such path of each word, as the rest of the word is below it)."""
        for m in _PATH_WORD.finditer(cmd):
            word = m.group(0)
            cut = len(word)
            while cut > 0:
                prefix = word[:cut]
                if prefix in self.by_path:
                    yield prefix
                    break
                cut = word.rfind("/", 0, cut)
        if self.unusual_rx is not None:
            for m in self.unusual_rx.finditer(cmd):
                yield m.group(1)


def _paths_on(walk, host: str) -> Optional[_HostPaths]:
    """The data paths declared on `host` (None when it has none)."""
    memo = walk.memo.get("h305")
    if memo is None:  # one pass over the declarations for every host
        by_host: Dict[str, Dict[str, List[str]]] = {}
        for r in walk.bound.resources.values():
            p = getattr(r, "path", "")
            if r.is_data and p:
                by_host.setdefault(r.host, {}).setdefault(p, []).append(r.name)
        memo = walk.memo["h305"] = ({}, by_host)
    made, by_host = memo
    if host not in made:
        by_path = by_host.get(host)
        made[host] = _HostPaths(by_path) if by_path else None
    return made[host]


@H305.on(A.Run)
def opaque_run(facts, walk) -> Iterator[Finding]:
    """A run whose text touches data or destroys things it does not declare."""
    step = facts.step
    if any(step.option(k) is not None for k in ("writes", "deletes")):
        return
    cmd = step.command.value
    m = _DESTRUCTIVE_TOOL.search(cmd) or _DESTRUCTIVE_SQL.search(cmd) or _FIND_DELETE.search(cmd)
    if m:
        yield H305.finding(
            f"`run` uses `{m.group(1)}` but declares no `deletes` or `writes`", step.span,
            label="the checker cannot see what this destroys",
            help="declare what it touches (`deletes = [...]`, `writes = [...]`), or use a `delete`/`drop` step")
        return
    undeclared = _undeclared_paths(walk, step, cmd)
    if undeclared:
        names = ", ".join(undeclared)
        yield H305.finding(
            f"`run` mentions the path of {names} but does not declare it", step.span,
            label="the checker cannot see what this does to the data",
            help=f"declare it: `writes = [{names}]` if the command changes it, `reads = [{names}]` if it only reads it")


def _undeclared_paths(walk, step: A.Run, cmd: str) -> List[str]:
    """The data resources whose paths on the run's host the command names, beyond its `reads`."""
    paths = _paths_on(walk, step.host.name)
    if paths is None:
        return []
    reads = set()
    opt = step.option("reads")
    if opt is not None and opt.value is not None:
        items = opt.value.items if isinstance(opt.value, A.ListValue) else (opt.value,)
        reads = {i.name for i in items if isinstance(i, A.Ref)}
    undeclared = []
    for path in paths.named_in(cmd):
        for name in paths.by_path[path]:
            if name not in reads and name not in undeclared:
                undeclared.append(name)
    return undeclared


# ---------------------------------------------------------------- H306

H306 = Rule(
    "H306", "a dump format that the restore cannot use", WARNING,
    summary=(
        "`pg_restore` reads the custom and directory formats only: a `format = plain` dump is SQL "
        "text for psql, and `restore` fails on it. `jobs = N` makes pg_dump work in parallel only "
        "with `format = directory`, and pg_restore only with custom or directory dumps."),
    bad=plan(MOVE.replace('dump old_db to old:"/root/app.dump"', 'dump old_db to old:"/root/app.dump" format = plain')),
    fixed=plan(MOVE.replace('dump old_db to old:"/root/app.dump"',
                            'dump old_db to old:"/root/app.dump" format = custom')),
    source="the seed used `pg_dump -Fc` (custom format) and pg_restore, as Mastodon's migration guide does.",
)


@H306.on(A.Dump)
def jobs_without_parallel_format(facts, walk) -> Iterator[Finding]:
    """pg_dump `jobs` without the directory format."""
    fmt, jobs = facts.fmt, facts.step.option("jobs")
    if fmt is None or jobs is None or fmt == "directory":
        return
    yield H306.finding(
        f"`jobs` needs `format = directory`: pg_dump cannot write a {fmt}-format dump in parallel", jobs.span,
        label="ignored, or an error", help="add `format = directory`, or drop `jobs`")


@H306.on(A.Restore)
def unrestorable_format(facts, walk) -> Iterator[Finding]:
    """Restoring a plain-format dump (SQL text for psql, not for pg_restore)."""
    src = facts.src
    if not src.exists or src.kind != POSTGRES.artifact or src.fmt != "plain":
        return
    by = src.producer
    yield H306.finding(
        "`restore` reads a plain-format dump, which pg_restore cannot read", facts.step.span,
        label="a plain SQL dump needs psql",
        notes=(f"written by the `dump` at line {by.span.line} with `format = plain`",) if by else (),
        help="dump with `format = custom` (the default) or `format = directory`")


# ---------------------------------------------------------------- H307

H307 = Rule(
    "H307", "DNS is switched before the new host was tested", WARNING,
    summary=(
        "Once DNS points at the new host, every client goes there. Test it first with `verify http "
        "\"URL\" via = HOST`, which sends the request to HOST whatever DNS says (a hosts-file "
        "override, in effect). Reported for `verify dns ... is HOST` and for a `confirm` that asks "
        "the operator to switch DNS, when no such check of that host has passed."),
    bad=plan(MOVE + '  confirm "Point app.example.net\'s DNS at new"\n  verify dns "app.example.net" is new\n'),
    fixed=plan(MOVE + _VERIFY + '  confirm "Point app.example.net\'s DNS at new"\n'
               '  verify dns "app.example.net" is new\n'),
    source="Mastodon's and Nextcloud's migration guides: test the new server through your hosts file "
           "before you change DNS. The seed changed DNS first because its TLS certificate needed it.",
)

_DNS_WORDS = re.compile(r"(?i:\bdns\b|\bcname\b|\bnameservers?\b)|\bA/AAAA\b|\bAAAA\b|\bA records?\b")
_SWITCH = re.compile(r"\b(point|re-?point|switch|change|update|move|flip|cut\s*over)\b", re.I)
_POINT = re.compile(r"\b(point|re-?point|switch|flip|cut\s*over)\b", re.I)


@H307.on(A.VerifyDns)
def dns_switch(facts, walk) -> Iterator[Finding]:
    """`verify dns ... is HOST` before a `verify http ... via = HOST` passed."""
    host = facts.step.host.name
    if host not in walk.state.http_via:
        yield _dns_too_early(facts.step, host)


@H307.on(A.Confirm)
def dns_confirm(facts, walk) -> Iterator[Finding]:
    """A `confirm` asking to switch DNS before the new host was tested via HTTP."""
    step = facts.step
    msg = step.message.value
    if not _DNS_WORDS.search(msg) or not _SWITCH.search(msg):
        return
    if re.search(r"\bTTL\b", msg) and not _POINT.search(msg):
        return  # lowering the TTL ahead of the move is preparation, not a switch
    named = [h for h in walk.bound.hosts if re.search(r"(?<![\w])" + re.escape(h) + r"(?![\w])", msg)]
    via = walk.state.http_via
    if named:
        if not any(h in via for h in named):
            yield _dns_too_early(step, named[-1])
    elif not via:
        yield _dns_too_early(step, None)


def _dns_too_early(step, host: Optional[str]) -> Finding:
    target = host or "the new host"
    return H307.finding(
        f"DNS is switched to {target} before any `verify http ... via = {host or 'HOST'}` passed", step.span,
        label=f"from here clients go to {target}",
        help=f'add `verify http "https://NAME/..." via = {host or "HOST"}` before this step: it sends the '
             f"request to {target} whatever DNS says")


# The checks of this family, in the order they judge a step (mdsl.check.catalog.CHECKS).
CHECKS = (runs_nowhere, unowned, unverified_transfer, cross_host_read, literal_secrets, opaque_run,
          jobs_without_parallel_format, unrestorable_format, dns_switch, dns_confirm)
