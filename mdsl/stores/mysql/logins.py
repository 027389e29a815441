"""The app's own MySQL/MariaDB login: made on the target by a restore (`like = OTHER`), proven in preflight.

A dump carries tables, not the server's accounts. A login with `like` is made by the restore into its
database, after the rows: `CREATE USER IF NOT EXISTS` for the account the app's connection will match
(`'user'@'localhost'` over the socket, `'user'@'FROM'` over TCP, FROM being the address the login
comes from), its password set (the statement travels on the client's stdin), then the grants OTHER has
on its own database, read from OTHER's server by logging in as OTHER (information_schema, which lists
a user's own privileges as rows) and rewritten to this account and database. Then the step logs in as
the app and checks which account the server matched.

MariaDB's trap: an account is a user *and a host*. `'wp'@'localhost'` matches socket logins, and TCP
logins from 127.0.0.1 only while the server resolves names; with `skip_name_resolve` (Docker images,
many tuned servers) a TCP login from 127.0.0.1 is matched as `127.0.0.1` and is refused. Preflight
matches the declared connection against the server's accounts the way the server does (`match`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Sequence, Tuple

import attrs
from attrs import frozen

from mdsl.compile.actions import Feed, Shell
from mdsl.compile.context import DEFAULT_TIMEOUT, CompileContext
from mdsl.compile.parts import Arg, CompileError, Lit, SecretArg, SecretText, Sub, sh
from mdsl.check.rules.p_preflight import P411
from mdsl.findings import Finding
from mdsl.model import Login
from mdsl.stores.logins import connection_text, default_source
from mdsl.stores.mysql import Mysql
from mdsl.stores.mysql.commands import CLIENT_PROGRAMS, client_command, sql_command, sql_ident, sql_str
from mdsl.syntax import ast as A

# The grantee of the session's own user as information_schema spells it: 'user'@'host'.
GRANTEE = ("CONCAT('''', LEFT(CURRENT_USER(), LENGTH(CURRENT_USER()) - "
           "LENGTH(SUBSTRING_INDEX(CURRENT_USER(), '@', -1)) - 1), '''@''', "
           "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')")


def _p411(message: str, login: Login, help: str, notes=(), label: str = "") -> Finding:
    return P411.finding(message, login.span, label=label, notes=tuple(notes), help=help)


# ---------------------------------------------------------------- the login as a client, its account


def as_client(login: Login, db: Mysql) -> Mysql:
    """The login as a connection: the database's host and name, the login's user, password and way in."""
    return Mysql(name=login.name, host=db.host, database=db.database, user=login.user, tcp_host=login.tcp_host,
                 tcp_port=login.tcp_port, socket=login.socket, password=login.password, run_as=login.run_as,
                 span=login.span)


def account_host(login: Login) -> str:
    """The host part of the account the app's connection matches exactly: `localhost` for the socket."""
    return login.source_address if login.tcp_host and login.source_address else "localhost"


def account(login: Login) -> str:
    """`'user'@'host'`, as SQL."""
    return f"{sql_str(login.user)}@{sql_str(account_host(login))}"


def checkable_here(login: Login) -> bool:
    """True when a client on the database's host connects as the app does (the socket, or TCP from the
    address a connection from that host comes from), so mdsl's own login proves the app's."""
    return not login.tcp_host or login.source_address == default_source(login.tcp_host)


# ---------------------------------------------------------------- compile: made by the restore


