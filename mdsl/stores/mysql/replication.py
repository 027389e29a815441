"""MariaDB: `replicate DB to DB live` and its final pass, by a snapshot and binlog replication with GTID.

The live pass (the source's writers still run):
  1. a tunnel (mdsl's SSH connections) from 127.0.0.1:PORT on the target to the source's server;
  2. on the target, what an earlier, killed live pass left: its replication connection (a named one,
     `mdsl_<hash>`, MariaDB's multi-source replication, so a replication the admin has is never
     touched) stopped and reset, and the database it was filling (marked by its comment) dropped; then
     the database is created if missing, refused if it holds tables, and marked. The source's and the
     target's server_id are compared first (equal ids: the target would skip every event);
  3. on the target host, `mariadb-dump --single-transaction --gtid --master-data=2` of the source's
     database read through the tunnel, streamed into the target's database (both exit statuses checked:
     the GTID line is the dump's last, and a replica without it replays the source's binlog from its
     start): one consistent snapshot
     with the GTID position it was taken at (the dump's `SET GLOBAL gtid_slave_pos` line, made active),
     its enabled scheduled events made `DISABLE ON SLAVE` on the way in (as MariaDB marks every event a
     replica receives): what the source's runs of them write arrives by replication, and the target's
     must not write it again. An event the rewrite missed is made so right after the snapshot;
  4. `CHANGE MASTER 'mdsl_<hash>' TO` 127.0.0.1:PORT with `MASTER_USE_GTID = slave_pos`, filtered to the
     one database (`replicate_do_db`, with `replicate_rewrite_db` when the target's name differs: both
     dynamic per connection in MariaDB 10.11), `START SLAVE`.
Row-based binlog events carry every row (AUTO_INCREMENT values and SEQUENCE objects' state with them),
and the binlog carries DDL too. Nothing is created on the source: its binlog dump thread ends with the
connection.

The final pass (every writer stopped): reads the source's `@@gtid_binlog_pos`, then waits on the target
(`MASTER_GTID_WAIT`, in steps, failing at once when the connection stopped on an error, and at the step's
timeout) until it executed all of it (events of other databases, filtered out, advance the position too);
then `STOP SLAVE`, `RESET SLAVE ALL` for that connection (its master.info with the password goes), unmarks
the target; then each of the database's scheduled events gets the status it has on the source (ENABLE,
DISABLE or DISABLE ON SLAVE, with its definer), and the tunnel closes. Every part may run again after a kill.
"""

from __future__ import annotations

import shlex
from typing import List, Optional

import attrs

from mdsl.check.rules.p_preflight import P413
from mdsl.compile.actions import Feed, ReplicationObjects, Shell, Tunnel
from mdsl.compile.context import DEFAULT_TIMEOUT, CompileContext, step_timeout
from mdsl.compile.parts import Arg, Command, CompileError, Lit, SecretArg, SecretText, Sub, sh
from mdsl.findings import Finding
from mdsl.stores.mysql import Mysql
from mdsl.stores.mysql.commands import (CLIENT_PROGRAMS, DUMP_FLAGS, DUMP_PROGRAMS, OPTION_FILE_VAR, _wrapper,
                                        client_command, sql_command, sql_ident, sql_str)
from mdsl.stores.postgres.replication import replication_name, tunnel_port
from mdsl.syntax import ast as A

__all__ = ["replication_name", "live", "final", "preflight"]

