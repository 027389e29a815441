"""An app profile as data: its pieces of data (roles), secrets, invariants, the commands a move
needs, and its layouts (where a source install, a distribution package, the NixOS module or a
Docker Compose file put each role). Read from `profiles/NAME.toml` and checked against the schema
below: a broken profile is a `ProfileError` naming the file and the key.

Every fact carries its `source` (the app's documentation, or a named issue); `confirmed = false`
marks a fact the profile's author could not check against that source, with a `note` saying why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from attrs import frozen

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"

# What each kind of role is matched against in a plan: the declaration kinds that can hold it.
ROLE_KINDS = ("database", "dir", "file")
# When a command runs, relative to the move (see `Command`).
WHEN = ("before-stop", "after-restore", "before-start", "after-start")
SEVERITIES = ("error", "warning", "info")
INVARIANT_KINDS = ("same-path", "setting", "empty-database", "same-version")
# How `mdsl init` reads a config file (mdsl.init.configs): dotenv, a PHP array, INI, YAML (a subset).
CONFIG_FORMATS = ("env", "php", "ini", "yaml")


class ProfileError(Exception):
    """A profile file that cannot be used: the message names the file and the key."""


@frozen
class Source:
    """Where a fact comes from: a URL or `owner/repo#N`; `confirmed` is False when it could not be checked."""

    ref: str
    confirmed: bool = True
    note: str = ""

    def show(self) -> str:
        """`source: URL`, and the caveat when the fact is unconfirmed."""
        text = f"source: {self.ref}"
        if not self.confirmed:
            text += " (not confirmed" + (f": {self.note}" if self.note else "") + ")"
        elif self.note:
            text += f" ({self.note})"
        return text


@frozen
class Secret:
    """One secret key of the app and what breaks, in the app's terms, when it is lost or regenerated."""

    key: str
    lost: str
    source: Source


@frozen
class Derived:
    """A subpath of a data dir the app can rebuild: what it holds, what users miss until it is
    rebuilt, and how (`rebuild`, recognised in a plan's `run` steps by `rebuild_match`; without a
    `rebuild_match` it is a manual step, e.g. a job started in the web interface; `automatic` when
    the app refetches it by itself on demand)."""

    subpath: str
    holds: str
    lost: str
    rebuild: str
    rebuild_match: Optional[str]
    automatic: bool
    source: Source


@frozen
class Role:
    """One piece of the app's data: its database, a data dir, a file of secrets."""

    name: str
    kind: str  # database, dir, file
    stores: Tuple[str, ...]  # for a database: the store kinds the app supports
    holds: str
    lost: str  # what the app loses without it
    secrets: Tuple[str, ...]  # secret keys it holds (keys of Profile.secrets)
    derived: Tuple[Derived, ...]
    optional: bool  # it may not exist (Vaultwarden's config.json)
    inside: Optional[str]  # the dir role it lives in, so it travels with that dir when not declared itself
    source: Source


@frozen
class Place:
    """Where a layout keeps one role: a path, a database name, its login, and whether the layout
    fixes the path (a NixOS module that hard-codes it) or makes the secrets itself when missing."""

    role: str
    kind: Optional[str]  # overrides the role's kind here (NixOS keeps Mastodon's secrets as a dir of files)
    path: Optional[str]
    match: Tuple[str, ...]  # shell patterns a declaration's path is recognised by (default: the path)
    store: Optional[str]  # the store kind this layout uses for a database role
    database: Optional[str]
    user: Optional[str]
    auth: Optional[str]
    fixed: bool
    generated: Optional[str]  # what the layout does when this (secret) is missing
    source: Source

    def matches(self, path: str) -> bool:
        """True when a declared path is this place (exactly, or by one of the patterns)."""
        from fnmatch import fnmatchcase

        pats = self.match or ((self.path,) if self.path else ())
        return any(fnmatchcase(path.rstrip("/") or "/", p.rstrip("/") or "/") for p in pats)


