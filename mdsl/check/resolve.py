"""AST -> bound plan: names bound to typed declarations, attributes and options
type-checked. Reports E102-E106; the bound plan is what `check` walks and what
`compile` turns into commands."""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional, Tuple

from mdsl import docker
from mdsl.apps import profile as profiles
from mdsl.check.rules.base import Rule
from mdsl.check.rules.e_plan import E102, E103, E104, E105, E106
from mdsl.findings import Finding
from mdsl.model import BoundPlan, Derived, Dir, File, Host, Resource, Service, normpath
from mdsl.stores import logins
from mdsl.stores.base import Binding
from mdsl.stores.registry import STORES
from mdsl.syntax import ast as A
from mdsl.syntax.spelling import misspelled_step_in

# ---------------------------------------------------------------- attribute schemas

# kind -> attribute -> (type, required); types: str, int, bool, secret, names, strs, state, any-list.
# Store kinds (databases) bring their own (mdsl/stores/KIND).
_SCHEMAS = {
    "host": {
        "ssh": ("str", False), "port": ("int", False), "identity": ("str", False),
        "known_hosts": ("str", False), "sudo": ("bool", False), "sudo_password": ("secret", False),
        "local": ("bool", False), "address": ("str", False),
    },
    "dir": {"path": ("str", True), "owner": ("str", False), "mode": ("str", False), "fresh": ("bool", False)},
    "file": {
        "path": ("str", True), "owner": ("str", False), "mode": ("str", False),
        "secret": ("bool", False), "fresh": ("bool", False),
    },
    "service": {
        "systemd": ("strs", False), "start": ("str", False), "stop": ("str", False),
        "status": ("str", False), "writes": ("names", False), "reads": ("names", False),
        "initially": ("state", False), "app": ("str", False), "layout": ("str", False), **docker.SERVICE_SCHEMA,
    },
    "volume": docker.VOLUME_SCHEMA,
    **{kind: store.schema for kind, store in STORES.items()},
    "login": logins.SCHEMA,  # `login NAME on DB`: the app's own login to a database (mdsl/stores/logins.py)
}
DATABASE_KINDS = tuple(STORES)
DIR_KINDS = ("dir", "volume")
DATA_KINDS = DATABASE_KINDS + DIR_KINDS + ("file",)

# Options every step takes, and per step keyword.
_COMMON_OPTIONS = {"timeout": "int"}
STEP_OPTIONS: Dict[str, Dict[str, str]] = {
    "stop": {}, "start": {}, "restart": {},
    "dump": {},  # and the options of the database's kind (StoreKind.dump_options)
    "restore": {"replace": "flag"},  # likewise (StoreKind.restore_options)
    "archive": {"exclude": "excludes", "compress": "enum:gzip,zstd,none"},
    "extract": {"replace": "flag"},
    "sync": {"exclude": "excludes", "live": "flag", "route": "enum:auto,direct,relay,agent"},
    # `replica_identity = full`: tables without a primary key replicate their UPDATE/DELETE by whole rows
    # (REPLICA IDENTITY FULL, set on the source by the live pass); `port`: the tunnel's port on the target.
    "replicate": {"live": "flag", "replica_identity": "enum:full", "port": "int"},
    "transfer": {"via": "enum:stream,rsync,scp,tailscale", "verify": "bool", "route": "enum:auto,direct,relay,agent"},
    "move": {}, "delete": {}, "drop": {},
    "run": {"reads": "names", "writes": "names", "deletes": "names", "run_as": "str", "undo": "str"},
    "verify http": {"via": "host", "status": "int", "contains": "str"},
    "verify dns": {}, "verify run": {},
    "confirm": {}, "parallel": {}, "sequence": {},
}

_TYPE_WORDS = {
    "str": "a string", "int": "a number", "bool": "`true` or `false`", "secret": 'env("NAME") or file("PATH")',
    "names": "a list of names", "strs": "a list of strings", "state": "`running` or `stopped`",
    "host": "a host name", "flag": "a bare flag", "excludes": 'exclude "SUB", ...', "name": "a declared name",
}