def _db_pattern(name: str) -> str:
    # A database-level GRANT reads `_` and `%` in the name as wildcards: escaped, it names one database.
    return sql_ident(name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def grants_sql(source_db: str, target_db: str, target_account: str) -> str:
    """A query printing, one per line, the GRANT statements that give `target_account` on `target_db` what
    the session's user has on `source_db` (database, table and column privileges)."""
    src, acc = sql_str(source_db), sql_str(target_account)
    on_db, on_table = sql_str(_db_pattern(target_db) + ".*"), sql_str(sql_ident(target_db) + ".")
    grantable = "IF(MAX(IS_GRANTABLE) = 'YES', ' WITH GRANT OPTION', '')"
    table = "CONCAT('`', REPLACE(TABLE_NAME, '`', '``'), '`')"
    privileges = "GROUP_CONCAT(PRIVILEGE_TYPE ORDER BY PRIVILEGE_TYPE SEPARATOR ', ')"
    columns = ("GROUP_CONCAT(CONCAT(PRIVILEGE_TYPE, ' (`', REPLACE(COLUMN_NAME, '`', '``'), '`)') "
               "ORDER BY PRIVILEGE_TYPE, COLUMN_NAME SEPARATOR ', ')")
    return (
        f"SET SESSION sql_mode = '', group_concat_max_len = 1048576; SET @mdsl_grantee = {GRANTEE}; "
        f"SELECT CONCAT('GRANT ', {privileges}, ' ON ', {on_db}, ' TO ', {acc}, {grantable}, ';') "
        "FROM information_schema.SCHEMA_PRIVILEGES "
        f"WHERE GRANTEE = @mdsl_grantee AND {src} LIKE TABLE_SCHEMA HAVING COUNT(*) > 0 "
        f"UNION ALL SELECT CONCAT('GRANT ', {privileges}, ' ON ', {on_table}, {table}, ' TO ', {acc}, {grantable}, "
        "';') FROM information_schema.TABLE_PRIVILEGES "
        f"WHERE GRANTEE = @mdsl_grantee AND TABLE_SCHEMA = {src} GROUP BY TABLE_NAME "
        f"UNION ALL SELECT CONCAT('GRANT ', {columns}, ' ON ', {on_table}, {table}, ' TO ', {acc}, {grantable}, ';') "
        "FROM information_schema.COLUMN_PRIVILEGES "
        f"WHERE GRANTEE = @mdsl_grantee AND TABLE_SCHEMA = {src} GROUP BY TABLE_NAME;")


def restore_actions(ctx: CompileContext, login: Login, db: Mysql, like: Login, like_db: Mysql):
    """(before, after) the restore into `db`: nothing before; after it, the account made with `like`'s grants,
    then a login as the app that checks the account the server matched."""
    if login.password is None:
        raise CompileError(f"`{login.name}` has no `password`: the plan makes the login, so it needs the one the "
                           "app's configuration holds", login.span, help='declare `password = env("...")`')
    if not isinstance(login.password, A.Secret):
        raise CompileError(f"the password of `{login.name}` is a literal; use env(\"NAME\") or file(\"PATH\")",
                           login.password.span)
    acc = account(login)
    # An empty sql_mode for this session: string literals read backslashes as escapes whatever the server's
    # NO_BACKSLASH_ESCAPES, as `sql_str` and the password's literal are written.
    script = SecretText((Lit(f"SET SESSION sql_mode = '';\nCREATE USER IF NOT EXISTS {acc};\n"
                             f"ALTER USER {acc} IDENTIFIED BY "),
                         SecretArg(login.password, escape="mysql-literal"), Lit(";\n")))
    apply = attrs.evolve(client_command(ctx, db, CLIENT_PROGRAMS, (Lit("--batch --skip-column-names"),)),
                         stdin=script)
    source = client_command(ctx, as_client(like, like_db), CLIENT_PROGRAMS, (
        Lit("--batch --skip-column-names --raw"),
        Arg(grants_sql(like_db.database, db.database, account(login)), "--execute=")))
    after = [Feed(apply, f"make {login.name} ({login.user}@{account_host(login)}) with the grants of {like.name}",
                  source, timeout=DEFAULT_TIMEOUT)]
    if checkable_here(login):
        after.append(Shell(_check_login(ctx, login, db), f"log in as {login.name}, as the app will", 120.0))
    return [], after


def _check_login(ctx: CompileContext, login: Login, db: Mysql):
    """Log in as the app to its database; fail unless the server matched the account the plan made."""
    who = client_command(ctx, as_client(login, db), CLIENT_PROGRAMS, (
        Lit("--batch --skip-column-names"), Arg("SELECT CURRENT_USER()", "--execute="), Lit("--"),
        Arg(db.database)))
    want = f"{login.user}@{account_host(login)}"
    return ctx.command(db.host, sh(
        "got=$(", Sub(who), ") || exit 1; [ \"$got\" =", Arg(want), "] || { echo",
        Arg(f"mdsl: the server matched the login of {login.name} to"), "\"$got\",",
        Arg(f"not to {want}, the account the plan made"), ">&2; exit 1; }"))


# ---------------------------------------------------------------- how the server picks an account


@frozen
class Account:
    """A row of mysql.user: a user name (empty: any user) and a host pattern."""

    user: str
    host: str

    def __str__(self) -> str:
        return f"'{self.user}'@'{self.host}'"


def _host_rank(host: str) -> Tuple[int, int]:
    # The server's order: hosts without wildcards first, patterns by how late their first wildcard
    # comes, `%` (any host) last.
    if host in ("%", ""):
        return (2, 0)
    wild = [i for i, c in enumerate(host) if c in "%_"]
    return (1, -wild[0]) if wild else (0, 0)


def _host_matches(pattern: str, names: Sequence[str], address: Optional[str]) -> bool:
    if "/" in pattern and address is not None:  # 192.168.1.0/255.255.255.0
        net, _, mask = pattern.partition("/")
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(f"{net}/{mask}", strict=False)
        except ValueError:
            return False
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern.lower())
    return any(re.fullmatch(rx, n.lower()) for n in names)


