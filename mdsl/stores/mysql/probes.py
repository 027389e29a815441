"""MySQL/MariaDB in preflight: log in as declared (P406), the database's size (P404), routine bodies the
dumping user may not read, and server versions and flavours compared across the move (P403)."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from attrs import frozen

from mdsl.check.rules.p_preflight import P403, P406
from mdsl.findings import Finding
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.mysql import Mysql
from mdsl.stores.mysql.commands import CLIENT_PROGRAMS, DUMP_PROGRAMS, sql_command, sql_str
from mdsl.syntax import ast as A

CLIENTS = ("|".join(DUMP_PROGRAMS), "|".join(CLIENT_PROGRAMS))
PACKAGES = dict.fromkeys(CLIENTS, "mariadb-client")  # Debian/Ubuntu; MySQL's is mysql-client
TOOL_HELP = "for MySQL: `apt install mysql-client`"


@frozen
class MysqlProbe(DatabaseProbe):
    """A login's answers, with what only this kind knows: the flavour, and what the dump may trip on."""

    flavour: str = ""  # "MariaDB" or "MySQL"
    version_text: str = ""
    user: str = ""  # CURRENT_USER(), as the server matched the login
    hidden_routines: int = 0  # routines whose body the user may not read: the dump would fail halfway
    mysql8_collations: Tuple[str, ...] = ()  # utf8mb4_0900_* and other MySQL-8-only collations in use


def tool_word(db: Mysql, name: str) -> str:
    """The program as P402 looks it up: `mariadb-dump|mysqldump` means either."""
    return name


def auth_text(db: Mysql) -> str:
    """How the database is logged in to, for P406's note."""
    how = [f"tcp {db.tcp_host}:{db.tcp_port}" if db.tcp_host else
           f"socket {db.socket}" if db.socket else "the client's default socket"]
    how.append(f"user {db.user}" if db.user else "user = the OS user")
    if db.password is not None:
        how.append("password " + (db.password.masked() if isinstance(db.password, A.Secret) else "(literal)"))
    if db.run_as:
        how.append(f"run as OS user {db.run_as} (unix_socket auth)")
    return ", ".join(how)


def _probe_sql(database: str) -> str:
    q = sql_str(database)
    return ("SELECT VERSION(), CURRENT_USER(), "
            f"(SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {q}), "
            "(SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
            f"WHERE TABLE_SCHEMA = {q}), "
            "(SELECT COUNT(*) FROM information_schema.ROUTINES "
            f"WHERE ROUTINE_SCHEMA = {q} AND ROUTINE_DEFINITION IS NULL), "
            "(SELECT COALESCE(GROUP_CONCAT(DISTINCT COLLATION_NAME), '') FROM information_schema.COLUMNS "
            f"WHERE TABLE_SCHEMA = {q} AND (COLLATION_NAME LIKE '%\\_0900\\_%' "
            "OR COLLATION_NAME LIKE 'utf8mb4\\_ja\\_%'))")


