"""The plan `mdsl init` writes for one app it found: pure (what discover read in, plan text out).

The order is the safe one the checker proves: a live pre-sync of the big dirs while the app
serves, the app's own commands before its stop (Nextcloud's maintenance mode), the stop, the
database dump beside the final sync or the archives in one `parallel` block, the copies, the
secrets before the first start, the restore into an emptied database, the app's commands after
the restore, the first start, the commands after it (Gitea's hooks), a check through the new box,
and only then the DNS change. Every declaration says what it holds in a comment; secrets are
named (`env(...)`), never written.
"""

from __future__ import annotations

import datetime
import posixpath
from typing import Iterable, List, Optional, Tuple

from attrs import frozen

from mdsl.apps.profile import Layout
from mdsl.init.discover import AppFound, ConfigFile, Database, DataDir, HostFacts
from mdsl.syntax.format import format_text

PRESYNC_ABOVE = 1 << 30  # a dir this big is pre-synced live: its copy would be most of the downtime
STORE_WORDS = {"postgres": "PostgreSQL", "mysql": "MySQL/MariaDB", "sqlite": "SQLite"}


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


def q(text: str) -> str:
    """A plan string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def size_text(n: Optional[int]) -> str:
    """1536 -> `1.5 KiB`; None -> `size unknown`."""
    if n is None:
        return "size unknown"
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def _cap(text: str) -> str:
    """The sentence with a capital, unless it starts with a name (`config.php`, `app.ini`)."""
    first = text.split(" ", 1)[0]
    return text if any(c in first for c in "._/") else text[:1].upper() + text[1:]


def password_env(app: str) -> str:
    """The environment variable the plan reads the database password from: MASTODON_DB_PASSWORD."""
    return app.upper().replace("-", "_") + "_DB_PASSWORD"


def _host(name: str, e: Endpoint) -> str:
    parts = [f"ssh = {q(e.login)}", f"port = {e.port}"]
    if e.identity:
        parts.append(f"identity = {q(e.identity)}")
    if e.known_hosts:
        parts.append(f"known_hosts = {q(e.known_hosts)}")
    return f"host {name} {{ " + "  ".join(parts) + " }"


def _db_lines(db: Database, app: str) -> List[str]:
    out = [f"database = {q(db.name)}"] if db.name else []
    if db.user:
        out.append(f"user     = {q(db.user)}")
    if db.tcp:
        out.append(f"tcp      = {q(db.tcp)}")
    if db.socket:
        out.append(f"socket   = {q(db.socket)}")
    if db.port:
        out.append(f"port     = {db.port}")
    if db.password_key:
        out.append(f"password = env({q(password_env(app))})  # {db.password_key} of the config: read at apply time")
    elif db.user:
        out.append(f"run_as   = {q(db.user)}  # no password in the config: peer login as the app's OS user")
    return out


def _block(kind: str, name: str, host: str, lines: Iterable[str]) -> List[str]:
    return [f"{kind} {name} on {host} {{", *(f"  {line}" for line in lines), "}"]


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
    if db is not None and not same and db.store != "sqlite":
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


def _command_text(app: AppFound, cmd, layout: Layout, config_path: str) -> Tuple[str, Optional[str]]:
    """The command as the layout spells it; a relative program (`bin/tootctl`) runs in the app's dir
    as the layout's user."""
    text = cmd.text_for(layout.name)
    words = [w for w in text.split() if "=" not in w]
    if words and words[0].startswith("bin/"):
        return f"cd {posixpath.dirname(config_path)} && {text}", layout.user
    return text, None


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
    add(f"plan {q(f'{p.title}: {source.address} -> {target.address}')}")
    add("")
    add(_host("old", source))
    add(_host("new", target))

    # ---------------------------------------------------------------- declarations
    db, tdb = app.database, tgt.db
    db_role = next((r for r in p.roles.values() if r.kind == "database"), None)
    declared_db = db is not None and db.store != "sqlite" or (db is not None and db.inside is None)
    if db is not None and declared_db:
        add("")
        add(f"# {_cap(db_role.holds)} ({STORE_WORDS.get(db.store, db.store)}, {size_text(db.size)}).")
        if db.store == "sqlite":
            out.extend(_block("sqlite", "old_db", "old", [f"path = {q(db.path)}"]))
            add("")
            out.extend(_block("sqlite", "new_db", "new", [f"path = {q(db.path)}", "fresh = true"]))
        else:
            out.extend(_block(db.store, "old_db", "old", _db_lines(db, name)))
            add("")
            add("# fresh: whatever the new server holds under this name is disposable (the restore replaces it)")
            out.extend(_block(db.store, "new_db", "new", [*_db_lines(tdb, name), "fresh = true"]))
    elif db is not None:
        add("")
        add(f"# {_cap(db_role.holds)}: SQLite at {db.path}, inside the {db.inside} dir, copied with it while "
            f"{p.title} is stopped.")

    big = {d.role for d in app.dirs if d.size is not None and d.size >= presync_above}
    for d, tpath in tgt.dirs:
        role = p.roles[d.role]
        add("")
        add(f"# {_cap(role.holds)} ({size_text(d.size)}).")
        for der in role.derived:
            add(f"# {der.subpath}/ is copied too: {der.holds}; without it {der.lost}.")
        if d.nested:
            add(f"# It holds {', '.join(d.nested)}: copied with it.")
        own = [f"owner = {q(d.owner)}"] if d.owner else []
        out.extend(_block("dir", f"old_{d.role}", "old", [f"path  = {q(d.path)}", *own]))
        add("")
        fresh = ["fresh = true  # mirrored from the old host: what it holds now is disposable"] \
            if d.role in big else []
        out.extend(_block("dir", f"new_{d.role}", "new", [f"path  = {q(tpath)}", *own, *fresh]))

    for c, tpath in tgt.files:
        role = p.roles[c.role]
        add("")
        add(f"# {_cap(role.holds)}.")
        for key in c.secrets:
            add(f"# {key} lost: {p.secrets[key].lost}.")
        add("# The file is copied as it is; its content is never shown (secret = true).")
        own = [f"owner  = {q(c.owner)}"] if c.owner else []
        out.extend(_block("file", f"old_{c.role}", "old", [f"path   = {q(c.path)}", "secret = true"]))
        add("")
        if tpath != c.path:
            add(f"# Where {app.target_layout.title} reads it (list it in the module's options if it asks).")
        out.extend(_block("file", f"new_{c.role}", "new", [f"path   = {q(tpath)}", *own,
                                                            f"mode   = {q(_secret_mode(c.mode))}", "secret = true"]))
    reads = ", ".join(f"old_{c.role}" for c, _ in tgt.files)

    data = (["old_db"] if declared_db else []) + [f"old_{d.role}" for d, _ in tgt.dirs]
    add("")
    add(f"# {p.title} as the units found on {source.address} run it (unit files under /etc/systemd or /lib/systemd).")
    out.extend(_block("service", "old_app", "old", [
        f"app     = {q(name)}", f"layout  = {q(app.layout.name)}",
        "systemd = [" + ", ".join(q(u) for u in app.units) + "]",
        "writes  = [" + ", ".join(data) + "]", f"reads   = [{reads}]"]))
    add("")
    add("service new_app on new {")
    for line in (f"app       = {q(name)}", f"layout    = {q(app.target_layout.name)}",
                 "systemd   = [" + ", ".join(q(u) for u in app.target_units) + "]",
                 "writes    = [" + ", ".join(x.replace("old_", "new_", 1) for x in data) + "]",
                 f"reads     = [{reads.replace('old_', 'new_')}]", "initially = stopped"):
        add(f"  {line}")
    add("}")

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
            text, run_as = _command_text(app, cmd, app.layout, c.path)
            s(f"# {cmd.why}")
            s(f"run old {q(text)}" + (f" run_as = {q(run_as)}" if run_as else ""))
    s("freeze: stop old_app")
    steps.extend(_copies(app, tgt, big, declared_db, stage))
    steps.extend(_after(app, tgt, declared_db))
    if app.url:
        s("# through the new box, whatever DNS says, before DNS moves")
        s(f"verify http {q(app.url)} via = new status = 200")
        host = app.url.split("//", 1)[1].split("/", 1)[0]
        dns = f"Point the DNS records of {host} at {target.address}; {p.title} stays stopped on {source.address}"
        s(f"confirm {q(dns)}")
    else:
        s("verify run new " + q("systemctl is-active --quiet -- " + " ".join(app.target_units)))
        # no URL in the config: test the app through the new box by hand before moving its name
        s(f"confirm {q(f'Test {p.title} on {target.address} by hand, then move its name there')}")
    return steps


