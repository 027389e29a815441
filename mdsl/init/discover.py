"""What two hosts run, read over the same SSH backend apply uses (host keys checked), without
changing anything on either: every probe is a read (`cat`, `test`, `ls`, `stat`, `du`, `ss`,
`docker ps`, a `select` of the database's size).

The source's installed apps are found by the profiles' fingerprints (absolute paths of their
layouts); the app's own config file (`.env.production`, `config.php`, `app.ini`) is read into
memory, where `mdsl.init.configs` takes the database login and the data paths from it. Its secret
values never leave this process: the plan names them as `env(...)`, and a password reaches the
database only on a probe's stdin.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from fnmatch import fnmatchcase
from typing import Dict, List, Optional, Tuple

from attrs import field, frozen

from mdsl.apps import profile as profiles
from mdsl.apps.profile import Layout, Profile
from mdsl.init import configs
from mdsl.run.backend import Backend

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
STORE_SPELLINGS = {"sqlite3": "sqlite", "sqlite": "sqlite", "pgsql": "postgres", "postgres": "postgres",
                   "postgresql": "postgres", "psycopg2": "postgres", "mysql": "mysql", "mariadb": "mysql"}
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
DEFAULT_SOCKETS = {"postgres": "/var/run/postgresql", "mysql": "/run/mysqld/mysqld.sock"}


class DiscoveryError(Exception):
    """A host that cannot be read as needed: the message names the host and the path."""


@frozen
class HostFacts:
    """What a host is: its OS, whether it is NixOS or runs Docker, its unit files, what listens."""

    name: str
    os: str  # PRETTY_NAME of /etc/os-release, or "unknown"
    nixos: bool
    docker: bool
    tools: Tuple[str, ...]
    unit_files: Tuple[str, ...]  # names, e.g. mastodon-web.service
    containers: Tuple[str, ...] = ()
    listening: Tuple[str, ...] = ()  # addr:port of listening TCP sockets
    fingerprints: Tuple[str, ...] = ()  # the profiles' fingerprint paths present here
    own_units: Tuple[str, ...] = ()  # the administrator's units (/etc/systemd/system), for "what it saw"


@frozen
class Database:
    """The app's database as its config names it. `password_key` is the config key that holds a
    password (its value is not kept here: the plan reads it from the environment at apply time)."""

    store: str
    name: Optional[str] = None
    user: Optional[str] = None
    tcp: Optional[str] = None  # "addr:port"
    socket: Optional[str] = None
    port: Optional[int] = None  # with a socket, a port other than the default
    path: Optional[str] = None  # SQLite's file
    password_key: Optional[str] = None
    inside: Optional[str] = None  # the dir role whose tree holds it (SQLite in Gitea's data dir)
    size: Optional[int] = None


@frozen
class DataDir:
    """A data dir of the app: its role, path, owner ("user:group"), size and the subpaths it holds
    that are copied as other roles (Gitea's repositories inside its data dir)."""

    role: str
    path: str
    owner: Optional[str]
    size: Optional[int]
    nested: Tuple[str, ...] = ()


@frozen
class ConfigFile:
    """The app's config file: path, owner, mode, and the secret keys of the profile found in it."""

    role: str
    path: str
    owner: Optional[str]
    mode: Optional[str]
    secrets: Tuple[str, ...]
    settings: Dict[str, str] = field(repr=False, eq=False)  # holds secret values: never printed


@frozen
class AppFound:
    """One installed app on the source, and where it goes on the target."""

    profile: Profile
    layout: Layout
    units: Tuple[str, ...]
    config: ConfigFile
    database: Optional[Database]
    dirs: Tuple[DataDir, ...]
    url: Optional[str]
    target_layout: Layout
    target_units: Tuple[str, ...]
    target_has_app: bool
    files: Tuple[ConfigFile, ...] = ()  # the app's other files (Synapse's signing key), settings empty


# ---------------------------------------------------------------- probes


def _run(backend: Backend, command: str, stdin: Optional[bytes] = None) -> Tuple[int, str]:
    r = backend.run(command, stdin=stdin, timeout=60)
    return r.exit, r.stdout


def host_facts(backend: Backend, fingerprints: List[str]) -> HostFacts:
    """The OS, NixOS, Docker, tools, unit files, containers, listening ports, fingerprints present."""
    _, os_text = _run(backend, "cat /etc/os-release 2>/dev/null; test -e /etc/NIXOS && echo MDSL_NIXOS=1; :")
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_text, re.M)
    nixos = "MDSL_NIXOS=1" in os_text or bool(re.search(r"^ID=\"?nixos", os_text, re.M))
    tools = ("docker", "psql", "pg_dump", "pg_restore", "mysql", "mariadb", "sqlite3", "rsync", "zstd", "systemctl")
    probe = "for t in " + " ".join(tools) + '; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done; :'
    _, found = _run(backend, probe)
    have = tuple(t for t in found.split() if t in tools)
    dirs = " ".join(shlex.quote(d) for d in UNIT_DIRS)
    _, units = _run(backend, f"for d in {dirs}; do ls -1 \"$d\" 2>/dev/null; done; :")
    unit_files = tuple(sorted({u for u in units.split() if re.fullmatch(r"[\w@.:-]+\.(service|target|timer)", u)}))
    containers: Tuple[str, ...] = ()
    if "docker" in have:
        _, ps = _run(backend, "docker ps --format '{{.Names}} ({{.Image}})' 2>/dev/null; :")
        containers = tuple(line for line in ps.splitlines() if line.strip())
    _, ss = _run(backend, "ss -Hltn 2>/dev/null; :")
    listening = tuple(sorted({cols[3] for cols in (line.split() for line in ss.splitlines()) if len(cols) >= 4}))
    present: Tuple[str, ...] = ()
    if fingerprints:
        quoted = " ".join(shlex.quote(f) for f in fingerprints)
        _, out = _run(backend, f'for f in {quoted}; do test -e "$f" && printf "%s\\n" "$f"; done; :')
        present = tuple(line for line in out.splitlines() if line)
    _, own = _run(backend, "ls -1 /etc/systemd/system 2>/dev/null; :")
    own_units = tuple(sorted(u for u in own.split() if re.fullmatch(r"[\w@.:-]+\.(service|timer)", u)))
    return HostFacts(backend.name, pretty.group(1) if pretty else "unknown", nixos, "docker" in have, have,
                     unit_files, containers, listening, present, own_units)