def parse_server_version(text: str) -> Optional[int]:
    """10.11.19-MariaDB-0+deb12u1 -> 101119, 8.0.36 -> 80036."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    return int(m.group(1)) * 10000 + int(m.group(2)) * 100 + int(m.group(3)) if m else None


def probe(ctx, run, db: Mysql) -> DatabaseProbe:
    """Log in as declared (no default database: one that does not exist is a fact, not a login error)."""
    r = run(sql_command(ctx, db, _probe_sql(db.database), "--connect-timeout=10"))
    if r.exit == 127:
        return MysqlProbe(False, skipped=True)
    lines = r.stdout.rstrip("\n").split("\n")
    fields = lines[-1].split("\t") if r.ok else []
    if len(fields) == 6 and fields[2].isdigit():
        version, user, exists, size, hidden, collations = fields
        flavour = "MariaDB" if "mariadb" in version.lower() else "MySQL"
        facts = dict(flavour=flavour, version_text=version, user=user, hidden_routines=int(hidden),
                     mysql8_collations=tuple(c for c in collations.split(",") if c))
        if exists == "0":
            return MysqlProbe(False, parse_server_version(version), 0, missing=True,
                              error=f"there is no database `{db.database}` that {user} may use on the server",
                              help="fix `database` (the name on the server), or grant the user rights on it",
                              **facts)
        return MysqlProbe(True, parse_server_version(version), int(size), **facts)
    err = " ".join(" ".join(line for line in r.stderr.splitlines() if line.strip()).split())
    err = re.sub(r"/\S*mdsl-secret\.\w+", "<option file>", err) or f"the client exited with {r.exit}"
    return MysqlProbe(False, error=err, help=_auth_help(err, db))


def _auth_help(err: str, db: Mysql) -> str:
    e = err.lower()
    if "access denied" in e and "using password: yes" in e:
        return f"check the password of user `{db.user}` (and that the user may connect from this host)"
    if "access denied" in e and "using password: no" in e:
        return ("the server wants a password for this user: declare `password = env(\"...\")`, or log in "
                "by unix_socket with `run_as` (Debian's default for root)")
    if "can't connect" in e or "connection refused" in e or "no such file" in e:
        return "is the server running there? check `tcp`/`socket` on the database"
    if "unknown user" in e or "sudo" in e:
        return "`run_as` needs that OS user to exist and sudo to let the login user become it"
    return "check the database's `user`, `password`, `tcp`/`socket` and `run_as`"


# ---------------------------------------------------------------- P403 (and what a dump would trip on)


def version_words(db: Mysql, dumps: bool, restores_archive: bool) -> List[str]:
    """No client versions compared: the server versions are (pair_findings)."""
    return []


def parse_version(text: str) -> Optional[Tuple[int, int]]:
    """(major, minor) from a client's `--version`."""
    m = re.search(r"Distrib (\d+)\.(\d+)", text) or re.search(r"Ver (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _grant_for_routines(found: MysqlProbe, db: Mysql) -> str:
    who = found.user.replace("@", "'@'")
    if found.flavour == "MySQL":
        return f"GRANT SHOW_ROUTINE ON *.* TO '{who}';"
    v = found.server_version or 0
    if v >= 110300:
        return f"GRANT SHOW CREATE ROUTINE ON `{db.database}`.* TO '{who}';"
    return f"GRANT SELECT ON mysql.proc TO '{who}';"


def dump_findings(db: Mysql, step: A.Step, version, probe_of) -> List[Finding]:
    """P406: the dumping user cannot read every routine's body (the dump would stop halfway, after the stop)."""
    found = probe_of(db)
    if isinstance(found, MysqlProbe) and found.ok and found.hidden_routines:
        return [P406.finding(
            f"{found.user} may not read the body of {found.hidden_routines} routine(s) in `{db.database}`: "
            f"the dump of `{db.name}` would fail halfway", step.span, label="routine bodies hidden",
            notes=("mariadb-dump --routines needs SHOW CREATE for every procedure and function",),
            help=f"on the server, as an administrator: {_grant_for_routines(found, db)}")]
    return []


def pair_findings(source: Mysql, target: Mysql, restore_step: A.Step, plain: bool, version, probe_of) -> List[Finding]:
    """P403: a target server older than the source, or MySQL 8 collations going to MariaDB."""
    src, dst = probe_of(source), probe_of(target)
    if not (isinstance(src, MysqlProbe) and isinstance(dst, MysqlProbe) and src.server_version and dst.server_version):
        return []
    out = []
    if src.flavour == "MySQL" and dst.flavour == "MariaDB" and src.server_version >= 80000 and src.mysql8_collations:
        out.append(P403.finding(
            f"`{source.name}` is MySQL {_v(src.version_text)} and uses MySQL-8-only collations "
            f"({', '.join(src.mysql8_collations[:4])}) that the MariaDB server of `{target.name}` "
            f"({_v(dst.version_text)}) does not have: its tables would not load", restore_step.span,
            help="convert those tables on the source first (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4 "
                 "COLLATE utf8mb4_unicode_ci), or move to a MySQL 8 server",
            label="MySQL 8 collations"))
    elif src.flavour == dst.flavour and dst.server_version < src.server_version:
        out.append(P403.finding(
            f"the server of `{target.name}` ({src.flavour} {_v(dst.version_text)}) is older than the server of "
            f"`{source.name}` ({_v(src.version_text)}): its dump may use what the older server lacks",
            restore_step.span,
            help=f"upgrade the target server to {_v(src.version_text)} or newer before the move",
            label="target server older"))
    return out


def _v(text: str) -> str:
    m = re.match(r"\d+\.\d+\.\d+", text)
    return m.group(0) if m else text