DEFAULT_PORT = 3306
MARK = "mdsl: replica being filled by replicate ... live"
# The dump's client on the target host logs in to the source through the tunnel with the source's
# password: its own option file, so it does not clash with the target client's in one shell.
SOURCE_OPTIONS_VAR = "MDSL_MYSQL_SOURCE_OPTIONS"
# --master-data=2 --gtid: the snapshot's GTID position as a commented `SET GLOBAL gtid_slave_pos` line
# (MariaDB takes it from the consistent snapshot, Binlog_snapshot_file/position: no global read lock).
# --skip-add-locks: LOCK TABLES around a table's rows fails for a table whose DEFAULT takes a sequence's
# next value (ERROR 1100: the sequence is not locked); the restore filter leaves them out too.
SNAPSHOT_FLAGS = "--gtid --master-data=2 --skip-add-locks"
GTID_LINE = "s/^-- SET GLOBAL gtid_slave_pos=/SET GLOBAL gtid_slave_pos=/"
# mariadb-dump writes an event as one line: SHOW CREATE EVENT's statement in versioned comments, the
# DEFINER in one of its own; the status word follows `ON COMPLETION [NOT] PRESERVE` (sql/event_data_objects.cc
# writes the schedule as AT '...' or EVERY N|'...' UNIT [STARTS '...'] [ENDS '...']). An ENABLE there becomes
# DISABLE ON SLAVE before the target's client sees it: an event enabled even for an instant may run (its
# STARTS is in the past). sed -E; `\1` is the whole head (the outermost group opens first).
_IDENT = "`([^`]|``)*`"
EVENT_HEAD = (r"^(/\*!50106 CREATE\*/ (/\*!50117 DEFINER=" + _IDENT + "(@" + _IDENT + r")?\*/ )?/\*!50106 EVENT "
              + _IDENT + " ON SCHEDULE (AT '[^']*'|EVERY (-?[0-9]+|'[^']*') [A-Z_]+( STARTS '[^']*')?( ENDS '[^']*')?)"
              " ON COMPLETION (NOT )?PRESERVE )ENABLE ")
EVENT_LINE = "s#" + EVENT_HEAD + "#\\1DISABLE ON SLAVE #"
# The final wait asks MASTER_GTID_WAIT for this many seconds at a time, checking between two asks that
# the connection still runs (a row the target refuses stops it: no use waiting for the timeout).
WAIT_SLICE = 1
# A connection not running (its I/O thread reconnecting through a tunnel a resumed run reopened, or its
# SQL thread stopped on an error) for this many seconds fails the wait.
STOPPED_GRACE = 20
BATCH = "--batch --skip-column-names --raw"


def _check_names(step: A.Replicate, src: Mysql, dst: Mysql) -> None:
    # replicate_do_db and replicate_rewrite_db are comma-separated lists of `from->to` pairs.
    for db in (src, dst):
        if "," in db.database or "->" in db.database:
            raise CompileError(f"database `{db.database}` of `{db.name}` has a `,` or `->` in its name, which "
                               "MariaDB's replication filters cannot name", step.span,
                               help="copy it with `dump` and `restore` after the stop")


def _tunnel(step: A.Replicate, src: Mysql, dst: Mysql, close: bool = False) -> Tunnel:
    return Tunnel(src.host, src.tcp_host or "127.0.0.1", src.tcp_port or DEFAULT_PORT, dst.host,
                  tunnel_port(step, src, dst), close)


def _admin(ctx: CompileContext, dst: Mysql, script, what: str, timeout: Optional[float] = 600.0,
           source: Optional[Command] = None) -> Feed:
    """The target's client (as declared) running `script` (text, or parts with secrets) from stdin."""
    cmd = client_command(ctx, dst, CLIENT_PROGRAMS, (Lit(BATCH),), stdin=True)
    parts = script if isinstance(script, tuple) else (Lit(script),)
    return Feed(attrs.evolve(cmd, stdin=SecretText(parts)), what, source=source, timeout=timeout)


# ---------------------------------------------------------------- SQL


def stop_connection_sql(name: str) -> str:
    """The connection `name` stopped and forgotten (its master.info too); nothing when there is none."""
    return ("DELIMITER //\n"
            "BEGIN NOT ATOMIC DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; "
            f"STOP SLAVE {sql_str(name)}; RESET SLAVE {sql_str(name)} ALL; END//\n"
            "DELIMITER ;\n")


