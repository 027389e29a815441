"""Redis in preflight: the server answers and takes the declared password (P406), its used memory (P404),
and, across the move, a target not older than the source and with room for its data (P403)."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from attrs import frozen

from mdsl.check.rules.p_preflight import P403
from mdsl.findings import Finding
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.redis import Redis
from mdsl.stores.redis.commands import script_command
from mdsl.syntax import ast as A

CLIENTS = ("redis-cli", "redis-check-rdb")
PACKAGES = dict.fromkeys(CLIENTS, "redis-tools")
TOOL_HELP = ""


@frozen
class RedisProbe(DatabaseProbe):
    """A Redis server's answers: its memory, its limit, how many keys it holds."""

    used_memory: int = 0
    maxmemory: Optional[int] = None  # None: CONFIG not allowed; 0: no limit
    keys: int = 0
    version_text: str = ""


def tool_word(db: Redis, name: str) -> str:
    """Programs are looked up on PATH."""
    return name


def auth_text(db: Redis) -> str:
    """How the server is reached, for P406's note."""
    how = f"tcp {db.tcp_host}:{db.tcp_port}" if db.tcp_host else f"socket {db.socket}"
    if db.password is not None:
        how += ", password " + (db.password.masked() if isinstance(db.password, A.Secret) else "(literal)")
    return how


def parse_server_version(text: str) -> Optional[int]:
    """7.0.15 -> 70015."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    return int(m.group(1)) * 10000 + int(m.group(2)) * 100 + int(m.group(3)) if m else None


def probe(ctx, run, db: Redis) -> DatabaseProbe:
    """PING with the declared password; version, used memory, maxmemory and keys (the size is used memory)."""
    r = run(script_command(ctx, db, "probe"))
    if r.exit == 127:
        return RedisProbe(False, skipped=True)
    facts = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    if r.ok and facts.get("version"):
        used = int(facts.get("used_memory") or 0)
        limit = facts.get("maxmemory", "None")
        return RedisProbe(True, parse_server_version(facts["version"]), used, used_memory=used,
                          maxmemory=int(limit) if limit.isdigit() else None, keys=int(facts.get("keys") or 0),
                          version_text=facts["version"])
    err = " ".join(line.removeprefix("mdsl: ") for line in r.stderr.splitlines() if line.strip()) or f"exit {r.exit}"
    e = err.lower()
    if "wrongpass" in e or "noauth" in e or "invalid password" in e:
        help = "check the password (`password = env(\"...\")` on the store)"
    elif "cannot connect" in e:
        help = "is the server running there? check `tcp`/`socket` on the store"
    else:
        help = "check the store's `tcp`/`socket` and `password`"
    return RedisProbe(False, error=err, help=help)


def version_words(db: Redis, dumps: bool, restores_archive: bool) -> List[str]:
    """redis-check-rdb reads the snapshot on both ends: it must know the source's RDB version."""
    return ["redis-check-rdb"]


def parse_version(text: str) -> Optional[Tuple[int, int]]:
    """(major, minor) from `redis-check-rdb --version` (it answers as redis-server does: v=7.0.15)."""
    m = re.search(r"v=(\d+)\.(\d+)", text) or re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def dump_findings(db: Redis, step: A.Step, version, probe_of) -> List[Finding]:
    """P403: a redis-check-rdb older than the server cannot read its snapshot (the dump's read-back fails)."""
    found, v = probe_of(db), version(db.host, "redis-check-rdb")
    known = isinstance(found, RedisProbe) and found.ok and found.server_version
    server = divmod(found.server_version // 100, 100) if known else None
    if server and v and v < server:
        return [P403.finding(
            f"redis-check-rdb on `{db.host}` ({v[0]}.{v[1]}) is older than the server of `{db.name}` "
            f"({found.version_text}): it cannot read the snapshot", step.span,
            help=f"install redis-tools {found.version_text} or newer on `{db.host}`", label="redis-tools too old")]
    return []


def pair_findings(source: Redis, target: Redis, restore_step: A.Step, plain: bool, version, probe_of) -> List[Finding]:
    """P403: the target must load the source's RDB (not older) and hold its data (maxmemory)."""
    src, dst = probe_of(source), probe_of(target)
    if not (isinstance(src, RedisProbe) and isinstance(dst, RedisProbe) and src.ok and dst.ok):
        return []
    out = []
    if src.server_version and dst.server_version and dst.server_version < src.server_version:
        out.append(P403.finding(
            f"the Redis of `{target.name}` ({dst.version_text}) is older than the one of `{source.name}` "
            f"({src.version_text}): it cannot load a newer server's snapshot", restore_step.span,
            help=f"upgrade the target to Redis {src.version_text} or newer before the move",
            label="target Redis older"))
    if dst.maxmemory and dst.maxmemory < src.used_memory:
        out.append(P403.finding(
            f"`{target.name}` may use {dst.maxmemory} bytes (maxmemory), less than the "
            f"{src.used_memory} bytes `{source.name}` holds: the restore would not fit", restore_step.span,
            help=f"raise maxmemory on the target (CONFIG SET maxmemory {src.used_memory * 5 // 4}, and in "
                 "its redis.conf)",
            label="maxmemory too small"))
    return out

