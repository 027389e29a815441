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
Measurements behind the choices: docs/stores-mysql-redis.md.
"""

from __future__ import annotations

import shlex
from typing import Tuple

from mdsl.compile.actions import Destination, Location, Shell
from mdsl.compile.context import DEFAULT_TIMEOUT, ArtifactFormat, CompileContext, option_value, parent, step_timeout
from mdsl.compile.docker import in_container
from mdsl.compile.parts import Arg, Command, CompileError, Lit, SecretArg, SecretText, Sub, sh
from mdsl.stores.mysql import Mysql
from mdsl.syntax import ast as A

DUMP_PROGRAMS = ("mariadb-dump", "mysqldump")
CLIENT_PROGRAMS = ("mariadb", "mysql")
OPTION_FILE_VAR = "MDSL_MYSQL_OPTIONS"
CONTAINER_ENV_VAR = "MDSL_MYSQL_ENV"  # the `docker exec --env-file` of a database in a container

# --single-transaction: one consistent snapshot of InnoDB tables (with the writers stopped, as the checker
# demands, of everything); routines, triggers and events too; binary columns as hex, so the SQL text is
# valid whatever the bytes; utf8mb4 so 4-byte characters (emoji) survive whatever the server's default.
DUMP_FLAGS = "--single-transaction --routines --triggers --events --hex-blob --default-character-set=utf8mb4"
# Level 1 is both faster and smaller than level 3 on mariadb-dump's SQL (docs/stores-mysql-redis.md).
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
        sql = (f"SET @cs = (SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {q}); "
               f"SET @co = (SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {q}); "
               f"DROP DATABASE IF EXISTS {name}; "
               f"SET @mdsl = CONCAT({sql_str('CREATE DATABASE ' + name)}, "
               "IF(@cs IS NULL, '', CONCAT(' CHARACTER SET ', @cs, ' COLLATE ', @co))); "
               "PREPARE mdsl_create FROM @mdsl; EXECUTE mdsl_create; DEALLOCATE PREPARE mdsl_create;")
        return (Sub(sql_command(ctx, db, sql)),)
    sql = (f"CREATE DATABASE IF NOT EXISTS {name}; "
           f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {q};")
    refuse = f"mdsl: database {db.database} of {db.name} already holds tables; add `replace` to the restore to empty it"
    return sh("n=$(", Sub(sql_command(ctx, db, sql)), ") && { [ \"$n\" = 0 ] || { echo", Arg(refuse),
              "\"($n tables)\" >&2; exit 1; }; }")


def restore(ctx: CompileContext, step: A.Restore, db: Mysql, host: str, path: str):
    """`restore LOC into DB [replace]`: read the dump back whole, empty or create the database, then load it
    through the restore filter (DEFINER clauses removed, secondary keys built after the rows) into the client.
    """
    _same_host(db, host, step, "restore")
    known = ctx.format_of(host, path)
    if known is not None and known.engine != "mysql":
        raise CompileError(f'{host}:"{path}" holds a {known.engine} artifact, not a MySQL/MariaDB dump', step.span)
    compress = known.compress if known is not None else "detect"
    replace = bool(option_value(step, "replace", False))
    load = client_command(ctx, db, CLIENT_PROGRAMS, (Lit("--batch --skip-column-names --binary-mode"),
                                                    Lit("--"), Arg(db.database)), stdin=True)
    failed = f"mdsl: the restore into {db.name} stopped before the end of the dump"
    body = (complete(path, compress, "the dump") + sh("&&") + _prepare(ctx, db, replace) + sh(
        "&& out=$(", *_reader(path, compress), "| python3 -c", Lit(shlex.quote(FILTER_SCRIPT)), "|", Sub(load),
        ") && { printf '%s\\n' \"$out\" | grep -q -x -F --", Arg(SENTINEL), "|| { echo", Arg(failed),
        ">&2; exit 1; }; }"))
    unzip = {"zstd": ("zstd",), "gzip": ("gzip",), "none": ()}.get(compress, ("zstd", "gzip", "head", "od", "tr"))
    cmd = ctx.command(host, body, tools=("python3", "tail", "grep", *unzip))
    how = "replace" if replace else "into an empty database"
    return [Shell(cmd, f"restore {db.name} ({how})", step_timeout(step, DEFAULT_TIMEOUT))], []


def drop(ctx: CompileContext, step: A.Drop, db: Mysql):
    """`drop DB`: DROP DATABASE IF EXISTS."""
    cmd = ctx.command(db.host, (Sub(sql_command(ctx, db, f"DROP DATABASE IF EXISTS {sql_ident(db.database)};")),))
    return [Shell(cmd, f"drop database {db.database}", step_timeout(step, DEFAULT_TIMEOUT))]


# The restore filter, between the decompressed dump and the client (python3, on every host mdsl runs on):
# - DEFINER clauses go, so views, triggers, routines and events are defined by the restoring user and
#   work on a server where the source's definer does not exist. Only at the line starts mysqldump writes
#   for them; a data line starts with `(` or `INSERT`, so a value holding `DEFINER=` is never touched.
# - An InnoDB table's secondary keys are taken out of its CREATE TABLE and added by one ALTER TABLE after
#   its rows (a sorted build instead of random inserts: 3x faster on Nextcloud's oc_filecache), unless
#   the table has foreign keys (they need their index while rows arrive), a FULLTEXT or SPATIAL key (one
#   per ALTER in InnoDB) or an AUTO_INCREMENT column outside the primary key (it must be a key).
# - The dump must end with the client's closing line; only then a sentinel SELECT is added, so a cut
#   stream (the decompressor failed halfway) never looks like a finished restore.
FILTER_SCRIPT = r'''
import re, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
definer = re.compile(rb"^(/\*!50003 CREATE\*/ /\*!50017 |/\*!50013 |CREATE |/\*!50106 CREATE\*/ /\*!50117 )DEFINER=`(?:[^`]|``)*`@`(?:[^`]|``)*`")
create = re.compile(rb"^CREATE TABLE (`(?:[^`]|``)+`) \(\n$")
key = re.compile(rb"^  (?:UNIQUE )?KEY `")
pending = {}
last = b""
def flush(table):
    keys = pending.pop(table, None)
    if keys:
        out.write(b"ALTER TABLE " + table + b" " + b", ".join(b"ADD " + k for k in keys) + b";\n")
table = None
for line in inp:
    last = line if line.strip() else last
    if line.startswith((b"(", b"INSERT ")):
        out.write(line)
        continue
    if line.startswith(b"-- Table structure for table ") or line.startswith(b"-- Dumping routines") or line.startswith(b"-- Dumping events") or line.startswith(b"-- Final view structure"):
        for t in list(pending):
            flush(t)
    m = create.match(line)
    if m:
        block = [line]
        for inner in inp:
            block.append(inner)
            if inner.startswith(b")"):
                break
        body = block[1:-1]
        tail = block[-1]
        auto = [b.split(b"`")[1] for b in body if b.startswith(b"  `") and b" AUTO_INCREMENT" in b]
        pk = b"".join(b for b in body if b.startswith(b"  PRIMARY KEY"))
        movable = (b"ENGINE=InnoDB" in tail and not any(b.startswith(b"  CONSTRAINT") for b in body)
                   and not any(b.startswith((b"  FULLTEXT", b"  SPATIAL")) for b in body)
                   and all(b"`" + a + b"`" in pk for a in auto))
        keys = [b for b in body if key.match(b)] if movable else []
        kept = [b for b in body if b not in keys]
        if keys:
            kept[-1] = kept[-1].rstrip(b",\n") + b"\n"
            pending[m.group(1)] = [k.strip().rstrip(b",") for k in keys]
        out.write(block[0] + b"".join(kept) + tail)
        continue
    if line.startswith(b"/*!40000 ALTER TABLE ") and line.rstrip().endswith(b"ENABLE KEYS */;"):
        out.write(line)
        flush(line.split(b" ")[3])
        continue
    out.write(definer.sub(lambda m: m.group(1), line, count=1))
for t in list(pending):
    flush(t)
if not last.startswith(b"-- Dump completed"):
    sys.exit("mdsl: the dump ends before the dump client's closing line")
out.write(b"SELECT 'mdsl: restore complete';\n")
'''
