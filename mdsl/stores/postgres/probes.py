"""PostgreSQL in preflight: where its programs are, logging in as declared (P406), and versions (P403)."""

from __future__ import annotations

import re
from typing import Callable, List, Optional, Tuple

from mdsl.compile.parts import Arg, Lit
from mdsl.check.rules.p_preflight import P403
from mdsl.findings import Finding
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.postgres import Postgres
from mdsl.stores.postgres.commands import conninfo, libpq_quote, tool_command
from mdsl.syntax import ast as A

CLIENTS = ("pg_dump", "pg_restore", "psql", "createdb", "dropdb", "pg_dumpall")
PACKAGES = dict.fromkeys(CLIENTS, "postgresql-client")  # Debian/Ubuntu, for P402's help
TOOL_HELP = "set `bin` on the database to the directory holding it"


def tool_word(db: Postgres, name: str) -> str:
    """`name`, or `BIN/name` for a database with `bin`."""
    if db.bin and name in CLIENTS:
        return db.bin.rstrip("/") + "/" + name
    return name


def probe(ctx, run, db: Postgres) -> DatabaseProbe:
    """Log in to the database as declared; when it does not exist, to the server's own `postgres` database."""
    found = _login(ctx, run, db, db.database)
    if not found.ok and not found.skipped and f'database "{db.database}" does not exist' in found.error:
        server = _login(ctx, run, db, "postgres")
        if server.ok:
            return DatabaseProbe(False, server.server_version, 0, error=found.error, missing=True,
                                 help="fix `database` (the name on the server), or create it")
    return found


def _login(ctx, run, db: Postgres, database: str) -> DatabaseProbe:
    sql = "select current_setting('server_version_num'), pg_database_size(current_database())"
    info = conninfo(db, database) + " connect_timeout=" + libpq_quote("10")
    parts = (Lit(Arg(tool_word(db, "psql")).render()), Lit("-X -w -q -A -t -F '|'"), Arg(info, "--dbname="),
             Arg(sql, "--command="))
    r = run(tool_command(ctx, db, parts, ("psql",)))
    if r.exit == 127:
        return DatabaseProbe(False, skipped=True)
    if r.ok:
        m = re.search(r"^(\d+)\|(\d+)$", r.stdout.strip(), re.M)
        if m:
            return DatabaseProbe(True, int(m.group(1)), int(m.group(2)))
    # psql run as another user warns about the login user's cwd: noise, not the answer
    lines = [x for x in r.stderr.splitlines() if "could not change directory to" not in x]
    err = " ".join(" ".join(lines).split()) or r.stdout.strip() or f"psql exited with {r.exit}"
    return DatabaseProbe(False, error=_redact(err), help=_auth_help(err, db))


def auth_text(db: Postgres) -> str:
    """How the database is logged in to, for P406's note."""
    how = []
    if db.tcp_host:
        how.append(f"tcp {db.tcp_host}:{db.tcp_port}")
    elif db.socket:
        how.append(f"socket {db.socket}")
    else:
        how.append("the default socket")
    how.append(f"user {db.user}" if db.user else "user = the OS user")
    if db.password is not None:
        how.append(f"password {password_text(db)}")
    if db.run_as:
        how.append(f"run as OS user {db.run_as}")
    return ", ".join(how)


def password_text(db: Postgres) -> str:
    """The password's source, masked."""
    return db.password.masked() if isinstance(db.password, A.Secret) else "the password"


def _redact(err: str) -> str:
    # psql never echoes the password, but the temp file's path is noise
    return re.sub(r"/\S*mdsl-secret\.\w+", "<PGPASSFILE>", err)


def _auth_help(err: str, db: Postgres) -> str:
    e = err.lower()
    if "password authentication failed" in e:
        return f"check the password in {password_text(db)} for role `{db.user}`"
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


# ---------------------------------------------------------------- P403: versions


def version_words(db: Postgres, dumps: bool, restores_archive: bool) -> List[str]:
    """The clients whose `--version` P403 compares: pg_dump where it dumps, pg_restore where it restores.

    None for a database inside a container: its tools are its server's own version, so the servers'
    versions (compared by `pair_findings`) say it all.
    """
    if db.container:
        return []
    return ([tool_word(db, "pg_dump")] if dumps else []) + ([tool_word(db, "pg_restore")] if restores_archive else [])


def parse_version(text: str) -> Optional[Tuple[int, int]]:
    """(major, minor) from `pg_dump (PostgreSQL) 15.5 (Debian ...)`; 9.6.24 -> (9, 6)."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", text) or re.search(r"(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


Version = Optional[Tuple[int, int]]


def dump_findings(db: Postgres, step: A.Step, version: Callable[[str, str], Version],
                  probe_of: Callable[[Postgres], Optional[DatabaseProbe]]) -> List[Finding]:
    """P403: a pg_dump older than the server it dumps refuses to."""
    v = version(db.host, tool_word(db, "pg_dump"))
    found = probe_of(db)
    if v and found and found.ok and found.server_version and v[0] < found.server_version // 10000:
        return [P403.finding(
            f"pg_dump on `{db.host}` is version {_v(v)}, older than the server of `{db.name}` "
            f"({_server(found.server_version)}): pg_dump refuses to dump a newer server", step.span,
            help=f"install pg_dump {found.server_version // 10000} or newer on `{db.host}` "
                 "(or set `bin` on the database)",
            label="pg_dump too old")]
    return []


def pair_findings(source: Postgres, target: Postgres, restore_step: A.Step, plain: bool,
                  version: Callable[[str, str], Version],
                  probe_of: Callable[[Postgres], Optional[DatabaseProbe]]) -> List[Finding]:
    """P403 for a dump restored elsewhere: pg_restore older than pg_dump, a target server older than the source."""
    out = []
    dv = version(source.host, tool_word(source, "pg_dump"))
    rv = version(target.host, tool_word(target, "pg_restore"))
    if not plain and dv and rv and rv[0] < dv[0]:
        out.append(P403.finding(
            f"pg_restore on `{target.host}` ({_v(rv)}) is older than the pg_dump on `{source.host}` ({_v(dv)}) "
            "that writes the dump: it cannot read the archive", restore_step.span,
            help=f"install pg_restore {dv[0]} or newer on `{target.host}`, or dump with a pg_dump {rv[0]} "
                 f"(`bin` on `{source.name}`)",
            label="pg_restore too old"))
    src, dst = probe_of(source), probe_of(target)
    if (src and dst and src.ok and dst.server_version and src.server_version
            and dst.server_version // 10000 < src.server_version // 10000):
        out.append(P403.finding(
            f"the server of `{target.name}` ({_server(dst.server_version)}) is older than the server of "
            f"`{source.name}` ({_server(src.server_version)}): restoring into an older server is not supported",
            restore_step.span,
            help=f"upgrade the target server to {src.server_version // 10000} or newer before the move",
            label="target server older"))
    return out


def _v(v: Tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def _server(num: int) -> str:
    return f"{num // 10000}.{num % 100}" if num >= 100000 else f"{num // 10000}.{num // 100 % 100}"
