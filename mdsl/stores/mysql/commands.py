"""MySQL/MariaDB: mariadb-dump (or mysqldump) into zstd, and a restore through the mariadb (or mysql) client.

Every client runs through a small `sh -c` wrapper that picks the MariaDB name
of the program when the host has it, else the MySQL one (Debian 13's MariaDB
has no `mysqldump`; MySQL hosts have no `mariadb-dump`), and passes
`--defaults-extra-file` first: a 0600 option file holding the password,
made for the command. A password never reaches argv or the environment. With
`run_as` (unix_socket auth as that OS user, Debian's default for root) only
the client runs as that user; files are read and written by the connecting
user. With `container` the wrapper runs inside that container (`docker exec`, the password as
MYSQL_PWD from a 0600 `--env-file`); the dump file, zstd and the restore filter stay on the host.
The restore filter is restore_filter.py. Measurements behind the choices: docs/performance.md (MariaDB block).
"""

from __future__ import annotations

import shlex
from typing import Tuple

from mdsl.compile.actions import Destination, Location, Shell
from mdsl.compile.context import DEFAULT_TIMEOUT, ArtifactFormat, CompileContext, option_value, parent, step_timeout
from mdsl.compile.docker import in_container
from mdsl.compile.parts import Arg, Command, CompileError, Lit, SecretArg, SecretText, Sub, sh
from mdsl.stores.mysql import Mysql
from mdsl.stores.mysql.restore_filter import CHUNK_BYTES, RESTORE_SCRIPT
from mdsl.stores.postgres.commands import RESTORE_JOBS_VAR, RESTORE_PART_SUFFIX, RestorePart, auto_jobs
from mdsl.syntax import ast as A

DUMP_PROGRAMS = ("mariadb-dump", "mysqldump")
CLIENT_PROGRAMS = ("mariadb", "mysql")
OPTION_FILE_VAR = "MDSL_MYSQL_OPTIONS"
CONTAINER_ENV_VAR = "MDSL_MYSQL_ENV"  # the `docker exec --env-file` of a database in a container

# --single-transaction: one consistent snapshot of InnoDB tables (with the writers stopped, as the checker
# demands, of everything); routines, triggers and events too; binary columns as hex, so the SQL text is
# valid whatever the bytes; utf8mb4 so 4-byte characters (emoji) survive whatever the server's default.
DUMP_FLAGS = "--single-transaction --routines --triggers --events --hex-blob --default-character-set=utf8mb4"
# Level 1 is both faster and smaller than level 3 on mariadb-dump's SQL (docs/performance.md).
ZSTD = "zstd -q -T0 -1 -c"
# mariadb-dump and mysqldump end every complete dump with this line (unless --skip-comments).
TRAILER = "-- Dump completed"
SENTINEL = "mdsl: restore complete"


def _wrapper(programs: Tuple[str, ...]) -> str:
    """`sh -c` text running the first of `programs` found, with the option file first when there is one."""
    names = " nor ".join(programs)
    find = " || ".join(f"command -v {p}" for p in programs)
    return (f'p=$({find}) || {{ echo "mdsl: neither {names} is installed" >&2; exit 127; }}; '
            f'exec "$p" ${{{OPTION_FILE_VAR}:+"--defaults-extra-file=${OPTION_FILE_VAR}"}} "$@"')


def connection_args(db: Mysql) -> Tuple:
    """How the client reaches the server: TCP, the socket file, or the client's default; and as whom."""
    out: list = []
    if db.tcp_host:
        out += [Lit("--protocol=tcp"), Arg(db.tcp_host, "--host="), Arg(str(db.tcp_port), "--port=")]
    elif db.socket:
        out += [Lit("--protocol=socket"), Arg(db.socket, "--socket=")]
    if db.user:
        out.append(Arg(db.user, "--user="))
    return tuple(out)


def _option_files(db: Mysql) -> Tuple[Tuple[str, SecretText], ...]:
    if db.password is None:
        return ()
    if not isinstance(db.password, A.Secret):
        raise CompileError(f"the password of `{db.name}` is a literal; use env(\"NAME\") or file(\"PATH\")",
                           db.password.span)
    return ((OPTION_FILE_VAR, SecretText([Lit("[client]\npassword="), SecretArg(db.password, escape="mycnf"),
                                          Lit("\n")])),)


def _container_env(db: Mysql) -> Tuple[Tuple[str, SecretText], ...]:
    """A database in a container gets its password through `docker exec --env-file` (a host file the
    container cannot read as an option file): MYSQL_PWD, which both clients read."""
    if db.password is None:
        return ()
    if not isinstance(db.password, A.Secret):
        raise CompileError(f"the password of `{db.name}` is a literal; use env(\"NAME\") or file(\"PATH\")",
                           db.password.span)
    return ((CONTAINER_ENV_VAR, SecretText([Lit("MYSQL_PWD="), SecretArg(db.password), Lit("\n")])),)


