"""The app's own PostgreSQL role: made on the target around a restore (`like = OTHER`), proven in preflight.

A dump carries tables, not roles, and mdsl restores with `--no-owner`: what the dump creates belongs to the
restoring role. A login with `like` is therefore made in two parts. Before the restore the role is created
(LOGIN) and its password set, as the SCRAM verifier the server would store, so the password reaches no
server log; the dump's own GRANTs to it then apply. After the restore, OTHER's server is asked, as OTHER
(the catalogs are readable by any role), what OTHER owns and was granted in its database: the database
itself, schemas, tables, sequences, views, functions, types; those become `ALTER ... OWNER TO` and `GRANT`
statements for the new role on the target database, run by the database's own (administrative) login in
one transaction. Then the step logs in as the app.

Preflight (P411) reads the server's pg_hba.conf rules (pg_hba_file_rules, superusers only) and finds the
line the app's connection will meet first, as the server does: a `peer` line for a login with a
password, a `reject`, or no line at all is PostgreSQL's version of MariaDB's localhost trap.
"""

from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Sequence, Tuple

import attrs
from attrs import frozen

from mdsl.compile.actions import Feed, Shell
from mdsl.compile.context import DEFAULT_TIMEOUT, CompileContext
from mdsl.compile.parts import Arg, Command, Lit, SecretArg, SecretText, Sub, sh
from mdsl.check.rules.p_preflight import P411
from mdsl.findings import Finding
from mdsl.model import Login
from mdsl.stores.logins import connection_text, default_source
from mdsl.stores.postgres import Postgres
from mdsl.stores.postgres.commands import conninfo, libpq_quote, tool_command

SEPARATOR = "\x1f"  # between the fields of a row preflight reads (names may hold `|` and `,`)


def _p411(message: str, login: Login, help: str, notes=(), label: str = "") -> Finding:
    return P411.finding(message, login.span, label=label, notes=tuple(notes), help=help)


def sql_ident(name: str) -> str:
    """A PostgreSQL identifier in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def sql_str(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: backslashes are plain)."""
    return "'" + value.replace("'", "''") + "'"


def as_client(login: Login, db: Postgres) -> Postgres:
    """The login as a connection: the database's host, name and programs, the login's role, password and way in."""
    return Postgres(name=login.name, host=db.host, database=db.database, user=login.user, tcp_host=login.tcp_host,
                    tcp_port=login.tcp_port or (None if login.tcp_host else db.tcp_port), socket=login.socket,
                    password=login.password, run_as=login.run_as, bin=db.bin, span=login.span)


def checkable_here(login: Login) -> bool:
    """True when psql on the database's host connects as the app does (the socket, or TCP from the
    address a connection from that host comes from), so mdsl's own login proves the app's."""
    return not login.tcp_host or login.source_address == default_source(login.tcp_host)


def _psql(ctx: CompileContext, db: Postgres, database: str, flags: str, *args,
          timeout: Optional[int] = None) -> Command:
    """psql on `database` of the server, connecting as `db` says (its role, password, way in)."""
    program = (db.bin.rstrip("/") + "/psql") if db.bin else "psql"
    info = conninfo(db, database) + (f" connect_timeout={libpq_quote(str(timeout))}" if timeout else "")
    return tool_command(ctx, db, (Lit(Arg(program).render()), Lit(flags), Arg(info, "--dbname="), *args), ("psql",))


# ---------------------------------------------------------------- compile: made around the restore