@frozen
class Layout:
    """One way the app is installed: its units (or compose services), its places, its fingerprints."""

    name: str
    title: str
    units: Tuple[str, ...]  # systemd unit names or patterns (`mastodon-streaming-*`)
    compose_services: Tuple[str, ...]
    user: Optional[str]
    fingerprints: Tuple[str, ...]  # files whose presence on a host says it runs this layout (mdsl init)
    places: Mapping[str, Place]
    does: Tuple[str, ...]  # ids of commands this layout runs by itself (the NixOS Gitea module's hooks)
    source: Source


@frozen
class Invariant:
    """Something the move must keep: a path (`same-path`), a setting (`setting`: a `run` matching
    `change` breaks it), an empty database to restore into, the same app version on both sides."""

    id: str
    kind: str
    role: Optional[str]
    setting: Optional[str]
    change: Optional[str]
    broken: str
    help: str
    layouts: Tuple[str, ...]  # only between these layouts (empty: any)
    source: Source


@frozen
class Command:
    """A command the move needs: on the old host before its service stops (`before-stop`), or on
    the new host once the data arrived (`after-restore`), before the first start (`before-start`)
    or after it (`after-start`). `needs` names a command whose running makes this one necessary."""

    id: str
    when: str
    run: str
    run_in: Mapping[str, str]  # layout -> the command as that layout spells it
    match: str
    why: str
    severity: str
    after: Optional[str]  # the role whose arrival it follows (after-restore, before-start)
    needs: Optional[str]
    source: Source

    def text_for(self, layout: str) -> str:
        """The command as the given layout spells it."""
        return self.run_in.get(layout, self.run)


@frozen
class Discover:
    """How `mdsl init` reads an installed copy of the app: the role whose file holds its settings,
    that file's format (configs.FORMATS), which keys name the database (`database`: name, user,
    host, port, password, path, store) and the data dirs (`paths`: role -> key), dirs relative to
    the config file's own dir when no key says (`relative`), the health URL (`{KEY}` filled from
    the settings, `{A|B}` the first set), and units that serve the app without being its own."""

    config: str
    format: str
    database: Mapping[str, str]
    paths: Mapping[str, str]
    relative: Mapping[str, str]
    url: Optional[str]
    units: Tuple[str, ...]
    source: Source


@frozen
class Profile:
    """Everything mdsl knows about one app."""

    name: str
    title: str
    docs: str
    file: str
    roles: Mapping[str, Role]
    secrets: Mapping[str, Secret]
    invariants: Tuple[Invariant, ...]
    commands: Tuple[Command, ...]
    layouts: Mapping[str, Layout]
    discover: Optional[Discover] = None


# ---------------------------------------------------------------- schema