def match(accounts: Sequence[Account], user: str, address: Optional[str], skip_name_resolve: bool) -> Optional[Account]:
    """The account the server matches for `user` connecting over the socket (`address` None) or over TCP from
    `address`: sorted most specific host first, a named user before the anonymous one; the first that fits."""
    if address is None:
        names: List[str] = ["localhost"]
    else:
        names = [address]
        if not skip_name_resolve and ipaddress.ip_address(address).is_loopback:
            names.append("localhost")  # the reverse lookup of a loopback address, as /etc/hosts says
    ranked = sorted(accounts, key=lambda a: (_host_rank(a.host), a.user == ""))
    for a in ranked:
        if a.user in (user, "") and _host_matches(a.host, names, address):
            return a
    return None


# ---------------------------------------------------------------- preflight (P411)


@frozen
class ServerFacts:
    """What the database's own (administrative) login learns about the server's accounts."""

    skip_name_resolve: bool
    admin: str
    may_create: bool  # CREATE USER and a grant option
    accounts: Optional[Tuple[Account, ...]]  # None: mysql.user is not readable by that login


def server_facts(ctx, run, db: Mysql, user: str) -> Optional[ServerFacts]:
    """Ask as the database's declared login; None when it cannot log in (P406 says why)."""
    q = sql_str(db.database)
    r = run(sql_command(ctx, db, (
        f"SELECT @@skip_name_resolve, CURRENT_USER(), (SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES "
        f"WHERE GRANTEE = {GRANTEE} AND PRIVILEGE_TYPE = 'CREATE USER') > 0 AND ((SELECT COUNT(*) FROM "
        f"information_schema.USER_PRIVILEGES WHERE GRANTEE = {GRANTEE} AND IS_GRANTABLE = 'YES') + (SELECT COUNT(*) "
        f"FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {GRANTEE} AND {q} LIKE TABLE_SCHEMA "
        "AND IS_GRANTABLE = 'YES')) > 0"), "--connect-timeout=10"))
    fields = r.stdout.rstrip("\n").split("\n")[-1].split("\t") if r.ok else []
    if len(fields) != 3:
        return None
    rows = run(sql_command(ctx, db, f"SELECT User, Host FROM mysql.user WHERE User IN ({sql_str(user)}, '')",
                           "--connect-timeout=10"))
    accounts = None
    if rows.ok:
        accounts = tuple(Account(*line.split("\t", 1)) for line in rows.stdout.splitlines() if "\t" in line)
    return ServerFacts(fields[0] == "1", fields[1], fields[2] == "1", accounts)