def owned_sql(target_db: str, role: str) -> str:
    """A query printing, one per line, the statements that give `role` on `target_db` what the session's role
    owns and was granted in its current database."""
    db, r = sql_str(target_db), sql_str(role)
    me = "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
    mine = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
    not_extension = ("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = {oid} AND e.classid = '{cat}'::regclass "
                     "AND e.deptype = 'e')")
    relkind = ("CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
               "WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END")
    return (
        "SET search_path = pg_catalog; "  # so every object prints schema-qualified
        "SELECT s FROM ("
        f"SELECT 1 AS o, format('ALTER DATABASE %I OWNER TO %I;', {db}, {r}) AS s FROM pg_database "
        f"WHERE datname = current_database() AND datdba = {me} "
        f"UNION ALL SELECT 2, format('GRANT %s ON DATABASE %I TO %I;', a.privilege_type, {db}, {r}) "
        f"FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() AND a.grantee = {me} "
        "AND d.datdba <> a.grantee "
        f"UNION ALL SELECT 3, format('ALTER SCHEMA %I OWNER TO %I;', n.nspname, {r}) FROM pg_namespace n "
        f"WHERE n.nspowner = {me} AND {mine} AND {not_extension.format(oid='n.oid', cat='pg_namespace')} "
        f"UNION ALL SELECT 4, format('GRANT %s ON SCHEMA %I TO %I;', a.privilege_type, n.nspname, {r}) "
        f"FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = {me} AND n.nspowner <> a.grantee "
        f"UNION ALL SELECT 5, format('ALTER %s %I.%I OWNER TO %I;', {relkind}, n.nspname, c.relname, {r}) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relowner = {me} AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f') AND {mine} "
        f"AND {not_extension.format(oid='c.oid', cat='pg_class')} "
        # a sequence that belongs to a column (serial, identity) follows its table's owner, and refuses one
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')) "
        "UNION ALL SELECT 6, format('GRANT %s ON %s %I.%I TO %I;', a.privilege_type, "
        f"CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname, {r}) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a "
        f"WHERE a.grantee = {me} AND c.relowner <> a.grantee AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f') "
        f"AND {mine} "
        "UNION ALL SELECT 7, format('ALTER %s %s OWNER TO %I;', CASE p.prokind WHEN 'p' THEN 'PROCEDURE' "
        f"WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, p.oid::regprocedure, {r}) "
        f"FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proowner = {me} AND {mine} "
        f"AND {not_extension.format(oid='p.oid', cat='pg_proc')} "
        "UNION ALL SELECT 8, format('ALTER %s %I.%I OWNER TO %I;', CASE t.typtype WHEN 'd' THEN 'DOMAIN' "
        f"ELSE 'TYPE' END, n.nspname, t.typname, {r}) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        f"WHERE t.typowner = {me} AND {mine} AND t.typtype IN ('e', 'd', 'r', 'c') AND t.typcategory <> 'A' "
        "AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') "
        f"AND {not_extension.format(oid='t.oid', cat='pg_type')}"
        ") x ORDER BY o, s;")


def restore_actions(ctx: CompileContext, login: Login, db: Postgres, like: Login, like_db: Postgres):
    """(before, after) the restore into `db`: the role made before (the dump's GRANTs to it apply), what
    `like` owns and was granted handed to it after, then a login as the app."""
    role = sql_ident(login.user)
    parts = [Lit(f"SELECT format('CREATE ROLE %I LOGIN', {sql_str(login.user)}) WHERE NOT EXISTS "
                 f"(SELECT FROM pg_roles WHERE rolname = {sql_str(login.user)}) \\gexec\n"
                 f"ALTER ROLE {role} LOGIN")]
    if login.password is not None:
        parts += [Lit(" PASSWORD "), SecretArg(login.password, escape="pg-password")]
    parts.append(Lit(";\n"))
    admin_flags = "-X -w -q -v ON_ERROR_STOP=1 --single-transaction -f -"
    make = attrs.evolve(_psql(ctx, db, "postgres", admin_flags), stdin=SecretText(parts))
    before = [Feed(make, f"make role {login.user} for {login.name}", timeout=300.0)]
    source = _psql(ctx, as_client(like, like_db), like_db.database, "-X -w -q -A -t",
                   Arg(owned_sql(db.database, login.user), "--command="))
    hand = _psql(ctx, db, db.database, admin_flags)
    after = [Feed(hand, f"give {login.user} what {like.user} owns and was granted", source, timeout=DEFAULT_TIMEOUT)]
    if checkable_here(login):
        who = _psql(ctx, as_client(login, db), db.database, "-X -w -q -A -t", Arg("select current_user", "--command="))
        after.append(Shell(ctx.command(db.host, sh(
            "got=$(", Sub(who), ") || exit 1; [ \"$got\" =", Arg(login.user), "] || { echo",
            Arg(f"mdsl: logged in as {login.name} but the server says"), "\"$got\" >&2; exit 1; }")),
            f"log in as {login.name}, as the app will", 120.0))
    return before, after