# table -> key -> (type, required). Types: str, bool, strs (list of str), table, tables (array of
# tables), str-or-strs, map (a table of str values). Every table marked FACT also takes the source keys.
_SOURCE_KEYS = {"source": ("str", True), "confirmed": ("bool", False), "note": ("str", False)}
_SCHEMA: Dict[str, Dict[str, Tuple[str, bool]]] = {
    "profile": {"name": ("str", True), "title": ("str", True), "docs": ("str", True),
                "roles": ("table", True), "secrets": ("table", False), "invariants": ("tables", False),
                "commands": ("tables", False), "layouts": ("table", True), "discover": ("table", False)},
    "discover": {"config": ("str", True), "format": ("str", True), "database": ("map", False),
                 "paths": ("map", False), "relative": ("map", False), "url": ("str", False),
                 "units": ("strs", False), **_SOURCE_KEYS},
    "role": {"kind": ("str", True), "store": ("str-or-strs", False), "holds": ("str", True),
             "lost": ("str", True), "secrets": ("strs", False), "derived": ("tables", False),
             "optional": ("bool", False), "inside": ("str", False), **_SOURCE_KEYS},
    "derived": {"subpath": ("str", True), "holds": ("str", True), "lost": ("str", True),
                "rebuild": ("str", False), "rebuild_match": ("str", False), "automatic": ("bool", False),
                **_SOURCE_KEYS},
    "secret": {"lost": ("str", True), **_SOURCE_KEYS},
    "invariant": {"id": ("str", True), "kind": ("str", True), "role": ("str", False), "setting": ("str", False),
                  "change": ("str", False), "broken": ("str", True), "help": ("str", False),
                  "layouts": ("strs", False), **_SOURCE_KEYS},
    "command": {"id": ("str", True), "when": ("str", True), "run": ("str", True), "run_in": ("map", False),
                "match": ("str", True), "why": ("str", True), "severity": ("str", False), "after": ("str", False),
                "needs": ("str", False), **_SOURCE_KEYS},
    "layout": {"title": ("str", True), "units": ("strs", False), "compose_services": ("strs", False),
               "user": ("str", False), "fingerprints": ("strs", False), "places": ("table", True),
               "does": ("strs", False), **_SOURCE_KEYS},
    "place": {"kind": ("str", False), "path": ("str", False), "match": ("strs", False), "database": ("str", False),
              "user": ("str", False), "auth": ("str", False), "fixed": ("bool", False), "generated": ("str", False),
              "store": ("str", False), **_SOURCE_KEYS},
}
_TYPE_WORDS = {"str": "a string", "bool": "true or false", "strs": "a list of strings", "table": "a table",
               "tables": "an array of tables ([[...]])", "str-or-strs": "a string or a list of strings",
               "map": "a table of strings"}


class _Reader:
    """Checks one file's tables against `_SCHEMA`, naming the key path in every error."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, where: str, message: str) -> ProfileError:
        return ProfileError(f"{self.file}: {where}: {message}")

    def source(self, data: dict, where: str) -> Source:
        """The fact's source; an unconfirmed fact must say why (`note`)."""
        if data.get("confirmed") is False and not data.get("note"):
            raise self.fail(where, "`confirmed = false` needs a `note` saying what could not be checked")
        return Source(data["source"], data.get("confirmed", True), data.get("note", ""))

    def table(self, data, kind: str, where: str) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, "must be a table")
        schema = _SCHEMA[kind]
        for key, value in data.items():
            if key not in schema:
                known = ", ".join(sorted(schema))
                raise self.fail(f"{where}.{key}" if where else key, f"unknown key (known here: {known})")
            self.typed(value, schema[key][0], f"{where}.{key}" if where else key)
        for key, (_, required) in schema.items():
            if required and key not in data:
                raise self.fail(where or "(top level)", f"missing required key `{key}`")
        return data

    def typed(self, value, typ: str, where: str) -> None:
        ok = {
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "table": isinstance(value, dict),
            "tables": isinstance(value, list) and all(isinstance(v, dict) for v in value),
            "str-or-strs": isinstance(value, str) or (isinstance(value, list)
                                                       and all(isinstance(v, str) for v in value)),
            "map": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        }[typ]
        if not ok:
            raise self.fail(where, f"must be {_TYPE_WORDS[typ]}")

    def one_of(self, value: Optional[str], allowed, where: str) -> None:
        if value is not None and value not in allowed:
            raise self.fail(where, f"`{value}` is not one of {', '.join(allowed)}")

    def regex(self, value: Optional[str], where: str) -> None:
        if value is None:
            return
        try:
            re.compile(value)
        except re.error as exc:
            raise self.fail(where, f"not a regular expression: {exc}") from None