def all_fingerprints() -> List[str]:
    """Every absolute fingerprint path of every profile's layouts (and their config files)."""
    out = []
    for name in profiles.names():
        p = profiles.load(name)
        for layout in p.layouts.values():
            out += [f for f in layout.fingerprints if f.startswith("/")]
            if p.discover is not None:
                place = layout.places.get(p.discover.config)
                if place is not None and place.path and (place.kind or "file") == "file":
                    out.append(place.path)
    return sorted(set(out))


def _layout_score(layout: Layout, present: Tuple[str, ...]) -> int:
    return sum(1 for f in layout.fingerprints if f in present)


def installed(facts: HostFacts) -> List[Tuple[Profile, Layout]]:
    """The (app, layout) pairs whose fingerprints are on the host: per app, the best-matching layout."""
    out = []
    for name in profiles.names():
        p = profiles.load(name)
        scored = [(_layout_score(lay, facts.fingerprints), lay) for lay in p.layouts.values()]
        scored = [(s, lay) for s, lay in scored if s > 0]
        if scored:
            out.append((p, max(scored, key=lambda t: t[0])[1]))
    return out


def units_of(layout: Layout, extra: Tuple[str, ...], facts: HostFacts) -> Tuple[str, ...]:
    """The layout's units (and the app's serving units) that have unit files on the host: names
    without `.service`; templates (`name@.service`) are left out (their instances are not files)."""
    out = []
    for unit_file in facts.unit_files:
        if "@." in unit_file:
            continue
        name = unit_file[: -len(".service")] if unit_file.endswith(".service") else unit_file
        if any(fnmatchcase(name, pat) or fnmatchcase(unit_file, pat) for pat in (*layout.units, *extra)):
            out.append(name)
    return tuple(out)


_HELPER_UNITS = re.compile(r"init|dump|setup|cron|update|remove|\.timer$")


def layout_units(layout: Layout, app: str) -> Tuple[str, ...]:
    """The units that run the app in a layout not installed yet: its `APP.target` when it has one,
    else its named units that are not one-shot helpers (init, dump, setup, cron, timers)."""
    if f"{app}.target" in layout.units:
        return (f"{app}.target",)
    return tuple(u for u in layout.units if "*" not in u and not _HELPER_UNITS.search(u))


def _stat(backend: Backend, path: str) -> Tuple[Optional[str], Optional[str]]:
    code, out = _run(backend, f"stat -c '%U:%G %a' -- {shlex.quote(path)} 2>/dev/null")
    if code != 0 or not out.strip():
        return None, None
    owner, mode = out.split()
    return owner, mode.zfill(4)


def _du(backend: Backend, path: str) -> Optional[int]:
    code, out = _run(backend, f"du -sb -- {shlex.quote(path)} 2>/dev/null")
    try:
        return int(out.split()[0]) if code == 0 else None
    except (IndexError, ValueError):
        return None