# ---------------------------------------------------------------- preflight (P411): pg_hba.conf, as the server reads it


@frozen
class HbaRule:
    """A line of pg_hba.conf, as pg_hba_file_rules shows it."""

    line: int
    type: str
    databases: Tuple[str, ...]
    users: Tuple[str, ...]
    address: str
    netmask: str
    method: str
    options: str = ""

    def __str__(self) -> str:
        where = f" {self.address}" + (f"/{self.netmask}" if self.netmask else "") if self.address else ""
        return (f"line {self.line}: {self.type} {','.join(self.databases)} {','.join(self.users)}{where} "
                f"{self.method}")


UNKNOWN = "unknown"  # a line that may or may not match (a group, samenet, a host name): the server decides


def _address_matches(rule: HbaRule, address: Optional[str]):
    if rule.address in ("", "all"):
        return True
    if address is None or rule.address in ("samehost", "samenet") or rule.address.startswith("."):
        return UNKNOWN
    try:
        net = ipaddress.ip_network(f"{rule.address}/{rule.netmask}" if rule.netmask else rule.address, strict=False)
        return ipaddress.ip_address(address) in net
    except ValueError:
        return UNKNOWN  # a host name


def first_rule(rules: Sequence[HbaRule], *, tcp: bool, address: Optional[str], database: str, user: str,
               ssl: bool):
    """The first line that matches a connection (None: no line does), or UNKNOWN when a line before it may."""
    types = ({"host", "hostssl" if ssl else "hostnossl", "hostnogssenc"} if tcp else {"local"})
    for rule in rules:
        if rule.type not in types:
            continue
        db_ok = ("all" in rule.databases or database in rule.databases
                 or ("sameuser" in rule.databases and database == user))
        if not db_ok:
            if any(d in ("samerole", "samegroup") or d.startswith("@") for d in rule.databases):
                return UNKNOWN
            continue
        if not ("all" in rule.users or user in rule.users):
            if any(u.startswith(("+", "@", "/")) for u in rule.users):
                return UNKNOWN
            continue
        ok = _address_matches(rule, address) if tcp else True
        if ok is UNKNOWN:
            return UNKNOWN
        if ok:
            return rule
    return None


@frozen
class ServerFacts:
    """What the database's own (administrative) login learns about roles and pg_hba.conf."""

    admin: str
    may_create: bool  # superuser or CREATEROLE
    superuser: bool
    ssl: bool
    rules: Optional[Tuple[HbaRule, ...]]  # None: pg_hba_file_rules is for superusers


def server_facts(ctx, run, db: Postgres) -> Optional[ServerFacts]:
    """Ask as the database's declared login (on the server's `postgres` database: the target may not exist)."""
    sep = "chr(31)"
    r = run(_psql(ctx, db, "postgres", "-X -w -q -A -t", Arg(
        f"select concat_ws({sep}, current_user, rolsuper or rolcreaterole, rolsuper, current_setting('ssl')) "
        "from pg_roles where rolname = current_user", "--command=")))
    fields = r.stdout.strip().split(SEPARATOR) if r.ok else []
    if len(fields) != 4:
        return None
    rules = None
    if fields[2] == "t":
        rows = run(_psql(ctx, db, "postgres", "-X -w -q -A -t", Arg(
            f"select concat_ws({sep}, line_number, type, array_to_string(database, ','), "
            f"array_to_string(user_name, ','), coalesce(address, ''), coalesce(netmask, ''), auth_method, "
            "coalesce(array_to_string(options, ' '), '')) from pg_hba_file_rules where error is null "
            "order by line_number", "--command=")))
        if rows.ok:
            rules = tuple(_rule(line.split(SEPARATOR)) for line in rows.stdout.splitlines()
                          if line.count(SEPARATOR) == 7)
    return ServerFacts(fields[0], fields[1] == "t", fields[2] == "t", fields[3] == "on", rules)


def _rule(f: List[str]) -> HbaRule:
    return HbaRule(int(f[0]), f[1], tuple(f[2].split(",")), tuple(f[3].split(",")), f[4], f[5], f[6], f[7])