def client_command(ctx: CompileContext, db: Mysql, programs: Tuple[str, ...], args, tools=(),
                   stdin: bool = False) -> Command:
    """A MySQL/MariaDB client on the database's host, as its `run_as` user, with the option file; or inside
    its container (`stdin`: the client reads its stdin there: `docker exec -i`)."""
    h = ctx.host(db.host)
    parts = (Lit("sh -c"), Lit(shlex.quote(_wrapper(programs))), Lit(programs[0]), *connection_args(db), *args)
    if db.container:
        env = _container_env(db)
        return Command(db.host, in_container(db.container, parts, stdin=stdin,
                                             env_file=CONTAINER_ENV_VAR if env else None),
                       sudo=h.sudo, sudo_password=h.sudo_password, tools=("docker", *tools), secret_files=env,
                       argv=True)
    return Command(db.host, parts, run_as=db.run_as, sudo=h.sudo, sudo_password=h.sudo_password,
                   tools=("|".join(programs), *tools), secret_files=_option_files(db), argv=True)


def sql_ident(name: str) -> str:
    """A MySQL identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"


def sql_str(value: str) -> str:
    """A MySQL string literal (backslashes doubled: the default sql_mode reads them as escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def sql_command(ctx: CompileContext, db: Mysql, sql: str, *flags: str) -> Command:
    """The client running `sql` (no default database: it may not exist yet), tab-separated output."""
    return client_command(ctx, db, CLIENT_PROGRAMS, (Lit("--batch --skip-column-names"), *map(Lit, flags),
                                                     Arg(sql, "--execute=")))


def _same_host(db: Mysql, host: str, step: A.Step, what: str) -> None:
    if host != db.host:
        raise CompileError(f"{what} of `{db.name}` runs on its host `{db.host}`, not `{host}`", step.span,
                           help="dump where the database's client runs, then `transfer`" if what == "dump"
                           else "transfer the dump to the database's host first")


def dump(ctx: CompileContext, step: A.Dump, db: Mysql, host: str, path: str):
    """`dump DB to LOC`: the dump client into zstd as `PATH.part`, read back whole, then renamed."""
    _same_host(db, host, step, "dump")
    part = path + ".part"
    tool = client_command(ctx, db, DUMP_PROGRAMS, (Lit(DUMP_FLAGS), Lit("--"), Arg(db.database)))
    failed = f"mdsl: the dump of {db.name} failed"
    body = sh(
        "umask 077 && mkdir -p --", Arg(parent(path)), "&& rm -f --", Arg(part), "&&",
        # The client's exit status crosses the pipe on fd 3 (sh has no pipefail).
        "{ {", Sub(tool), "; echo $? >&3; } |", ZSTD, ">", Arg(part), "; } 3>&1 |",
        '{ read -r rc; [ "$rc" = 0 ] || { echo', Arg(failed), '"(exit ${rc:-killed})" >&2; exit 1; }; }',
        "&&", *complete(part, "zstd", f"the dump client exited 0 but {part}"),
        "&& mv -f -T --", Arg(part), Arg(path))
    ctx.remember(host, path, ArtifactFormat("mysql", "sql", "zstd"))
    cmd = ctx.command(host, body, tools=("zstd", "tail", "grep", "mkdir", "mv", "rm"))
    return ([Shell(cmd, f"dump {db.name} (mariadb-dump, zstd)", step_timeout(step, DEFAULT_TIMEOUT),
                   watch=Location(host, part))],
            [Destination(host, path, None, db.name)])


def _reader(path: str, compress: str) -> Tuple:
    """Shell that writes the dump's SQL to stdout: zstd, gzip, plain, or (unknown) told by its first bytes."""
    src = Arg(path)
    if compress == "zstd":
        return sh("zstd -q -dc <", src)
    if compress == "gzip":
        return sh("gzip -dc <", src)
    if compress == "none":
        return sh("cat <", src)
    return sh('case "$(head -c 4 <', src, '| od -An -tx1 | tr -d " \\n")" in',
              '28b52ffd) zstd -q -dc <', src, ";; 1f8b*) gzip -dc <", src, ";; *) cat <", src, ";; esac")


def complete(path: str, compress: str, what: str) -> Tuple:
    """`{ ... }` failing unless the dump at `path` reads back whole and ends with the client's closing line."""
    return sh("{", *_reader(path, compress), "| tail -c 4096 | grep -q -F --", Arg(TRAILER), "|| { echo",
              Arg(f"{what} is incomplete: it lacks the dump client's closing line"), ">&2; exit 1; }; }")


def _prepare(ctx: CompileContext, db: Mysql, replace: bool) -> Tuple:
    """Empty the database (`replace`: dropped and made again with its own charset and collation), or make
    sure it holds no table yet (the dump's DROP TABLE IF EXISTS would replace tables without asking)."""
    name, q = sql_ident(db.database), sql_str(db.database)
    if replace:
        sql = (f"SET @cs = (SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
               f"WHERE SCHEMA_NAME = {q}); "
               f"SET @co = (SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {q}); "
               f"DROP DATABASE IF EXISTS {name}; "
               f"SET @mdsl = CONCAT({sql_str('CREATE DATABASE ' + name)}, "
               "IF(@cs IS NULL, '', CONCAT(' CHARACTER SET ', @cs, ' COLLATE ', @co))); "
               "PREPARE mdsl_create FROM @mdsl; EXECUTE mdsl_create; DEALLOCATE PREPARE mdsl_create;")
        return (Sub(sql_command(ctx, db, sql)),)
    sql = (f"CREATE DATABASE IF NOT EXISTS {name}; "
           f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {q};")
    refuse = (f"mdsl: database {db.database} of {db.name} already holds tables; "
              "add `replace` to the restore to empty it")
    return sh("n=$(", Sub(sql_command(ctx, db, sql)), ") && { [ \"$n\" = 0 ] || { echo", Arg(refuse),
              "\"($n tables)\" >&2; exit 1; }; }")


def restore(ctx: CompileContext, step: A.Restore, db: Mysql, host: str, path: str):
    """`restore LOC into DB [replace] [jobs = N]`: read the dump back whole, empty or create the database,
    then load it through the restore filter into N clients at once.

    The filter (restore_filter.py) removes DEFINER clauses, holds secondary keys back until after the
    rows, and hands each table's part of the dump to the next free client through a FIFO, a big
    table's rows in several parts loaded at once (its keys and triggers after its last rows); what is
    not a table (views, routines, events) is loaded by one more client once every table is in. N is
    the restore host's CPU count (`nproc`, at most 8) unless `jobs =` says. The table parts wait in
    `LOC.restore.part/` (removed when the step ends) while every client is busy.
    """
    _same_host(db, host, step, "restore")
    known = ctx.format_of(host, path)
    if known is not None and known.engine != "mysql":
        raise CompileError(f'{host}:"{path}" holds a {known.engine} artifact, not a MySQL/MariaDB dump', step.span)
    compress = known.compress if known is not None else "detect"
    replace = bool(option_value(step, "replace", False))
    jobs = option_value(step, "jobs")
    # --unbuffered: what a client prints (the filter's markers) is in its output file once printed
    load = client_command(ctx, db, CLIENT_PROGRAMS, (Lit("--batch --skip-column-names --binary-mode --unbuffered"),
                                                    Lit("--"), Arg(db.database)), stdin=True)
    spool = path + RESTORE_PART_SUFFIX
    n = f'"${RESTORE_JOBS_VAR}"'
    each = f'i=0; while [ "$i" -lt {n} ]; do'
    count = sh(f"{RESTORE_JOBS_VAR}={int(jobs)};") if jobs is not None else auto_jobs()
    failed = f"mdsl: the restore into {db.name} stopped before the end of the dump"
    body = (sh("d=$(printf %s", Arg(spool), ");") + complete(path, compress, "the dump") + sh("&&")
            + _prepare(ctx, db, replace))
    body += sh("&& { umask 077 &&") + count + sh(
        'rm -rf -- "$d" && mkdir -- "$d" &&', each, 'mkfifo -- "$d/in$i" || exit 1;', "{", Sub(load),
        '< "$d/in$i" > "$d/out$i" 2>&1; echo $? > "$d/rc$i"; } & i=$((i+1)); done;',
        *_reader(path, compress), "| python3 -c", Lit(shlex.quote(RESTORE_SCRIPT)), '"$d"', n, str(CHUNK_BYTES),
        "; rc=$?;",
        # a client whose FIFO the filter never opened (it failed first) gets its end of input here
        each, ': 1<>"$d/in$i"; i=$((i+1)); done; wait;',
        each, '[ "$(cat "$d/rc$i" 2>/dev/null)" = 0 ] ||',
        '{ grep -v -e "^mdsl: [0-9]" "$d/out$i" | tail -n 5 >&2; rc=1; }; i=$((i+1)); done;',
        '[ "$rc" = 0 ] && out=$(', Sub(load), '< "$d/tail.sql") && { printf \'%s\\n\' "$out" | grep -q -x -F --',
        Arg(SENTINEL), "|| { echo", Arg(failed), '>&2; false; }; }; }; rc=$?; rm -rf -- "$d"; [ "$rc" = 0 ]')
    unzip = {"zstd": ("zstd",), "gzip": ("gzip",), "none": ()}.get(compress, ("zstd", "gzip", "head", "od", "tr"))
    cmd = ctx.command(host, body, tools=("python3", "mkfifo", "tail", "grep", *unzip))
    how = "replace" if replace else "into an empty database"
    dests = [RestorePart(host, spool, None, Location(host, path))]
    return [Shell(cmd, f"restore {db.name} ({how}, parallel)", step_timeout(step, DEFAULT_TIMEOUT),
                  show_output=True)], dests


def drop(ctx: CompileContext, step: A.Drop, db: Mysql):
    """`drop DB`: DROP DATABASE IF EXISTS."""
    cmd = ctx.command(db.host, (Sub(sql_command(ctx, db, f"DROP DATABASE IF EXISTS {sql_ident(db.database)};")),))
    return [Shell(cmd, f"drop database {db.database}", step_timeout(step, DEFAULT_TIMEOUT))]