def _copies(app: AppFound, tgt: _Target, big: set, declared_db: bool, stage: str) -> List[str]:
    """The dump beside the final syncs or the archives (one `parallel` block), the copies, the restore."""
    name = app.profile.name
    dump = f"{stage}/{name}.dump"
    members = [f"dump old_db to old:{q(dump)}"] if declared_db else []
    for d, _ in tgt.dirs:
        if d.role in big:
            members.append(f"final_{d.role}: sync old_{d.role} to new_{d.role}")
        else:
            members.append(f"archive old_{d.role} to old:{q(f'{stage}/{d.role}.tar.zst')} compress = zstd")
    steps = ["parallel {", *("  " + m for m in members), "}"] if len(members) > 1 else members
    if declared_db:
        steps.append(f"transfer old:{q(dump)} to new:{q(dump)}")
    small = [d for d, _ in tgt.dirs if d.role not in big]
    steps += [f"transfer old:{q(f'{stage}/{d.role}.tar.zst')} to new:{q(f'{stage}/{d.role}.tar.zst')}" for d in small]
    steps.append(f"# the secrets reach the new host before {app.profile.title} first starts there")
    steps += [f"transfer old_{f.role} to new_{f.role}" for f, _ in tgt.files]
    if declared_db:
        steps.append(f"restore new:{q(dump)} into new_db replace")
    steps += [f"extract new:{q(f'{stage}/{d.role}.tar.zst')} into new_{d.role}" for d in small]
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
            text, run_as = _command_text(app, cmd, app.target_layout, tgt.config)
            # before the start the command works on the restored database (Synapse's TRUNCATE); after it,
            # on the running app's behalf
            touches = "writes" if declared_db and when != "after-start" else "reads"
            what = "new_db" if declared_db else f"new_{app.config.role}"
            steps.append(f"# {cmd.why}")
            steps.append(f"run new {q(text)} {touches} = [{what}]" + (f" run_as = {q(run_as)}" if run_as else ""))
    return steps