def hba_findings(login: Login, db: Postgres, facts: Optional[ServerFacts]) -> List[Finding]:
    """The pg_hba.conf line the app's connection meets first, judged against how the login authenticates."""
    if facts is None or facts.rules is None:
        return []
    rule = first_rule(facts.rules, tcp=bool(login.tcp_host), address=login.source_address,
                      database=db.database, user=login.user, ssl=facts.ssl)
    if rule is UNKNOWN:
        return []
    what = f"the app's login `{login.name}` ({login.user}, {connection_text(login)})"
    if rule is None:
        return [_p411(f"no line of pg_hba.conf on the server of `{db.name}` accepts {what}", login,
                      "add a line for it (e.g. `host DB USER ADDRESS/32 scram-sha-256`) and reload the server",
                      label="no pg_hba.conf line")]
    if rule.method == "reject":
        return [_p411(f"pg_hba.conf on the server of `{db.name}` rejects {what}", login,
                      "change that line, or add one before it that accepts the app", [str(rule)], "rejected")]
    if rule.method in ("peer", "ident") and "map=" not in rule.options and login.run_as != login.user:
        return [_p411(
            f"pg_hba.conf on the server of `{db.name}` authenticates {what} by {rule.method}: only the OS user "
            f"`{login.user}` may log in as it, and the password is not asked", login,
            "make that line `scram-sha-256` (a password login), or declare `run_as` = the OS user the app "
            "runs as, named like its role", [str(rule)], label=f"{rule.method} auth")]
    if rule.method in ("md5", "scram-sha-256", "password") and login.password is None:
        return [_p411(f"pg_hba.conf on the server of `{db.name}` asks {what} for a password, and the login "
                      "declares none", login, 'declare `password = env("...")` on the login', [str(rule)],
                      label="password asked")]
    return []


def preflight(ctx, run, login: Login, db: Postgres, like: Optional[Login]) -> List[Finding]:
    """P411: a role the plan makes can be made and will be let in; any other logs in as declared."""
    facts = server_facts(ctx, run, db)
    if like is not None:
        out = []
        if facts is not None and not facts.may_create:
            out.append(_p411(
                f"the restore into `{db.name}` makes role `{login.user}` for `{login.name}`, but {facts.admin}, the "
                f"login of `{db.name}`, may not create roles", login,
                f"log in to `{db.name}` as a superuser (e.g. `run_as = \"postgres\"` over the socket)",
                label="cannot create the role"))
        return out + hba_findings(login, db, facts)
    return _existing(ctx, run, login, db, facts)


def _existing(ctx, run, login: Login, db: Postgres, facts: Optional[ServerFacts]) -> List[Finding]:
    r = run(_psql(ctx, as_client(login, db), db.database, "-X -w -q -A -t", Arg("select 1", "--command="),
                  timeout=10))
    if r.exit == 127:
        return []
    lines = [x for x in r.stderr.splitlines() if "could not change directory to" not in x]
    err = re.sub(r"/\S*mdsl-secret\.\w+", "<PGPASSFILE>", " ".join(" ".join(lines).split()))
    # Authentication comes before the database: a target database the restore creates is fine.
    if r.ok or f'database "{db.database}" does not exist' in err:
        # mdsl logged in from the database's host; an app elsewhere meets the lines for its own address
        return [] if checkable_here(login) else hba_findings(login, db, facts)
    found = hba_findings(login, db, facts)
    if found:
        return found
    if "password authentication failed" in err:
        help = f"set the password of role `{login.user}` to the one the app's configuration holds"
    elif "role" in err and "does not exist" in err:
        help = f"create role `{login.user}` on the server of `{db.name}`, or let the plan make it: `like = LOGIN`"
    else:
        help = "check the login's `user`, `password`, `tcp`/`socket` and `run_as` against the app's configuration"
    tried = f"tried: role {login.user}, {connection_text(login)}" + (
        f", run as OS user {login.run_as}" if login.run_as else "")
    return [_p411(f"the app's login `{login.name}` is refused by the server of `{db.name}`: "
                  f"{err or f'psql exited with {r.exit}'}", login, help, [tried], label="login refused")]