def _split_host(store: str, host: Optional[str],
                port: Optional[str]) -> Tuple[Optional[str], Optional[str], Optional[int]]:
    """(tcp, socket, socket port) of a database from the config's host and port values."""
    host = (host or "").strip()
    # Nextcloud's `localhost:/run/mysqld/mysqld.sock`, Gitea's `/var/run/postgresql` or `127.0.0.1:5432`
    if ":" in host and not host.startswith("["):
        head, _, tail = host.rpartition(":")
        if tail.startswith("/"):
            return None, tail, None
        if tail.isdigit():
            host, port = head, tail
    number = int(port) if port and str(port).isdigit() else None
    if host.startswith("/"):
        return None, host, number if number not in (None, DEFAULT_PORTS[store]) else None
    if host in ("", "localhost") and store == "mysql":
        return None, DEFAULT_SOCKETS["mysql"], None
    if host == "":
        return None, DEFAULT_SOCKETS[store], number if number not in (None, DEFAULT_PORTS[store]) else None
    addr = "127.0.0.1" if host == "localhost" else host
    return f"{addr}:{number or DEFAULT_PORTS[store]}", None, None


def read_database(p: Profile, layout: Layout, settings: Dict[str, str]) -> Optional[Database]:
    """The database the config names (the layout's defaults where it is silent)."""
    d = p.discover
    role = next((r for r in p.roles.values() if r.kind == "database"), None)
    if d is None or role is None:
        return None
    place = layout.places.get(role.name)
    keys = d.database

    def get(key: str) -> Optional[str]:
        return configs.lookup(settings, keys.get(key))

    spelled = (get("store") or "").lower()
    store = STORE_SPELLINGS.get(spelled) or (place.store if place else None) or role.stores[0]
    if store == "sqlite":
        path = get("path") or (place.path if place else None)
        inside = role.inside
        return Database("sqlite", path=path, inside=inside)
    if store not in DEFAULT_PORTS:
        return None
    tcp, socket, port = _split_host(store, get("host"), get("port"))
    password_key = keys.get("password") if get("password") else None
    return Database(store, get("name") or (place.database if place else None),
                    get("user") or (place.user if place else None), tcp, socket, port, None, password_key)


def database_size(backend: Backend, db: Database, password: Optional[str]) -> Optional[int]:
    """The database's size in bytes (PostgreSQL, MySQL: a `select`; SQLite: the file), or None.

    The password, when the config has one, reaches the client on stdin, never its argv.
    """
    if db.store == "sqlite":
        return _du(backend, db.path) if db.path else None
    read_pw = "IFS= read -r MDSL_PW; "
    if db.store == "postgres":
        where = ["-h", db.socket or db.tcp.rpartition(":")[0]]
        port = db.port or (int(db.tcp.rpartition(":")[2]) if db.tcp else None)
        if port:
            where += ["-p", str(port)]
        argv = ["psql", "-X", "-At", *where, "-U", db.user or "postgres", "-d", db.name or "postgres",
                "-c", "select pg_database_size(current_database())"]
        cmd = read_pw + "PGPASSWORD=$MDSL_PW " + shlex.join(argv)
        if not password:
            cmd = shlex.join(["runuser", "-u", db.user or "postgres", "--", *argv]) if db.user else shlex.join(argv)
    else:
        where = ["-S", db.socket] if db.socket else ["-h", db.tcp.rpartition(":")[0], "-P", db.tcp.rpartition(":")[2]]
        sql = ("select coalesce(sum(data_length + index_length), 0) from information_schema.tables "
               "where table_schema = database()")
        argv = ["mysql", "-N", "-B", *where, "-u", db.user or "root", db.name or "", "-e", sql]
        cmd = read_pw + "MYSQL_PWD=$MDSL_PW " + shlex.join(argv)
        if not password:
            cmd = shlex.join(argv)
    code, out = _run(backend, cmd, stdin=(password + "\n").encode() if password else None)
    try:
        return int(out.strip().splitlines()[-1]) if code == 0 else None
    except (IndexError, ValueError):
        return None