def _marked(dst: Mysql) -> str:
    return (f"EXISTS (SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {sql_str(dst.database)} "
            f"AND SCHEMA_COMMENT = {sql_str(MARK)})")


def server_ids_sql(dst: Mysql) -> str:
    """On the source: prints a statement for the target that fails when both servers have one server_id."""
    msg = (f"the source and the target of {dst.name} have the same server_id: a replica skips the events "
           "of its own id; give one of them another `server_id` (my.cnf, then a restart)")
    return ("SELECT CONCAT('BEGIN NOT ATOMIC IF @@server_id = ', @@server_id, ' THEN SIGNAL SQLSTATE ''45000'' "
            f"SET MESSAGE_TEXT = ', QUOTE({sql_str(msg)}), '; END IF; END//')")


def prepare_target_sql(dst: Mysql, name: str) -> str:
    """On the target: what a killed live pass left gone, then an empty, marked database."""
    d, ident = sql_str(dst.database), sql_ident(dst.database)
    refuse = (f"the target database {dst.database} already holds tables: replication fills an empty database; "
              f"drop it first (`drop {dst.name}`)")
    return (
        stop_connection_sql(name)
        + "DELIMITER //\n"
        f"BEGIN NOT ATOMIC IF {_marked(dst)} THEN DROP DATABASE {ident}; END IF; "
        f"CREATE DATABASE IF NOT EXISTS {ident}; "
        f"IF EXISTS (SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {d}) THEN "
        f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {sql_str(refuse[:500])}; END IF; END//\n"
        "DELIMITER ;\n"
        f"ALTER DATABASE {ident} COMMENT = {sql_str(MARK)};\n")


def start_sql(src: Mysql, dst: Mysql, name: str, port: int) -> tuple:
    """On the target: the named connection through the tunnel, from the snapshot's GTID position, filtered
    to the one database (parts: the password is a secret)."""
    user = src.user or src.run_as or "root"
    parts = [Lit(f"CHANGE MASTER {sql_str(name)} TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {port}, "
                 f"MASTER_USER = {sql_str(user)}, ")]
    if isinstance(src.password, A.Secret):
        parts += [Lit("MASTER_PASSWORD = "), SecretArg(src.password, escape="mysql-literal"), Lit(", ")]
    parts.append(Lit("MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;\n"))
    if src.database != dst.database:
        parts.append(Lit(f"SET GLOBAL {name}.replicate_rewrite_db = "
                         f"{sql_str(src.database + '->' + dst.database)};\n"))
    parts.append(Lit(f"SET GLOBAL {name}.replicate_do_db = {sql_str(dst.database)};\n"
                     f"START SLAVE {sql_str(name)};\n"))
    return tuple(parts)


def wait_position_sql(dst: Mysql, name: str, timeout: float) -> str:
    """On the source (its writers stopped): prints the statement that waits on the target until it executed
    the source's binlog up to now. Nothing to wait for once the final pass unmarked the target (a resumed
    final pass)."""
    stopped = (f"the replication into {dst.name} has not run for {STOPPED_GRACE} s: "
               f"`SHOW SLAVE {sql_str(name)} STATUS` on the target says why (Last_SQL_Error)")
    late = f"the replication into {dst.name} has not caught up within {int(timeout)} s"
    body = (f"BEGIN NOT ATOMIC DECLARE waited INT DEFAULT 0; DECLARE idle INT DEFAULT 0; IF {_marked(dst)} THEN "
            f"SET @@default_master_connection = {sql_str(name)}; "
            "w: LOOP IF MASTER_GTID_WAIT(@mdsl_goal, {slice}) = 0 THEN LEAVE w; END IF; "
            "SET waited = waited + {slice}; "
            "IF COALESCE((SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
            "WHERE VARIABLE_NAME = 'SLAVE_RUNNING'), 'OFF') = 'ON' THEN SET idle = 0; "
            "ELSE SET idle = idle + {slice}; END IF; "
            "IF idle >= {grace} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {stopped}; END IF; "
            "IF waited >= {timeout} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {late}; END IF; "
            "END LOOP w; END IF; END//").format(slice=WAIT_SLICE, grace=STOPPED_GRACE, timeout=int(timeout),
                                                 stopped=sql_str(stopped), late=sql_str(late))
    return f"SELECT CONCAT('SET @mdsl_goal = ', QUOTE(@@gtid_binlog_pos), ';\nDELIMITER //\n', {sql_str(body)})"