def preflight(ctx, run, login: Login, db: Mysql, like: Optional[Login]) -> List[Finding]:
    """P411: a login the plan makes can be made and will be the one matched; any other works as declared."""
    facts = server_facts(ctx, run, db, login.user)
    if like is not None:
        return _made(login, db, like, facts)
    return _existing(ctx, run, login, db, facts)


def _made(login: Login, db: Mysql, like: Login, facts: Optional[ServerFacts]) -> List[Finding]:
    if facts is None:
        return []  # the database's own login fails: P406
    out = []
    made = Account(login.user, account_host(login))
    if not facts.may_create:
        out.append(_p411(
            f"the restore into `{db.name}` makes `{login.name}` ({made}), but {facts.admin}, the login of "
            f"`{db.name}`, may not create users and grant", login, f"log in to `{db.name}` as an administrator "
            "(e.g. `run_as = \"root\"` over the socket), or grant it CREATE USER and GRANT OPTION",
            label="cannot create the login"))
    if facts.accounts is not None:
        won = match(facts.accounts + (made,), login.user, login.source_address if login.tcp_host else None,
                    facts.skip_name_resolve)
        if won is not None and won != made:
            out.append(_p411(
                f"the plan makes {made} for `{login.name}`, but the server would match the app's login "
                f"({connection_text(login)}) to {won}, which it has already", login,
                f"drop {won} on the server of `{db.name}` if nothing uses it, or declare the login as that "
                "account connects", label="another account wins"))
    return out


def _login_sql(database: str) -> str:
    q = sql_str(database)
    return (f"SELECT CURRENT_USER(), USER(), @@skip_name_resolve, (SELECT COUNT(*) FROM "
            f"information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {GRANTEE} AND {q} LIKE TABLE_SCHEMA) + "
            f"(SELECT COUNT(*) FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = {GRANTEE} AND "
            f"TABLE_SCHEMA = {q}) + (SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE "
            f"GRANTEE = {GRANTEE} AND PRIVILEGE_TYPE <> 'USAGE')")


def _existing(ctx, run, login: Login, db: Mysql, facts: Optional[ServerFacts]) -> List[Finding]:
    """The login must exist already: log in as declared, and see which account the app's address matches."""
    r = run(sql_command(ctx, as_client(login, db), _login_sql(db.database), "--connect-timeout=10"))
    if r.exit == 127:
        return []  # no client on the host: P402
    fields = r.stdout.rstrip("\n").split("\n")[-1].split("\t") if r.ok else []
    tried = f"tried: user {login.user}, {connection_text(login)}" + (
        f", run as OS user {login.run_as}" if login.run_as else "")
    if len(fields) == 4 and fields[3].isdigit():
        matched, seen = fields[0], fields[1]
        out = []
        if int(fields[3]) == 0:
            out.append(_p411(
                f"`{login.name}` logs in (as {matched}) but has no rights on `{db.database}`: the app would be "
                "refused at its first query", login,
                f"on the server, as an administrator: GRANT ALL ON {sql_ident(db.database)}.* TO "
                f"{_quoted(matched)};", [tried], label="no rights on the database"))
        if login.tcp_host and login.source_address and facts is not None and facts.accounts is not None:
            seen_from = seen.rpartition("@")[2]
            if seen_from != login.source_address:
                out += _from_elsewhere(login, db, facts, seen_from)
        return out
    err = " ".join(" ".join(line for line in r.stderr.splitlines() if line.strip()).split())
    err = re.sub(r"/\S*mdsl-secret\.\w+", "<option file>", err) or f"the client exited with {r.exit}"
    return [_refused(login, db, facts, err, tried)]