def read_app(src: Backend, dst: Backend, p: Profile, layout: Layout, sfacts: HostFacts,
             tfacts: HostFacts) -> AppFound:
    """Read the installed app on `src`: its config, database, dirs and sizes; choose its target layout."""
    d = p.discover
    if d is None:
        raise DiscoveryError(f"{src.name}: found {p.title} ({layout.title}), but mdsl cannot read its "
                             "configuration yet (its profile has no [discover] table)")
    place = layout.places.get(d.config)
    config_path = place.path if place is not None else None
    if config_path is None or config_path not in sfacts.fingerprints:
        raise DiscoveryError(f"{src.name}: found {p.title} ({layout.title}) by "
                             f"{', '.join(f for f in layout.fingerprints if f in sfacts.fingerprints)}, "
                             f"but not its config file {config_path or '(no fixed path in this layout)'}")
    code, text = _run(src, f"cat -- {shlex.quote(config_path)}")
    if code != 0:
        raise DiscoveryError(f"{src.name}:{config_path}: cannot be read by {src.name}'s login user")
    settings = configs.parse(text, d.format)
    owner, mode = _stat(src, config_path)
    role = p.roles[d.config]
    secrets = tuple(k for k in role.secrets if configs.lookup(settings, k) is not None
                    or any(key.lower().endswith("." + k.lower()) for key in settings))
    config = ConfigFile(d.config, config_path, owner, mode, secrets, settings)

    db = read_database(p, layout, settings)
    if db is not None:
        password = configs.lookup(settings, db.password_key) if db.password_key else None
        db = db.__class__(**{**_fields(db), "size": database_size(src, db, password)})

    dirs = []
    for role_name, r in p.roles.items():
        if r.kind != "dir":
            continue  # files: below
        path = configs.lookup(settings, d.paths.get(role_name))
        if path is None and role_name in d.relative:
            path = posixpath.join(posixpath.dirname(config_path), d.relative[role_name])
        if path is None and layout.places.get(role_name) is not None:
            path = layout.places[role_name].path
        if not path:
            continue
        owner_d, _ = _stat(src, path)
        if owner_d is None:
            continue  # not on this host: the dir role does not exist here (an optional one)
        dirs.append(DataDir(role_name, path.rstrip("/") or "/", owner_d, _du(src, path)))
    dirs = _nest(dirs)

    files = []
    for role_name, r in p.roles.items():
        if r.kind != "file" or role_name == d.config:
            continue
        place = layout.places.get(role_name)
        path = configs.lookup(settings, d.paths.get(role_name)) or (place.path if place is not None else None)
        owner_f, mode_f = _stat(src, path) if path else (None, None)
        if owner_f is not None:
            files.append(ConfigFile(role_name, path, owner_f, mode_f, r.secrets, {}))

    target_layout, has_app = _target_layout(p, layout, tfacts)
    units = units_of(layout, d.units, sfacts)
    target_units = units_of(target_layout, d.units, tfacts) or \
        (units if target_layout.name == layout.name else layout_units(target_layout, p.name))
    url = _url(d.url, settings)
    return AppFound(p, layout, units, config, db, tuple(dirs), url, target_layout, target_units, has_app,
                    tuple(files))


def _fields(obj) -> dict:
    import attrs

    return attrs.asdict(obj, recurse=False)


def _nest(dirs: List[DataDir]) -> List[DataDir]:
    """Keep the outermost dirs: one inside another (Gitea's repositories in its data dir by default)
    travels with it, and is recorded on it (`nested`) for the plan's comments."""
    out = []
    for d in dirs:
        if any(o is not d and d.path.startswith(o.path + "/") for o in dirs):
            continue
        inner = tuple(f"{posixpath.relpath(o.path, d.path)} ({o.role})" for o in dirs
                      if o is not d and o.path.startswith(d.path + "/"))
        out.append(DataDir(d.role, d.path, d.owner, d.size, inner))
    return out


def _target_layout(p: Profile, layout: Layout, tfacts: HostFacts) -> Tuple[Layout, bool]:
    """The layout the app will have on the target: the one installed there, else NixOS's module on
    NixOS, else the source's own."""
    scored = [(_layout_score(lay, tfacts.fingerprints), lay) for lay in p.layouts.values()]
    scored = [(s, lay) for s, lay in scored if s > 0]
    if scored:
        return max(scored, key=lambda t: t[0])[1], True
    if tfacts.nixos and "nixos" in p.layouts:
        return p.layouts["nixos"], False
    return layout, False


def _url(template: Optional[str], settings: Dict[str, str]) -> Optional[str]:
    """The health URL with `{KEY}` (or `{A|B}`, the first set) filled from the settings; None when unset."""
    if not template:
        return None
    missing = []

    def fill(m: re.Match) -> str:
        for key in m.group(1).split("|"):
            value = configs.lookup(settings, key)
            if value:
                return value
        missing.append(m.group(1))
        return ""

    url = re.sub(r"\{([^}]+)\}", fill, template)
    if missing or not re.match(r"https?://[^/\s\"]+", url):
        return None
    return re.sub(r"(?<!:)//+", "/", url)