# What each step's names must be, in the order they are checked: a location, or a declaration of a role.
_ROLES = {
    "service": (("service",), "a service"), "database": (DATABASE_KINDS, "a database"),
    "dir": (DIR_KINDS, "a dir or volume"), "host": (("host",), "a host"),
}
_STEP_NAMES = {
    A.Stop: (("services", "service"),), A.Start: (("services", "service"),), A.Restart: (("services", "service"),),
    A.Dump: (("db", "database"), ("to", "location")), A.Restore: (("source", "location"), ("db", "database")),
    A.Drop: (("db", "database"),),
    A.Archive: (("dir", "dir"), ("to", "location")), A.Extract: (("source", "location"), ("dir", "dir")),
    A.Sync: (("source", "dir"), ("dest", "dir")),
    A.Replicate: (("source", "database"), ("dest", "database")),
    A.Transfer: (("source", "location"), ("dest", "location")), A.Move: (("source", "location"), ("dest", "location")),
    A.Delete: (("target", "location"),),
    A.Run: (("host", "host"),), A.VerifyRun: (("host", "host"),), A.VerifyDns: (("host", "host"),),
}


def _suggest(name: str, candidates) -> Optional[str]:
    m = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return m[0] if m else None


class _Resolver:
    def __init__(self, plan: A.Plan):
        self.plan = plan
        self.findings: List[Finding] = []
        self.decls: Dict[str, A.Decl] = {}
        self.hosts: Dict[str, Host] = {}
        self.resources: Dict[str, Resource] = {}

    def err(self, rule: Rule, message, span, label="", help=None, notes=()):
        self.findings.append(rule.finding(message, span, label=label, help=help, notes=notes))

    # -- names

    def bind_names(self):
        for d in self.plan.decls:
            name = d.name.name
            if d.kind not in _SCHEMAS:
                # The grammar takes any word as a declaration's kind, so a new store kind needs no grammar change.
                kinds = sorted(k for k in _SCHEMAS if k != "host")
                sugg = _suggest(d.kind, kinds)
                self.err(E106, f"unknown kind `{d.kind}`", d.kind_span(), label="unknown kind",
                         help=f"did you mean `{sugg}`?" if sugg else "known kinds: " + ", ".join(kinds))
                continue
            if name in self.decls:
                prev = self.decls[name]
                self.err(E104, f"`{name}` is declared twice", d.name.span, label="second declaration",
                         notes=(f"first declared at {prev.name.span.file}:{prev.name.span.line}:{prev.name.span.col}",),
                         help="give each host, database, dir, file and service its own name")
                continue
            self.decls[name] = d

    def lookup(self, ident: A.Ident, kinds: Tuple[str, ...], what: str) -> Optional[A.Decl]:
        d = self.decls.get(ident.name)
        if d is None:
            sugg = _suggest(ident.name, [n for n, x in self.decls.items() if x.kind in kinds])
            self.err(E102, f"unknown name `{ident.name}`", ident.span, label="nothing is declared with this name",
                     help=f"did you mean `{sugg}`?" if sugg else f"declare it, e.g. `{kinds[0]} {ident.name} ...`")
            return None
        if d.kind not in kinds:
            self.err(E103, f"`{ident.name}` is a {d.kind}, but this needs {what}", ident.span,
                     label=f"a {d.kind}", help=f"name {what} here")
            return None
        return d

    # -- attributes

    def typed(self, kind: str, attr: A.Attr, typ: str):
        v = attr.value
        ok = {
            "str": isinstance(v, A.Str),
            "int": isinstance(v, A.Int),
            "bool": isinstance(v, A.Bool),
            "secret": isinstance(v, (A.Secret, A.Str)),  # a literal is H304, not a type error
            "names": isinstance(v, A.ListValue) and all(isinstance(i, A.Ref) for i in v.items),
            "strs": isinstance(v, A.ListValue) and all(isinstance(i, A.Str) for i in v.items),
            "state": isinstance(v, A.Ref) and v.name in ("running", "stopped"),
            "name": isinstance(v, A.Ref),
        }[typ]
        if typ == "names" and isinstance(v, A.Ref):
            ok = True  # a single name stands for a one-element list
        if not ok:
            self.err(E106, f"`{attr.key.name}` of a {kind} must be {_TYPE_WORDS[typ]}", attr.value.span,
                     label="wrong type")
            return None
        if isinstance(v, A.ListValue):
            return tuple(i.value if isinstance(i, A.Str) else i for i in v.items)
        if isinstance(v, A.Ref) and typ == "names":
            return (v,)
        if isinstance(v, (A.Secret, A.Ref)):
            return v
        if typ == "secret" and isinstance(v, A.Str):
            return v
        return v.value

    def attrs_of(self, d: A.Decl) -> Dict[str, object]:
        schema = _SCHEMAS[d.kind]
        out: Dict[str, object] = {}
        seen: Dict[str, A.Attr] = {}
        for a in d.attrs:
            key = a.key.name
            if key in seen:
                self.err(E106, f"`{key}` is set twice in `{d.name.name}`", a.key.span, label="again")
                continue
            seen[key] = a
            if key not in schema:
                sugg = _suggest(key, schema)
                self.err(E106, f"unknown attribute `{key}` for a {d.kind}", a.key.span, label="unknown",
                         help=f"did you mean `{sugg}`?" if sugg else "known: " + ", ".join(sorted(schema)))
                continue
            val = self.typed(d.kind, a, schema[key][0])
            if val is not None:
                out[key] = val
        for key, (_, required) in schema.items():
            if required and key not in seen:
                self.err(E106, f"{d.kind} `{d.name.name}` needs `{key}`", d.name.span, label=f"no `{key}`",
                         help=f'add `{key} = "..."` inside its {{ }}')
        return out

    def bind_decls(self):
        logins = []  # bound last: a login is `on` a database, which may be declared after it
        for name, d in self.decls.items():
            at = self.attrs_of(d)
            if isinstance(d, A.HostDecl):
                self.hosts[name] = self.host(d, at)
            elif d.kind == "login":
                logins.append((d, at))
            else:
                self.lookup(d.host, ("host",), "a host")
                self.resources[name] = self.resource(d, at)
        for d, at in logins:
            self.login(d, at)
        for d, _ in logins:
            if d.name.name in self.resources:
                self.login_like(d, self.resources[d.name.name])

    def login(self, d: A.ResourceDecl, at) -> None:
        """`login NAME on DB`: DB is a database of a kind that has logins."""
        decl = self.lookup(d.host, DATABASE_KINDS, "a database")
        db = self.resources.get(d.host.name) if decl is not None else None
        if db is None:
            return
        store = STORES[db.kind]
        if not store.logins:
            with_logins = " and ".join(k for k, s in STORES.items() if s.logins)
            self.err(E106, f"`{d.host.name}` is a {db.kind} database: mdsl declares logins of {with_logins} "
                     "databases only", d.host.span, label=f"a {db.kind} database")
            return
        b = Binding(d, at, lambda message, span, help: self.err(E106, message, span, help=help))
        self.resources[d.name.name] = logins.bind(b, db)

    def login_like(self, d: A.ResourceDecl, login) -> None:
        """`like = OTHER`: another login, of a database of the same kind, that exists before the plan runs."""
        if login.like is None:
            return
        span = self._attr_span(d, "like")
        other = self.resources.get(login.like)
        if login.like not in self.decls or self.decls[login.like].kind != "login":
            self.lookup(A.Ident(login.like, span), ("login",), "a login")
        elif login.like == login.name:
            self.err(E106, f"`{login.name}` is `like` itself", span, help="name the login on the source database")
        elif other is not None:
            kind, other_kind = self.resources[login.database].kind, self.resources[other.database].kind
            if kind != other_kind:
                self.err(E106, f"`{login.name}` logs in to a {kind} database, `{other.name}` to a {other_kind} "
                         "one: grants do not translate", span, help="name a login of the same kind of database")
            elif other.like is not None:
                self.err(E106, f"`{other.name}` is made by the plan too (`like = {other.like}`): its grants are "
                         "not there to copy when the restore reads them", span, help=f"write `like = {other.like}`")

    def host(self, d: A.HostDecl, at) -> Host:
        local = bool(at.get("local", False))
        user = address = None
        if "ssh" in at:
            ssh = at["ssh"]
            user, _, address = ssh.rpartition("@")
            user = user or None
            if not address or any(c.isspace() for c in ssh) or address.startswith("-") or (user or "").startswith("-"):
                self.err(E106, f"`ssh` of host `{d.name.name}` must look like \"user@address\"",
                         self._attr_span(d, "ssh"), label="not user@address")
        if local and "ssh" in at:
            self.err(E106, f"host `{d.name.name}` is both `local` and reached over `ssh`",
                     self._attr_span(d, "local"), help="keep one of them")
        if not local and "ssh" not in at:
            self.err(E106, f"host `{d.name.name}` needs `ssh = \"user@address\"` or `local = true`", d.name.span,
                     label="how is it reached?")
        port = at.get("port", 22)
        if not 0 < port < 65536:
            self.err(E106, f"`port` of host `{d.name.name}` must be 1-65535", self._attr_span(d, "port"))
        return Host(name=d.name.name, local=local, user=user, address=address, port=port,
                    identity=at.get("identity"), known_hosts=at.get("known_hosts"), sudo=at.get("sudo", False),
                    sudo_password=at.get("sudo_password"), http_address=at.get("address") or address,
                    span=d.span)

    def _attr_span(self, d, key) -> A.Span:
        for a in d.attrs:
            if a.key.name == key:
                return a.span
        return d.name.span

    def resource(self, d: A.ResourceDecl, at) -> Resource:
        b = Binding(d, at, lambda message, span, help: self.err(E106, message, span, help=help))
        if d.derived and d.kind not in DIR_KINDS:
            self.err(E106, f"`derived` belongs to a dir, not a {d.kind}", d.derived[0].span)
        store = STORES.get(d.kind)
        if store is not None:
            return store.bind(b)
        why = docker.owner_error(at.get("owner")) if d.kind in ("dir", "file") else None
        if why:
            b.error(why, "owner")
        if d.kind in DIR_KINDS:
            derived = []
            for dv in d.derived:
                sub = normpath(dv.subpath.value)
                if not sub or sub.startswith("/") or sub.startswith("..") or sub == ".":
                    self.err(E106, "a `derived` subpath must be relative and inside the dir", dv.subpath.span)
                    continue
                derived.append(Derived(sub, dv.rebuild.value, dv.span))
            if d.kind == "volume":
                return docker.bind_volume(b, tuple(derived))
            return Dir(path=b.path(), owner=at.get("owner"), mode=at.get("mode"), derived=tuple(derived),
                       **b.common())
        if d.kind == "file":
            return File(path=b.path(), owner=at.get("owner"), mode=at.get("mode"),
                        secret=bool(at.get("secret", False)), **b.common())
        return self.service(d, at, b)

    def service(self, d: A.ResourceDecl, at, b: Binding) -> Service:
        writes = self.data_refs(at.get("writes", ()), "a service's `writes`")
        reads = self.data_refs(at.get("reads", ()), "a service's `reads`")
        systemd = at.get("systemd", ())
        run_by_docker = docker.bind_service(b)  # compose/container, checked there; None for other services
        if run_by_docker is not None:
            pass
        elif systemd and any(k in at for k in ("start", "stop", "status")):
            self.err(E106, f"service `{d.name.name}` has both `systemd` units and start/stop commands",
                     d.name.span, help="use `systemd = [...]` or `start`/`stop`/`status`, not both")
        elif not systemd and not ("start" in at and "stop" in at):
            self.err(E106, f"service `{d.name.name}` needs `systemd = [units]`, `start` and `stop` commands, "
                     "`compose` or `container`", d.name.span, label="how is it started and stopped?")
        for u in systemd:
            if not u or u.startswith("-") or any(c.isspace() for c in u) or "/" in u:
                self.err(E106, f"`{u}` is not a systemd unit name", self._attr_span(d, "systemd"))
        initially = at.get("initially")
        app, layout = self.app_of(d, at)
        return Service(systemd=tuple(systemd), start=at.get("start"), stop=at.get("stop"),
                       status=at.get("status"), writes=writes, reads=reads,
                       initially_running=(initially is None or initially.name == "running"),
                       app=app, layout=layout, **(run_by_docker or {}), **b.common())

    def app_of(self, d: A.ResourceDecl, at) -> Tuple[Optional[str], Optional[str]]:
        """`app = "NAME"` and `layout = "LAYOUT"`: a profile mdsl ships, and one of its layouts."""
        app, layout = at.get("app"), at.get("layout")
        if app is None:
            if layout is not None:
                self.err(E106, f"`layout` of service `{d.name.name}` needs `app`", self._attr_span(d, "layout"),
                         help='name the app too, e.g. `app = "mastodon"`')
            return None, None
        try:
            prof = profiles.load(app)
        except profiles.ProfileError as exc:
            self.err(E106, f"the profile of `{app}` cannot be read: {exc}", self._attr_span(d, "app"))
            return None, None
        if prof is None:
            sugg = _suggest(app, profiles.names())
            self.err(E106, f"mdsl has no profile of an app called `{app}`", self._attr_span(d, "app"),
                     label="unknown app",
                     help=f"did you mean `{sugg}`?" if sugg else "apps: " + ", ".join(profiles.names()))
            return None, None
        if layout is None or layout not in prof.layouts:
            choices = "; ".join(f'"{n}": {lay.title}' for n, lay in prof.layouts.items())
            if layout is None:
                self.err(E106, f"service `{d.name.name}` runs {prof.title} but does not say how it is installed",
                         self._attr_span(d, "app"), label="which layout?", help=f"add `layout = ...`, one of {choices}")
            else:
                sugg = _suggest(layout, prof.layouts)
                self.err(E106, f"{prof.title} has no layout `{layout}`", self._attr_span(d, "layout"),
                         label="unknown layout", help=f"did you mean `{sugg}`?" if sugg else f"layouts: {choices}")
            return None, None
        return app, layout

    def data_refs(self, refs, where) -> Tuple[str, ...]:
        out = []
        for r in refs:
            ident = A.Ident(r.name, r.span)
            if self.lookup(ident, DATA_KINDS, "a database, dir or file") is not None:
                out.append(r.name)
        return tuple(out)

    # -- steps

    def bind_steps(self, steps):
        for step in steps:
            self.bind_step(step)

    def need(self, ident: A.Ident, kinds, what):
        return self.lookup(ident, kinds, what)

    def target(self, t: A.Target, what="a location"):
        if isinstance(t, A.Location):
            if t.host.name not in self.decls:
                sugg = _suggest(t.host.name, [n for n, x in self.decls.items() if x.kind == "host"])
                self.err(E105, f"location on unknown host `{t.host.name}`", t.host.span, label="no such host",
                         help=f"did you mean `{sugg}`?" if sugg else f"declare `host {t.host.name} {{ ... }}`")
                return False
            if self.decls[t.host.name].kind != "host":
                self.err(E103, f"`{t.host.name}` is a {self.decls[t.host.name].kind}, but a location needs a host",
                         t.host.span, label="not a host")
                return False
            p = t.path.value
            if not p.startswith("/"):
                self.err(E106, "a location's path must be absolute", t.path.span, label="relative path")
                return False
            if "\0" in p or "\n" in p:
                self.err(E106, "a location's path contains a NUL or newline", t.path.span)
                return False
            return True
        d = self.lookup(t, ("file",), "a file (or `host:\"path\"`)")
        return d is not None

    def host_of(self, t: A.Target) -> Optional[str]:
        if isinstance(t, A.Location):
            return t.host.name
        d = self.decls.get(t.name)
        return getattr(d, "host", None) and d.host.name

    def store_options(self, step: A.Step) -> Tuple[Dict[str, str], Optional[str]]:
        """The options a `dump` or `restore` takes from its database's kind, and that kind."""
        if not isinstance(step, (A.Dump, A.Restore)):
            return {}, None
        decl = self.decls.get(step.db.name)
        store = STORES.get(decl.kind) if decl is not None else None
        if store is None:
            return {}, None
        return dict(store.dump_options if isinstance(step, A.Dump) else store.restore_options), store.kind

    def options(self, step: A.Step):
        extra, kind = self.store_options(step)
        allowed = dict(STEP_OPTIONS[step.keyword])
        allowed.update(extra)
        allowed.update(_COMMON_OPTIONS)
        seen = set()
        typo = misspelled_step_in(step, allowed)
        for i, opt in enumerate(step.options):
            if typo and i in typo.options:  # a misspelled step and its words: one finding for them all
                if i == typo.options.start:
                    self.err(E106, typo.message(), typo.word.span, label="not a step keyword",
                             help=f"as written, this line is read as options of the `{step.keyword}` above")
                continue
            key = opt.key.name
            if key in seen:
                self.err(E106, f"option `{key}` is given twice", opt.key.span)
                continue
            seen.add(key)
            typ = allowed.get(key)
            if typ is None:
                self.unknown_option(step, opt, allowed, kind)
            else:
                self.option_value(opt, typ)

    def unknown_option(self, step: A.Step, opt: A.Option, allowed, kind: Optional[str]) -> None:
        key = opt.key.name
        others = [k for k, store in STORES.items()
                  if k != kind and key in (store.dump_options if isinstance(step, A.Dump) else store.restore_options)]
        if key == "live":
            help = "`live` is a flag of `sync` and `replicate` only (a pass while the writers still run)"
        elif kind is not None and others:
            self.err(E106, f"`{step.keyword}` of a {kind} database has no option `{key}`", opt.key.span,
                     label=f"not for {kind}", help=f"`{key}` is for {' and '.join(others)} databases")
            return
        else:
            sugg = _suggest(key, allowed)
            help = f"did you mean `{sugg}`?" if sugg else ("options here: " + ", ".join(sorted(allowed)))
        self.err(E106, f"`{step.keyword}` has no option `{key}`", opt.key.span, label="unknown option", help=help)

    def option_value(self, opt: A.Option, typ: str) -> None:
        """Type-check one option's value against its declared type."""
        key, v = opt.key.name, opt.value
        if typ == "flag":
            if v is not None:
                self.err(E106, f"`{key}` is a bare flag: write just `{key}`", opt.span)
        elif v is None:
            self.err(E106, f"option `{key}` needs a value: `{key} = ...`", opt.span)
        elif typ == "excludes":
            for s in v.items:
                sub = normpath(s.value)
                if not sub or sub.startswith("/") or sub.startswith("..") or sub == ".":
                    self.err(E106, "an excluded subpath must be relative and inside the dir", s.span)
        elif typ.startswith("enum:"):
            choices = typ[5:].split(",")
            if not (isinstance(v, A.Ref) and v.name in choices):
                self.err(E106, f"`{key}` must be one of {', '.join(choices)}", v.span, label="not allowed")
        elif typ in ("host", "names"):
            self.option_names(key, v, typ)
        elif not {"int": isinstance(v, A.Int), "bool": isinstance(v, A.Bool), "str": isinstance(v, A.Str)}[typ]:
            self.err(E106, f"option `{key}` must be {_TYPE_WORDS[typ]}", v.span, label="wrong type")
        elif typ == "int" and v.value <= 0:
            self.err(E106, f"option `{key}` must be positive", v.span)

    def option_names(self, key: str, v, typ: str) -> None:
        """An option naming a host, or listing declared data."""
        if typ == "host":
            if isinstance(v, A.Ref):
                self.need(A.Ident(v.name, v.span), ("host",), "a host")
            else:
                self.err(E106, f"`{key}` must be a host name", v.span)
            return
        for item in v.items if isinstance(v, A.ListValue) else (v,):
            if isinstance(item, A.Ref):
                self.need(A.Ident(item.name, item.span), DATA_KINDS, "a database, dir or file")
            else:
                self.err(E106, f"`{key}` lists declared names, e.g. `{key} = [old_db]`", item.span)

    def two_hosts(self, step, a: A.Target, b: A.Target):
        ha, hb = self.host_of(a), self.host_of(b)
        if isinstance(step, A.Transfer) and ha and hb and ha == hb:
            pa = a.path.value if isinstance(a, A.Location) else None
            pb = b.path.value if isinstance(b, A.Location) else None
            if pa is not None and pa == pb or isinstance(a, A.Ident) and isinstance(b, A.Ident) and a.name == b.name:
                self.err(E105, "`transfer` copies between two places, but both name the same file",
                         step.span, help="name the target host or a different path")
        if isinstance(step, A.Move) and ha and hb and ha != hb:
            self.err(E105, f"`move` renames on one host, but this goes from `{ha}` to `{hb}`", step.span,
                     help="use `transfer` to copy between hosts (then `delete` the source once verified)")

    def bind_step(self, step: A.Step):
        self.options(step)
        bound = {}
        for attr, role in _STEP_NAMES.get(type(step), ()):
            value = getattr(step, attr)
            if role == "location":
                bound[attr] = self.target(value)
            else:
                for ident in value if isinstance(value, tuple) else (value,):
                    bound[attr] = self.need(ident, *_ROLES[role])
        if isinstance(step, A.Sync) and bound["source"] is not None and bound["source"] is bound["dest"]:
            self.err(E105, "`sync` copies a dir to another, but both are the same", step.span)
        elif isinstance(step, A.Replicate) and bound["source"] is not None and bound["dest"] is not None:
            self.replicate_pair(step, bound["source"], bound["dest"])
        elif isinstance(step, (A.Transfer, A.Move)) and bound["source"] and bound["dest"]:
            self.two_hosts(step, step.source, step.dest)
        elif isinstance(step, (A.Parallel, A.Sequence)):
            self.bind_steps(step.steps)

    def replicate_pair(self, step: A.Replicate, src: A.Decl, dst: A.Decl) -> None:
        """Two distinct databases of one kind, a kind that can replicate."""
        if src is dst:
            self.err(E105, "`replicate` copies a database into another, but both are the same", step.span)
        elif src.kind != dst.kind:
            self.err(E105, f"`replicate` needs two databases of one kind: {src.name.name} is {src.kind}, "
                           f"{dst.name.name} is {dst.kind}", step.span, help="copy with `dump` and `restore`")
        elif not STORES[src.kind].replicates:
            self.err(E106, f"{STORES[src.kind].title} databases cannot be replicated by mdsl (yet)",
                     step.span, label="no replication", help="copy with `dump` and `restore` after the stop")

    def bind_labels(self):
        seen = {}
        for step in A.walk_steps(self.plan.steps):
            if step.label is None:
                continue
            if step.label.name in seen:
                self.err(E104, f"label `{step.label.name}` is used twice", step.label.span,
                         notes=(f"first used at line {seen[step.label.name].line}",),
                         help="labels name one step each (for `apply --from`)")
            else:
                seen[step.label.name] = step.label.span


def resolve(plan: A.Plan) -> BoundPlan:
    """Bind names, type attributes and options; E1xx findings are returned on the bound plan."""
    r = _Resolver(plan)
    r.bind_names()
    r.bind_decls()
    r.bind_steps(plan.steps)
    r.bind_labels()
    by_host_path: Dict[str, List[Resource]] = {}
    for res in r.resources.values():
        if getattr(res, "path", None):
            by_host_path.setdefault(res.host, []).append(res)
    by_path: Dict[Tuple[str, str], List[Resource]] = {}
    for rs in by_host_path.values():
        for res in rs:
            by_path.setdefault((res.host, res.path), []).append(res)
        rs.sort(key=lambda x: -len(x.path))
    return BoundPlan(plan=plan, hosts=r.hosts, resources=r.resources, findings=tuple(r.findings),
                     by_host_path=by_host_path, by_path=by_path)