def _event_statements(schema: str, dst: Mysql, status: str, where: str = "") -> str:
    """A SELECT printing `ALTER DEFINER = ... EVENT dst.name <status>;` for each event of `schema`: ALTER
    EVENT makes whoever runs it the definer unless it names one, so it names the one the event has.
    `status` is an SQL expression over information_schema.EVENTS."""
    # information_schema says user@host (the host has no `@`, a user name may) or, for a role, role
    host = "SUBSTRING_INDEX(DEFINER, '@', -1)"
    definer = (f"IF(LOCATE('@', DEFINER) = 0, QUOTE(DEFINER), CONCAT(QUOTE(LEFT(DEFINER, CHAR_LENGTH(DEFINER) - "
               f"CHAR_LENGTH({host}) - 1)), '@', QUOTE({host})))")
    return (f"SELECT CONCAT('ALTER DEFINER = ', {definer}, ' EVENT ', {sql_str(sql_ident(dst.database))}, '.`', "
            f"REPLACE(EVENT_NAME, '`', '``'), '` ', {status}, ';') FROM information_schema.EVENTS "
            f"WHERE EVENT_SCHEMA = {sql_str(schema)}{where} ORDER BY EVENT_NAME")


def hold_events_sql(dst: Mysql) -> str:
    """On the target, after the snapshot: prints what makes an event still enabled there (one the
    snapshot's rewrite missed: a name with a line break) DISABLE ON SLAVE."""
    return _event_statements(dst.database, dst, "'DISABLE ON SLAVE'", " AND STATUS = 'ENABLED'")


def event_status_sql(src: Mysql, dst: Mysql) -> str:
    """On the source (its writers stopped): prints what gives each of the target's events the status the
    source's has. Replicated events arrive DISABLE ON SLAVE; the snapshot's were made so."""
    status = ("CASE STATUS WHEN 'ENABLED' THEN 'ENABLE' WHEN 'DISABLED' THEN 'DISABLE' "
              "ELSE 'DISABLE ON SLAVE' END")
    return _event_statements(src.database, dst, status)


def end_sql(dst: Mysql, name: str) -> str:
    """On the target: the connection gone, the database unmarked."""
    return stop_connection_sql(name) + f"ALTER DATABASE {sql_ident(dst.database)} COMMENT = '';\n"


# ---------------------------------------------------------------- the steps


def _ere(text: str) -> str:
    """`text` matched literally by sed -E, between `#` delimiters."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}#" else c for c in text)


def _renamed_sequences(src: Mysql, dst: Mysql) -> tuple:
    """sed arguments pointing a column's `DEFAULT nextval(`src`.`seq`)` (SHOW CREATE TABLE names the
    database) at the target's database, on the column lines of CREATE TABLE (two spaces, a backquote)."""
    if src.database == dst.database:
        return ()
    new = sql_ident(dst.database).replace("\\", "\\\\").replace("&", "\\&").replace("#", "\\#")
    return ("-e", Arg(f"/^  `/s# DEFAULT nextval\\({_ere(sql_ident(src.database))}\\.# DEFAULT nextval({new}.#"))


