"""The plan `mdsl init` writes for one app it found: pure (what discover read in, plan text out).

The order is the safe one the checker proves: a live pre-sync of the big dirs while the app
serves, the app's own commands before its stop (Nextcloud's maintenance mode), the stop, the
database dump beside the final sync or the archives in one `parallel` block, the copies, the
secrets before the first start, the restore into an emptied database, the app's commands after
the restore, the first start, the commands after it (Gitea's hooks), a check through the new box,
and only then the DNS change. Every declaration says what it holds in a comment; secrets are
named (`env(...)`), never written.

Each thing the app keeps (its database, a data dir, a config file, the app itself) is described
once as a `_Pair`: what it holds, and its attributes on the old and the new host. One writer turns
every pair into plan text, and `mdsl fmt` lines the attributes up.
"""

from __future__ import annotations

import datetime
import posixpath
from typing import List, Optional, Sequence, Tuple

from attrs import frozen

from mdsl.apps.profile import Layout
from mdsl.init.discover import AppFound, ConfigFile, Database, DataDir, HostFacts
from mdsl.run.console import human_bytes
from mdsl.stores.registry import STORES
from mdsl.syntax.format import format_text
from mdsl.syntax.format import string_literal as quoted

PRESYNC_ABOVE = 1 << 30  # a dir this big is pre-synced live: its copy would be most of the downtime

# An attribute as the plan writes it: key, value as plan text, and the trailing comment that says why
# ("" for none). A value of None leaves the attribute out.
Attribute = Tuple[str, Optional[str], str]


@frozen
class Endpoint:
    """How the plan reaches a host: `ssh = "user@address"`, its port, key and known_hosts."""

    user: Optional[str]
    address: str
    port: int = 22
    identity: Optional[str] = None
    known_hosts: Optional[str] = None

    @property
    def login(self) -> str:
        return f"{self.user}@{self.address}" if self.user else self.address


def size_text(n: Optional[int]) -> str:
    """1536 -> `1.5 KiB`; None -> `size unknown`."""
    return "size unknown" if n is None else human_bytes(n)


def _cap(text: str) -> str:
    """The sentence with a capital, unless it starts with a name (`config.php`, `app.ini`)."""
    first = text.split(" ", 1)[0]
    return text if any(c in first for c in "._/") else text[:1].upper() + text[1:]


def password_env(app: str) -> str:
    """The environment variable the plan reads the database password from: MASTODON_DB_PASSWORD."""
    return app.upper().replace("-", "_") + "_DB_PASSWORD"


def _text(value) -> Optional[str]:
    """An attribute's value as plan text: a string quoted, a number as it is; None (left out) when unset."""
    if value is None or value == "":
        return None
    return quoted(value) if isinstance(value, str) else str(value)


def _strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(quoted(v) for v in values) + "]"