def _quoted(current_user: str) -> str:
    user, _, host = current_user.rpartition("@")
    return f"{sql_str(user)}@{sql_str(host)}"


def _from_elsewhere(login: Login, db: Mysql, facts: ServerFacts, seen_from: str) -> List[Finding]:
    """mdsl logged in from another address than the app will: judge the app's address on the accounts."""
    won = match(facts.accounts, login.user, login.source_address, facts.skip_name_resolve)
    if won is not None:
        return []
    return [_p411(
        f"`{login.name}` works from {seen_from}, but the app connects from {login.source_address}, and no account "
        f"of `{login.user}` on the server of `{db.name}` matches that address", login,
        f"create '{login.user}'@'{login.source_address}' with the same grants (or let the plan make it: "
        "`like = LOGIN`)", [f"accounts: {', '.join(map(str, facts.accounts)) or 'none'}"],
        label="no account for that address")]


def _refused(login: Login, db: Mysql, facts: Optional[ServerFacts], err: str, tried: str) -> Finding:
    """The login failed: say why in the server's terms when its accounts tell (the localhost/TCP trap)."""
    notes = [tried]
    help = f"create the user on the server of `{db.name}`, or let the plan make it: `like = LOGIN`"
    # 1045 "Access denied for user", or 1130 "Host ... is not allowed to connect" (no account of any user matches)
    refused = "access denied" in err.lower() or "not allowed to connect" in err.lower()
    if not refused or facts is None or facts.accounts is None:
        if refused:
            help = f"check the password of `{login.user}`, and that an account of it matches {connection_text(login)}"
        return _p411(f"the app's login `{login.name}` is refused by the server of `{db.name}`: {err}", login, help,
                     notes, label="login refused")
    mine = [a for a in facts.accounts if a.user == login.user]
    address = login.source_address if login.tcp_host else None
    won = match(facts.accounts, login.user, address, facts.skip_name_resolve)
    notes.append(f"accounts of `{login.user}`: {', '.join(map(str, mine)) or 'none'}"
                 f"; skip_name_resolve is {'ON' if facts.skip_name_resolve else 'OFF'}")
    if not mine:
        message = (f"`{login.user}` does not exist on the server of `{db.name}`: the app's login `{login.name}` "
                   "is refused")
    elif won is None and login.tcp_host and any(a.host == "localhost" for a in mine):
        message = (f"the app's login `{login.name}` comes over TCP from {address}, but `{login.user}` exists as "
                   f"'{login.user}'@'localhost'" + (
                       ", and the server runs with skip_name_resolve: a TCP login is matched by its address, "
                       "never as `localhost`" if facts.skip_name_resolve else
                       ", which matches socket logins (and TCP ones only where the address resolves to localhost)"))
        help = (f"create '{login.user}'@'{address}' with the grants of '{login.user}'@'localhost' (or let the plan "
                "make it: `like = LOGIN`), or have the app connect over the socket (for WordPress, DB_HOST = "
                "'localhost'; then declare `socket` on the login)")
    elif won is None:
        message = (f"no account of `{login.user}` matches the app's login `{login.name}` ({connection_text(login)}) "
                   f"on the server of `{db.name}`")
        help = f"create '{login.user}'@'{account_host(login)}' with the app's grants, or let the plan make it"
    else:
        message = (f"the server of `{db.name}` matches the app's login `{login.name}` to {won} and refuses it: "
                   "the password differs")
        help = (f"set the password of {won} to the one the app's configuration holds (ALTER USER ... IDENTIFIED BY), "
                f"or check {_password_text(login)}")
    return _p411(message, login, help, notes + [f"server: {err}"], label="login refused")


def _password_text(login: Login) -> str:
    """Where the login's password comes from, masked."""
    if isinstance(login.password, A.Secret):
        return login.password.masked()
    return "its literal password" if login.password is not None else f"that `{login.name}` needs none"