def _strs(value) -> Tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _roles(r: _Reader, data: dict, secrets: Mapping[str, Secret]) -> Dict[str, Role]:
    out = {}
    for name, raw in data.items():
        where = f"roles.{name}"
        r.table(raw, "role", where)
        r.one_of(raw["kind"], ROLE_KINDS, f"{where}.kind")
        stores = _strs(raw.get("store"))
        if raw["kind"] == "database" and not stores:
            raise r.fail(where, "a database role needs `store` (postgres, mysql, sqlite...)")
        for key in raw.get("secrets", ()):
            if key not in secrets:
                raise r.fail(f"{where}.secrets", f"`{key}` is not described under [secrets.{key}]")
        derived = []
        for i, d in enumerate(raw.get("derived", ())):
            dw = f"{where}.derived[{i}]"
            r.table(d, "derived", dw)
            r.regex(d.get("rebuild_match"), f"{dw}.rebuild_match")
            derived.append(Derived(d["subpath"].strip("/"), d["holds"], d["lost"], d.get("rebuild", ""),
                                   d.get("rebuild_match"), d.get("automatic", False), r.source(d, dw)))
        out[name] = Role(name, raw["kind"], stores, raw["holds"], raw["lost"], tuple(raw.get("secrets", ())),
                         tuple(derived), raw.get("optional", False), raw.get("inside"), r.source(raw, where))
    for name, role in out.items():
        if role.inside is not None and (role.inside not in out or out[role.inside].kind != "dir"):
            raise r.fail(f"roles.{name}.inside", f"`{role.inside}` is not a dir role of this app")
    return out


def _layouts(r: _Reader, data: dict, roles: Mapping[str, Role]) -> Dict[str, Layout]:
    out = {}
    for name, raw in data.items():
        where = f"layouts.{name}"
        r.table(raw, "layout", where)
        places = {}
        for role, p in raw["places"].items():
            pw = f"{where}.places.{role}"
            if role not in roles:
                raise r.fail(pw, f"`{role}` is not a role of this app (roles: {', '.join(roles)})")
            r.table(p, "place", pw)
            r.one_of(p.get("kind"), ROLE_KINDS, f"{pw}.kind")
            if p.get("path") is not None and not p["path"].startswith("/"):
                raise r.fail(f"{pw}.path", "must be absolute")
            if p.get("store") is not None and p["store"] not in roles[role].stores:
                raise r.fail(f"{pw}.store", f"`{p['store']}` is not among the role's stores "
                                            f"({', '.join(roles[role].stores) or 'none'})")
            places[role] = Place(role, p.get("kind"), p.get("path"), tuple(p.get("match", ())),
                                 p.get("store"), p.get("database"), p.get("user"), p.get("auth"), p.get("fixed", False),
                                 p.get("generated"), r.source(p, pw))
        out[name] = Layout(name, raw["title"], tuple(raw.get("units", ())), tuple(raw.get("compose_services", ())),
                           raw.get("user"), tuple(raw.get("fingerprints", ())), places,
                           tuple(raw.get("does", ())), r.source(raw, where))
    return out


def _invariants(r: _Reader, data: List[dict], roles: Mapping[str, Role], layouts) -> Tuple[Invariant, ...]:
    out = []
    for i, raw in enumerate(data):
        where = f"invariants[{i}]"
        r.table(raw, "invariant", where)
        r.one_of(raw["kind"], INVARIANT_KINDS, f"{where}.kind")
        r.regex(raw.get("change"), f"{where}.change")
        if raw["kind"] in ("same-path", "empty-database") and raw.get("role") not in roles:
            raise r.fail(f"{where}.role", f"a {raw['kind']} invariant names one of the roles: {', '.join(roles)}")
        if raw["kind"] == "setting" and not (raw.get("setting") and raw.get("change")):
            raise r.fail(where, "a setting invariant needs `setting` and `change` (how a command changes it)")
        for layout in raw.get("layouts", ()):
            if layout not in layouts:
                raise r.fail(f"{where}.layouts", f"`{layout}` is not a layout of this app")
        out.append(Invariant(raw["id"], raw["kind"], raw.get("role"), raw.get("setting"), raw.get("change"),
                             raw["broken"], raw.get("help", ""), tuple(raw.get("layouts", ())), r.source(raw, where)))
    return tuple(out)