def _names(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _declaration(head: str, attributes: Sequence[Attribute], one_line: bool = False) -> List[str]:
    """`head { ... }` with the attributes that have a value, one a line (or all on one line: hosts)."""
    lines = [f"{key} = {value}" + (f"  # {why}" if why else "") for key, value, why in attributes
             if value is not None]
    if one_line:
        return [f"{head} {{ " + "  ".join(lines) + " }"]
    return [f"{head} {{", *(f"  {line}" for line in lines), "}"]


def _host(name: str, endpoint: Endpoint) -> List[str]:
    return _declaration(f"host {name}", [("ssh", quoted(endpoint.login), ""), ("port", str(endpoint.port), ""),
                                         ("identity", _text(endpoint.identity), ""),
                                         ("known_hosts", _text(endpoint.known_hosts), "")], one_line=True)


@frozen
class _Pair:
    """One thing the app keeps, declared on both hosts as `old_<role>` and `new_<role>`: the comment
    lines above each declaration (what it holds), its kind, and its attributes on each side."""

    kind: str
    role: str
    about: Tuple[str, ...]
    old: Tuple[Attribute, ...]
    new: Tuple[Attribute, ...]
    about_new: Tuple[str, ...] = ()

    def lines(self) -> List[str]:
        return ["", *(f"# {line}" for line in self.about),
                *_declaration(f"{self.kind} old_{self.role} on old", self.old), "",
                *(f"# {line}" for line in self.about_new),
                *_declaration(f"{self.kind} new_{self.role} on new", self.new)]


_FRESH: Attribute = ("fresh", "true", "")
_SECRET: Attribute = ("secret", "true", "")

# A database server's login as the plan declares it: plan attribute <- what the config said.
_LOGIN_ATTRIBUTES = (("database", "name"), ("user", "user"), ("tcp", "tcp"), ("socket", "socket"), ("port", "port"))


def _login(db: Database, app: str) -> List[Attribute]:
    """How the plan logs in to a database server: as the config does, its password read at apply time."""
    attributes = [(key, _text(getattr(db, field)), "") for key, field in _LOGIN_ATTRIBUTES]
    if db.password_key:
        attributes.append(("password", f"env({quoted(password_env(app))})",
                           f"{db.password_key} of the config: read at apply time"))
    elif db.user:
        attributes.append(("run_as", quoted(db.user), "no password in the config: peer login as the app's OS user"))
    return attributes


def _database(app: AppFound, tdb: Database, holds: str) -> _Pair:
    """The database: SQLite by its file, a server by its login; the new one is emptied by the restore."""
    db = app.database
    about = (f"{_cap(holds)} ({STORES[db.store].title}, {size_text(db.size)}).",)
    if STORES[db.store].is_file:
        return _Pair(db.store, "db", about, (("path", quoted(db.path), ""),), (("path", quoted(db.path), ""), _FRESH))
    return _Pair(db.store, "db", about, tuple(_login(db, app.profile.name)), (*_login(tdb, app.profile.name), _FRESH),
                 about_new=("fresh: whatever the new server holds under this name is disposable "
                            "(the restore replaces it)",))


def _data_dir(app: AppFound, d: DataDir, target_path: str, presynced: bool) -> _Pair:
    """A data dir: a pre-synced one mirrors the old host, so what the new one holds is disposable."""
    role = app.profile.roles[d.role]
    about = [f"{_cap(role.holds)} ({size_text(d.size)})."]
    about += [f"{der.subpath}/ is copied too: {der.holds}; without it {der.lost}." for der in role.derived]
    if d.nested:
        about.append(f"It holds {', '.join(d.nested)}: copied with it.")
    owner = ("owner", _text(d.owner), "")
    fresh = ("fresh", "true" if presynced else None, "mirrored from the old host: what it holds now is disposable")
    return _Pair("dir", d.role, tuple(about), (("path", quoted(d.path), ""), owner),
                 (("path", quoted(target_path), ""), owner, fresh))


def _config_file(app: AppFound, c: ConfigFile, target_path: str) -> _Pair:
    """A file of secrets: copied as it is, never shown, and as private on the new host as on the old."""
    about = [f"{_cap(app.profile.roles[c.role].holds)}."]
    about += [f"{key} lost: {app.profile.secrets[key].lost}." for key in c.secrets]
    about.append("The file is copied as it is; its content is never shown (secret = true).")
    moved = (f"Where {app.target_layout.title} reads it (list it in the module's options if it asks).",) \
        if target_path != c.path else ()
    return _Pair("file", c.role, tuple(about), (("path", quoted(c.path), ""), _SECRET),
                 (("path", quoted(target_path), ""), ("owner", _text(c.owner), ""),
                  ("mode", quoted(_secret_mode(c.mode)), ""), _SECRET), about_new=moved)


def _service(app: AppFound, source: Endpoint, data: Sequence[str], reads: Sequence[str]) -> _Pair:
    """The app as its units run it, writing its data and reading its files; the new one starts stopped."""
    def side(prefix: str, layout: Layout, units: Sequence[str]) -> List[Attribute]:
        return [("app", quoted(app.profile.name), ""), ("layout", quoted(layout.name), ""),
                ("systemd", _strings(units), ""), ("writes", _names([prefix + x for x in data]), ""),
                ("reads", _names([prefix + x for x in reads]), "")]

    about = (f"{app.profile.title} as the units found on {source.address} run it "
             "(unit files under /etc/systemd or /lib/systemd).",)
    return _Pair("service", "app", about, tuple(side("old_", app.layout, app.units)),
                 (*side("new_", app.target_layout, app.target_units), ("initially", "stopped", "")))


@frozen
class _Target:
    """Where each piece goes on the new host."""

    db: Optional[Database]
    dirs: Tuple[Tuple[DataDir, str], ...]  # source dir, path on the target
    files: Tuple[Tuple[ConfigFile, str], ...]  # the config file first, then the app's other files

    @property
    def config(self) -> str:
        """Where the config file goes on the target."""
        return self.files[0][1]


def _target_places(app: AppFound) -> _Target:
    same = app.target_layout.name == app.layout.name
    lay: Layout = app.target_layout

    def place_path(role: str, default: str) -> str:
        place = lay.places.get(role)
        return default if same or place is None or not place.path else place.path

    db = app.database
    if db is not None and not same and not STORES[db.store].is_file:
        place = lay.places.get(next(r for r in app.profile.roles.values() if r.kind == "database").name)
        if place is not None and place.database:
            peer = bool(place.auth and "peer" in place.auth)
            db = Database(db.store, place.database, place.user, password_key=None if peer else db.password_key)
    dirs = tuple((d, place_path(d.role, d.path)) for d in app.dirs)
    files = []
    for f in (app.config, *app.files):
        fplace, path = lay.places.get(f.role), f.path
        if not same and fplace is not None and fplace.path:
            path = posixpath.join(fplace.path, posixpath.basename(path).lstrip(".") or "config") \
                if (fplace.kind or "file") == "dir" else fplace.path
        files.append((f, path))
    return _Target(db, dirs, tuple(files))


# The programs the new host needs for the app's database, by store kind.
_DB_TOOLS = {"postgres": (("psql", "pg_restore"), "PostgreSQL"), "mysql": (("mysql", "mariadb"), "MySQL or MariaDB")}


def _missing_tools(app: AppFound, tfacts: HostFacts) -> List[str]:
    """What the new host lacks for this plan, when its tools were seen at all."""
    out = []
    db = app.database
    if db is not None and db.store in _DB_TOOLS and tfacts.tools:
        names, server = _DB_TOOLS[db.store]
        if not any(t in tfacts.tools for t in names):
            out.append(f"new has no {' or '.join(names)}: install {server} there first (apply's preflight checks it).")
    if tfacts.tools and "rsync" not in tfacts.tools:
        out.append("new has no rsync: install it first (the copies use it).")
    return out


def _secret_mode(mode: Optional[str]) -> str:
    """The source's mode when no other user may read the file, else 0600."""
    if mode and len(mode) >= 3 and mode[-1] == "0" and mode[-2] in "04":
        return mode.zfill(4)
    return "0600"


def _run_step(cmd, host: str, layout: Layout, config_path: str, touches: str = "") -> List[str]:
    """The app's command as a `run` step on `host`, spelled as the layout spells it, under the comment
    that says why; a relative program (`bin/tootctl`) runs in the app's dir as the layout's user."""
    text, run_as = cmd.text_for(layout.name), None
    words = [w for w in text.split() if "=" not in w]
    if words and words[0].startswith("bin/"):
        text, run_as = f"cd {posixpath.dirname(config_path)} && {text}", layout.user
    options = (f" {touches}" if touches else "") + (f" run_as = {quoted(run_as)}" if run_as else "")
    return [f"# {cmd.why}", f"run {host} {quoted(text)}{options}"]


def write_plan(app: AppFound, source: Endpoint, target: Endpoint, sfacts: HostFacts, tfacts: HostFacts, *,
               presync_above: int = PRESYNC_ABOVE, stage: Optional[str] = None, today: Optional[str] = None) -> str:
    """The plan text for moving `app` from `source` to `target` (canonical layout, `mdsl fmt`)."""
    p, name = app.profile, app.profile.name
    stage = stage or f"/var/tmp/mdsl-{name}"
    today = today or datetime.date.today().isoformat()
    tgt = _target_places(app)
    same = app.target_layout.name == app.layout.name
    out: List[str] = []
    add = out.append

    # ---------------------------------------------------------------- header
    add(f"# Written by `mdsl init` on {today} from what the two hosts run; nothing was changed on either.")
    add("# Read it, adjust what your setup does differently, then `mdsl check` and `mdsl apply`.")
    add("#")
    add(f"# old: {source.login} ({sfacts.os}) runs {p.title}, {app.layout.title} (layout `{app.layout.name}`).")
    add(f"# new: {target.login} ({tfacts.os}{', NixOS' if tfacts.nixos else ''}"
        f"{', Docker' if tfacts.docker else ''}): layout `{app.target_layout.name}`, "
        + ("found installed there." if app.target_has_app else "not found installed there: install "
           f"{p.title} on it first ({app.target_layout.title}), with its units stopped."))
    if not same:
        add(f"#   {app.target_layout.title}: the data goes where that layout reads it.")
    for line in _missing_tools(app, tfacts):
        add(f"# {line}")
    for inv in p.invariants:  # what the move must keep (the restore's `replace` keeps the empty database)
        if inv.kind != "empty-database" and (not inv.layouts or app.layout.name in inv.layouts):
            add(f"# {_cap(inv.help or inv.broken)}.")
    add(f"# {p.title}'s profile: `mdsl explain {name}` (each fact with its source).")
    add("")
    add(f"plan {quoted(f'{p.title}: {source.address} -> {target.address}')}")
    add("")
    out += _host("old", source)
    out += _host("new", target)

    # ---------------------------------------------------------------- declarations
    db = app.database
    declared_db = db is not None and db.inside is None  # a file database inside a data dir travels with it
    db_role = next((r for r in p.roles.values() if r.kind == "database"), None)
    if db is not None and not declared_db:
        add("")
        add(f"# {_cap(db_role.holds)}: {STORES[db.store].title} at {db.path}, inside the {db.inside} dir, "
            f"copied with it while {p.title} is stopped.")
    big = {d.role for d in app.dirs if d.size is not None and d.size >= presync_above}
    pairs = [_database(app, tgt.db, db_role.holds)] if declared_db else []
    pairs += [_data_dir(app, d, tpath, d.role in big) for d, tpath in tgt.dirs]
    pairs += [_config_file(app, c, tpath) for c, tpath in tgt.files]
    data = (["db"] if declared_db else []) + [d.role for d, _ in tgt.dirs]
    pairs.append(_service(app, source, data, [c.role for c, _ in tgt.files]))
    for pair in pairs:
        out.extend(pair.lines())

    add("")
    add("steps {")
    out.extend("  " + line for line in _steps(app, target, source, tgt, big, declared_db, stage))
    add("}")
    return format_text("\n".join(out) + "\n", f"<{name}.plan>")


def _steps(app: AppFound, target: Endpoint, source: Endpoint, tgt: _Target, big: set, declared_db: bool,
           stage: str) -> List[str]:
    """The steps, in the safe order (see the module's docstring)."""
    p, c = app.profile, app.config
    steps: List[str] = []
    s = steps.append
    for d, _ in tgt.dirs:
        if d.role in big:
            s(f"# {d.path} is {size_text(d.size)}: copied while {p.title} still serves; the final sync after the "
              "stop copies only what changed. rsync runs on old and logs in to new over SSH itself (old must "
              "reach new); below --presync-above an archive goes through this machine instead")
            s(f"presync_{d.role}: sync old_{d.role} to new_{d.role} live")
    for cmd in p.commands:
        if cmd.when == "before-stop":
            steps.extend(_run_step(cmd, "old", app.layout, c.path))
    s("freeze: stop old_app")
    steps.extend(_copies(app, tgt, big, declared_db, stage))
    steps.extend(_after(app, tgt, declared_db))
    if app.url:
        s("# through the new box, whatever DNS says, before DNS moves")
        s(f"verify http {quoted(app.url)} via = new status = 200")
        host = app.url.split("//", 1)[1].split("/", 1)[0]
        dns = f"Point the DNS records of {host} at {target.address}; {p.title} stays stopped on {source.address}"
        s(f"confirm {quoted(dns)}")
    else:
        s("verify run new " + quoted("systemctl is-active --quiet -- " + " ".join(app.target_units)))
        # no URL in the config: test the app through the new box by hand before moving its name
        s(f"confirm {quoted(f'Test {p.title} on {target.address} by hand, then move its name there')}")
    return steps


def _copies(app: AppFound, tgt: _Target, big: set, declared_db: bool, stage: str) -> List[str]:
    """The dump beside the final syncs or the archives (one `parallel` block), the copies, the restore."""
    dump = quoted(f"{stage}/{app.profile.name}.dump")
    archive = {d.role: quoted(f"{stage}/{d.role}.tar.zst") for d, _ in tgt.dirs}
    members = [f"dump old_db to old:{dump}"] if declared_db else []
    for d, _ in tgt.dirs:
        if d.role in big:
            members.append(f"final_{d.role}: sync old_{d.role} to new_{d.role}")
        else:
            members.append(f"archive old_{d.role} to old:{archive[d.role]} compress = zstd")
    steps = ["parallel {", *("  " + m for m in members), "}"] if len(members) > 1 else members
    if declared_db:
        steps.append(f"transfer old:{dump} to new:{dump}")
    small = [d.role for d, _ in tgt.dirs if d.role not in big]
    steps += [f"transfer old:{archive[role]} to new:{archive[role]}" for role in small]
    steps.append(f"# the secrets reach the new host before {app.profile.title} first starts there")
    steps += [f"transfer old_{f.role} to new_{f.role}" for f, _ in tgt.files]
    if declared_db:
        steps.append(f"restore new:{dump} into new_db replace")
    steps += [f"extract new:{archive[role]} into new_{role}" for role in small]
    return steps


def _after(app: AppFound, tgt: _Target, declared_db: bool) -> List[str]:
    """The app's commands after the restore and before its first start, the start, the commands after it."""
    p = app.profile
    steps: List[str] = []
    for when in ("after-restore", "before-start", "after-start"):
        if when == "after-start":
            steps.append("cutover: start new_app")
        for cmd in p.commands:
            if cmd.when != when or cmd.id in app.target_layout.does:
                continue
            if cmd.needs and not any(o.id == cmd.needs and o.when == "before-stop" for o in p.commands):
                continue
            # before the start the command works on the restored database (Synapse's TRUNCATE); after it,
            # on the running app's behalf
            touches = "writes" if declared_db and when != "after-start" else "reads"
            what = "new_db" if declared_db else f"new_{app.config.role}"
            steps.extend(_run_step(cmd, "new", app.target_layout, tgt.config, f"{touches} = [{what}]"))
    return steps