def _snapshot(ctx: CompileContext, step: A.Replicate, src: Mysql, dst: Mysql) -> Shell:
    """On the target host: the source's database dumped through the tunnel into the target's."""
    port = tunnel_port(step, src, dst)
    through = attrs.evolve(src, host=dst.host, tcp_host="127.0.0.1", tcp_port=port, socket=None, run_as=None,
                           container=None, user=src.user or src.run_as or "root")
    dump = client_command(ctx, through, DUMP_PROGRAMS, (Lit(DUMP_FLAGS), Lit(SNAPSHOT_FLAGS), Lit("--"),
                                                        Arg(src.database)))
    wrapper = _wrapper(DUMP_PROGRAMS).replace(OPTION_FILE_VAR, SOURCE_OPTIONS_VAR)
    dump = attrs.evolve(dump, parts=(dump.parts[0], Lit(shlex.quote(wrapper)), *dump.parts[2:]),
                        secret_files=tuple((SOURCE_OPTIONS_VAR, text) for _, text in dump.secret_files))
    load = client_command(ctx, dst, CLIENT_PROGRAMS, (Lit("--batch"), Lit("--"), Arg(dst.database)))
    failed = f"mdsl: the snapshot of {src.name} failed"
    body = sh(
        # Both exit statuses cross the pipes on fd 3 (sh has no pipefail), the load's first when it fails
        # early; a load that stopped must fail the step (the GTID line is the dump's last statement).
        "{ {", Sub(dump), '; echo "dump $?" >&3; } | sed -E -e', Arg(GTID_LINE), "-e", Arg(EVENT_LINE),
        *_renamed_sequences(src, dst), "|", Sub(load), '>&2; echo "load $?" >&3; } 3>&1 |',
        '{ n=0; ok=1; while read -r what rc; do n=$((n + 1)); [ "$rc" = 0 ] || { echo', Arg(failed),
        '"($what exit $rc)" >&2; ok=0; }; done; [ "$n" = 2 ] || { echo', Arg(failed), '"(killed)" >&2; ok=0; };',
        '[ "$ok" = 1 ]; }')
    cmd = ctx.command(dst.host, body, tools=("sed",))
    return Shell(cmd, f"copy a snapshot of {src.name} into {dst.name} (mariadb-dump through the tunnel)",
                 step_timeout(step, DEFAULT_TIMEOUT))


def objects(ctx: CompileContext, src: Mysql, dst: Mysql) -> ReplicationObjects:
    """The replication connection on the target, and the command that removes it with no plan (journaled:
    a plan edited between the two passes still has it removed)."""
    name = replication_name(src, dst)
    return ReplicationObjects(name, [_admin(ctx, dst, stop_connection_sql(name), "").command])


def live(ctx: CompileContext, step: A.Replicate, src: Mysql, dst: Mysql) -> List:
    """`replicate SRC to DST live`: the actions of the live pass (see the module's docstring)."""
    _check_names(step, src, dst)
    name = replication_name(src, dst)
    return [
        _tunnel(step, src, dst),
        _admin(ctx, dst, "DELIMITER //\n", f"compare the server ids of {src.name} and {dst.name}",
               source=sql_command(ctx, src, server_ids_sql(dst), "--raw")),
        _admin(ctx, dst, prepare_target_sql(dst, name), f"prepare {dst.name} for replication"),
        _snapshot(ctx, step, src, dst),
        _admin(ctx, dst, "", f"keep {dst.name}'s events from running while it replicates",
               source=sql_command(ctx, dst, hold_events_sql(dst), "--raw")),
        attrs.evolve(_admin(ctx, dst, start_sql(src, dst, name, tunnel_port(step, src, dst)),
                            f"replicate {src.name} into {dst.name} from the snapshot's GTID position"),
                     creates=objects(ctx, src, dst)),
    ]