def _commands(r: _Reader, data: List[dict], roles, layouts) -> Tuple[Command, ...]:
    out = []
    ids = {c.get("id") for c in data if isinstance(c, dict)}
    for i, raw in enumerate(data):
        where = f"commands[{i}]"
        r.table(raw, "command", where)
        r.one_of(raw["when"], WHEN, f"{where}.when")
        r.one_of(raw.get("severity"), SEVERITIES, f"{where}.severity")
        r.regex(raw["match"], f"{where}.match")
        if raw.get("after") is not None and raw["after"] not in roles:
            raise r.fail(f"{where}.after", f"`{raw['after']}` is not a role of this app")
        if raw.get("needs") is not None and raw["needs"] not in ids:
            raise r.fail(f"{where}.needs", f"`{raw['needs']}` is not the id of a command here")
        for layout in raw.get("run_in", {}):
            if layout not in layouts:
                raise r.fail(f"{where}.run_in.{layout}", "not a layout of this app")
        out.append(Command(raw["id"], raw["when"], raw["run"], dict(raw.get("run_in", {})), raw["match"], raw["why"],
                           raw.get("severity", "warning"), raw.get("after"), raw.get("needs"), r.source(raw, where)))
    return tuple(out)


_DISCOVER_DB_KEYS = ("store", "name", "user", "host", "port", "password", "path")


def _discover(r: _Reader, raw: Optional[dict], roles: Mapping[str, Role]) -> Optional[Discover]:
    if raw is None:
        return None
    r.table(raw, "discover", "discover")
    r.one_of(raw["format"], CONFIG_FORMATS, "discover.format")
    if raw["config"] not in roles or roles[raw["config"]].kind != "file":
        raise r.fail("discover.config", f"`{raw['config']}` is not a file role of this app")
    for key in raw.get("database", {}):
        r.one_of(key, _DISCOVER_DB_KEYS, f"discover.database.{key}")
    for table in ("paths", "relative"):
        for role in raw.get(table, {}):
            if role not in roles:
                raise r.fail(f"discover.{table}.{role}", f"`{role}` is not a role of this app")
    return Discover(raw["config"], raw["format"], dict(raw.get("database", {})), dict(raw.get("paths", {})),
                    dict(raw.get("relative", {})), raw.get("url"), tuple(raw.get("units", ())),
                    r.source(raw, "discover"))


def parse_profile(text: str, file: str) -> Profile:
    """A profile from the text of its TOML file; ProfileError naming `file` and the key when broken."""
    r = _Reader(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{file}: not valid TOML: {exc}") from None
    r.table(data, "profile", "")
    secrets = {}
    for key, raw in data.get("secrets", {}).items():
        r.table(raw, "secret", f"secrets.{key}")
        secrets[key] = Secret(key, raw["lost"], r.source(raw, f"secrets.{key}"))
    roles = _roles(r, data["roles"], secrets)
    layouts = _layouts(r, data["layouts"], roles)
    invariants = _invariants(r, data.get("invariants", []), roles, layouts)
    commands = _commands(r, data.get("commands", []), roles, layouts)
    for name, layout in layouts.items():
        for cmd in layout.does:
            if cmd not in {c.id for c in commands}:
                raise r.fail(f"layouts.{name}.does", f"`{cmd}` is not the id of a command here")
    discover = _discover(r, data.get("discover"), roles)
    if Path(file).stem != data["name"]:
        raise r.fail("name", f"`{data['name']}` must be the file's name without .toml")
    return Profile(data["name"], data["title"], data["docs"], file, roles, secrets, invariants, commands, layouts,
                   discover)


_CACHE: Dict[str, Profile] = {}


def names() -> List[str]:
    """Every app mdsl has a profile for, sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load(name: str) -> Optional[Profile]:
    """The profile of app `name`, or None when there is none; ProfileError when its file is broken."""
    if name in _CACHE:
        return _CACHE[name]
    # Looked up among the shipped profiles, never as a path: a plan's app name of any length or
    # spelling is "no profile" (a name past NAME_MAX made `is_file` raise "File name too long").
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name not in names():
        return None
    path = PROFILES_DIR / f"{name}.toml"
    profile = parse_profile(path.read_text(encoding="utf-8"), f"mdsl/apps/profiles/{path.name}")
    _CACHE[name] = profile
    return profile