def final(ctx: CompileContext, step: A.Replicate, src: Mysql, dst: Mysql) -> List:
    """`replicate SRC to DST`: the final pass (see the module's docstring)."""
    _check_names(step, src, dst)
    name = replication_name(src, dst)
    timeout = step_timeout(step, 600.0)
    return [
        _tunnel(step, src, dst),
        _admin(ctx, dst, "", f"wait until {dst.name} has executed {src.name}'s binlog", timeout=timeout + 60,
               source=sql_command(ctx, src, wait_position_sql(dst, name, timeout), "--raw")),
        attrs.evolve(_admin(ctx, dst, end_sql(dst, name), f"end {dst.name}'s replication connection"),
                     removes=name),
        # after the connection is gone: an event running on the target while rows still arrive could
        # write the rows the source's run of it writes (a duplicate key stops the replication)
        _admin(ctx, dst, "", f"give {dst.name}'s events the status they have on {src.name}",
               source=sql_command(ctx, src, event_status_sql(src, dst), "--raw")),
        _tunnel(step, src, dst, close=True),
    ]


# ---------------------------------------------------------------- preflight (P413)


def _p413(step: A.Replicate, message: str, help: str, notes=(), label: str = "") -> Finding:
    return P413.finding(message, step.span, label=label, notes=tuple(notes), help=help)


def _grantee() -> str:
    return ("CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', "
            "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')")


def _has(privileges: str) -> str:
    return (f"(SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {_grantee()} "
            f"AND PRIVILEGE_TYPE IN ({privileges}))")


SOURCE_FIELDS = ("VERSION()", "CURRENT_USER()", "@@log_bin", "@@binlog_format", "@@server_id",
                 "@@skip_networking", "@@port", _has("'REPLICATION SLAVE'"), _has("'BINLOG MONITOR', 'SUPER'"))
TARGET_FIELDS = ("VERSION()", "CURRENT_USER()", "@@server_id",
                 _has("'SUPER', 'REPLICATION SLAVE ADMIN'"))


def _ask(ctx, run, db: Mysql, fields) -> Optional[List[str]]:
    """One row of `fields` read as `db`'s login; None when the client fails (the login itself is P406's)."""
    r = run(sql_command(ctx, db, "SELECT " + ", ".join(fields), "--connect-timeout=10"))
    row = r.stdout.rstrip("\n").split("\n")[-1].split("\t") if r.ok else []
    return row if len(row) == len(fields) else None


def preflight(ctx, run, step: A.Replicate, src: Mysql, dst: Mysql, side: str) -> List[Finding]:
    """P413 on the `side` ("source" or "target") of a live pass, asked on that database's host."""
    return _source_findings(ctx, run, step, src) if side == "source" else _target_findings(ctx, run, step, src, dst)


def _not_mariadb(step: A.Replicate, db: Mysql, version: str) -> List[Finding]:
    if "mariadb" in version.lower():
        return []
    return [_p413(step, f"`{db.name}`'s server is MySQL {version}: mdsl replicates between MariaDB servers only "
                        "(MariaDB's GTIDs; a MySQL 8 source and a MariaDB target also differ in collations and "
                        "binlog events)", label="not MariaDB",
                  help="copy this database with `dump` and `restore` after the stop")]


def _source_findings(ctx, run, step: A.Replicate, src: Mysql) -> List[Finding]:
    row = _ask(ctx, run, src, SOURCE_FIELDS)
    if row is None:
        return []
    version, user, log_bin, binlog_format, server_id, skip_networking, port, repl_slave, monitor = row
    out = _not_mariadb(step, src, version)
    if out:
        return out
    restart = ("changing it takes effect only after a restart of the server (a short stop of every app on it)",)
    if log_bin != "1":
        out.append(_p413(step, f"`{src.name}`'s server writes no binary log (log_bin is off): replication reads "
                               "the changes from it", label="no binlog", notes=restart,
                         help="in the server's my.cnf [mariadbd] section: `log_bin`, `binlog_format = ROW` and a "
                              "`server_id` of its own, then restart the source's server before the move"))
    elif binlog_format.upper() != "ROW":
        out.append(_p413(step, f"`{src.name}`'s server logs with binlog_format = {binlog_format}: mdsl needs ROW "
                               "(every row change as it happened, whatever the statement)", label="not ROW",
                         notes=restart + ("`SET GLOBAL binlog_format = ROW` also works for new sessions only: the "
                                          "app's open connections keep the old format",),
                         help="`binlog_format = ROW` in the server's my.cnf, then restart the source's server"))
    if server_id == "0":
        out.append(_p413(step, f"`{src.name}`'s server has server_id = 0, with which it refuses replicas",
                         label="server_id 0", help="give it a `server_id` of its own in my.cnf (a restart)"))
    if skip_networking == "1":
        out.append(_p413(step, f"`{src.name}`'s server listens on no TCP port (skip_networking): the replication "
                               "arrives through mdsl's tunnel over TCP", label="no TCP",
                         help="remove skip_networking, with `bind_address = 127.0.0.1` (a restart)"))
    if not src.tcp_host and port not in (str(DEFAULT_PORT), "0"):
        out.append(_p413(step, f"`{src.name}` is declared by its socket, and its server listens on port {port}: the "
                               f"tunnel would reach 127.0.0.1:{DEFAULT_PORT}", label="which port",
                         help=f"declare `tcp = \"127.0.0.1:{port}\"` (with `user` and `password`) on `{src.name}`"))
    if src.password is None:
        out.append(_p413(step, f"`{src.name}` has no `password`: the target's server logs in to it over TCP, "
                               "through the tunnel, with the declared user and password (unix_socket does not work "
                               "there)", label="no password",
                         help=f"declare `user` and `password = env(\"...\")` on `{src.name}`, a user the source "
                              "accepts from 127.0.0.1"))
    missing = [p for p, ok in (("REPLICATION SLAVE", repl_slave), ("BINLOG MONITOR", monitor)) if ok == "0"]
    if missing:
        who = "'" + user.replace("@", "'@'", 1) + "'" if "@" in user else user
        out.append(_p413(step, f"`{src.name}`'s login {user} lacks {' and '.join(missing)}: the target reads the "
                               "binlog as this user, and the snapshot asks for its GTID position",
                         label="no REPLICATION SLAVE" if "REPLICATION SLAVE" in missing else "no BINLOG MONITOR",
                         help=f"`GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {who};` on the source, or "
                              "declare a login that has them"))
    return out


def _target_findings(ctx, run, step: A.Replicate, src: Mysql, dst: Mysql) -> List[Finding]:
    row = _ask(ctx, run, dst, TARGET_FIELDS)
    if row is None:
        return []
    version, user, server_id, admin = row
    out = _not_mariadb(step, dst, version)
    if out:
        return out
    if server_id == "0":
        out.append(_p413(step, f"`{dst.name}`'s server has server_id = 0, with which it cannot replicate",
                         label="server_id 0", help="give it a `server_id` of its own in my.cnf (a restart)"))
    if admin == "0":
        out.append(_p413(step, f"`{dst.name}`'s login {user} may not set up replication: CHANGE MASTER needs "
                               "SUPER or REPLICATION SLAVE ADMIN", label="no REPLICATION SLAVE ADMIN",
                         help="declare the target with an administrative login (e.g. `run_as = \"root\"`)"))
    r = run(sql_command(ctx, dst, "SHOW ALL SLAVES STATUS", "--connect-timeout=10"))
    ours = replication_name(src, dst)
    others = sorted({line.split("\t", 1)[0] or "''" for line in r.stdout.splitlines() if line.strip()}
                    - {ours}) if r.ok else []
    if others:
        out.append(_p413(step, f"`{dst.name}`'s server already replicates ({', '.join(others)}): the live pass "
                               "sets the server's gtid_slave_pos, which would move that replication's position",
                         label="a replication runs there",
                         help="move into a server that replicates nothing, or copy with `dump` and `restore`"))
    return out
