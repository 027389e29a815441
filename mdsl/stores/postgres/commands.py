"""PostgreSQL: pg_dump / pg_restore / psql / createdb / dropdb.

Connection settings travel as one libpq connection string (`--dbname=...`,
every value libpq-quoted, the whole word shell-quoted), so a database name
like `x host=evil` stays a name. A password never reaches argv: it goes into
a 0600 PGPASSFILE made for the command. With `run_as` (peer auth over the
socket, as the seed's NixOS host) only the PostgreSQL tool runs as that user;
the dump file is written by the connecting user, through a redirect. With `container` every
PostgreSQL program runs inside that container (`docker exec -i`, the server's own version, no
client on the host): dumps and plain restores travel on stdin/stdout, and a parallel restore reads
a copy of the dump made inside the container (removed when the step ends).
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from attrs import frozen

from mdsl.stores.postgres import Postgres
from mdsl.compile.actions import Destination, Location, Shell
from mdsl.compile.context import (
    DEFAULT_TIMEOUT, ArtifactFormat, CompileContext, option_value, parent, step_timeout,
)
from mdsl.compile.parts import Arg, Command, CompileError, Lit, SecretArg, SecretText, Sub, sh
from mdsl.compile.docker import in_container
from mdsl.syntax import ast as A


_LIBPQ_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")


def libpq_quote(value: str) -> str:
    """A value inside a libpq connection string: bare when plainly safe, else single-quoted and escaped."""
    value = str(value)
    if _LIBPQ_PLAIN.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(db: Postgres, database: Optional[str] = None) -> str:
    """The libpq connection string for `db` (or another database on the same server)."""
    kv = []
    host = db.tcp_host or db.socket
    if host:
        kv.append(("host", host))
    if db.tcp_port:
        kv.append(("port", str(db.tcp_port)))
    if db.user:
        kv.append(("user", db.user))
    kv.append(("dbname", database if database is not None else db.database))
    return " ".join(f"{k}={libpq_quote(v)}" for k, v in kv)


def _tool(db: Postgres, name: str) -> Lit:
    # `bin` is a directory of PostgreSQL binaries (e.g. /usr/lib/postgresql/15/bin).
    if db.bin:
        return Lit(Arg(db.bin.rstrip("/") + "/" + name).render())
    return Lit(name)


def _conn_options(db: Postgres) -> List[Arg]:
    """`--host/--port/--username` for createdb/dropdb, which take the database as a plain name."""
    out = []
    host = db.tcp_host or db.socket
    if host:
        out.append(Arg(host, "--host="))
    if db.tcp_port:
        out.append(Arg(str(db.tcp_port), "--port="))
    if db.user:
        out.append(Arg(db.user, "--username="))
    return out


def _password_files(db: Postgres) -> Tuple[Tuple[str, SecretText], ...]:
    if db.password is None:
        return ()
    if not isinstance(db.password, A.Secret):
        raise CompileError(f"the password of `{db.name}` is a literal; use env(\"NAME\") or file(\"PATH\")",
                           db.password.span)
    if db.container:  # `docker exec --env-file`: a 0600 file of `PGPASSWORD=...`
        return ((CONTAINER_ENV, SecretText([Lit("PGPASSWORD="), SecretArg(db.password), Lit("\n")])),)
    # host:port:database:user:password, the wildcard fields matching this connection only.
    return (("PGPASSFILE", SecretText([Lit("*:*:*:*:"), SecretArg(db.password, escape="pgpass"), Lit("\n")])),)


# The variable naming the env file of a database inside a container.
CONTAINER_ENV = "MDSL_PGENV"
_CLIENTS = ("pg_dump", "pg_restore", "psql", "createdb", "dropdb")


def _on_host(db: Postgres, tools) -> Tuple[str, ...]:
    """The programs a command needs on the database's host: not PostgreSQL's own for a database in a container."""
    return tuple(t for t in tools if not (db.container and t in _CLIENTS))


def tool_command(ctx: CompileContext, db: Postgres, parts, tools, stdin: bool = True) -> Command:
    """A PostgreSQL client command as the database's `run_as` user (or inside its container), with its password file.

    `stdin`: inside a container, whether the program reads its stdin (`docker exec -i`)."""
    h = ctx.host(db.host)
    if db.container:
        env_file = CONTAINER_ENV if db.password is not None else None
        return Command(db.host, in_container(db.container, tuple(parts), stdin=stdin, env_file=env_file), sudo=h.sudo,
                       sudo_password=h.sudo_password, tools=("docker",), secret_files=_password_files(db), argv=True)
    return Command(db.host, parts, run_as=db.run_as, sudo=h.sudo, sudo_password=h.sudo_password, tools=tools,
                   secret_files=_password_files(db), argv=True)


# `pg_dump -Fc` spends most of its time in its own single-core gzip; `-Z0` piped into multi-threaded
# zstd makes a file about as small in a fraction of the time, and pg_restore with several jobs from
# the decompressed file beats the serial stream (docs/performance.md, target 4, bench/database.py).
# PostgreSQL 15 has no zstd of its own.
ZSTD = "zstd -q -T0 -3 -c"
UNZSTD = "zstd -q -dc"

# Without `jobs =`, pg_restore runs one job per CPU of the restore host, counted when the step runs
# (`nproc`; 2 where nproc is missing or says nothing sensible), at most RESTORE_JOBS_CAP: past a few
# jobs the restore waits on the disk and the server's WAL, and each job is one more connection.
RESTORE_JOBS_CAP = 8
RESTORE_JOBS_FALLBACK = 2
RESTORE_JOBS_VAR = "mdsl_jobs"

# The decompressed copy a parallel restore of a zstd dump makes beside it, removed when the restore
# ends, is the dump's uncompressed size. Preflight (P404) counts RESTORE_PART_FACTOR x the measured
# size of a zstd dump found on a host: the largest compression ratio measured (docs/performance.md,
# target 4), with P404's margin on top. Nothing cheaper tells the real size (the zstd CLI writes no
# content size into a frame it compresses from a pipe; decompressing it to count would read the
# whole dump). A dump the plan makes is estimated by its database's size (pg_database_size, indexes
# included, which the -Z0 archive stays below), as the dump itself is.
RESTORE_PART_SUFFIX = ".restore.part"
RESTORE_PART_FACTOR = 5


@frozen
class RestorePart(Destination):
    """`LOC.restore.part`: the zstd dump at `size_of` decompressed for `pg_restore -j`, removed when the step ends.

    Preflight counts it only while its restore runs (the peak of its file system, not the sum).
    `if_zstd`: the dump was made outside the plan, so the step only writes it when the file is
    neither a directory nor pg_dump's own archive (`PGDMP`).
    """

    if_zstd: bool = False


def auto_jobs() -> Tuple:
    """Shell that sets RESTORE_JOBS_VAR to the host's CPU count, between 1 and RESTORE_JOBS_CAP."""
    v = RESTORE_JOBS_VAR
    # `[ "$v" -ge 1 ]` is false for anything but a positive number (its error is discarded), so
    # garbage from nproc falls back too.
    return sh(f"{v}=$(nproc 2>/dev/null) || {v}={RESTORE_JOBS_FALLBACK};",
              f'[ "${v}" -ge 1 ] 2>/dev/null || {v}={RESTORE_JOBS_FALLBACK};',
              f'[ "${v}" -le {RESTORE_JOBS_CAP} ] || {v}={RESTORE_JOBS_CAP};')


def dump_compression(fmt: str, compress: Optional[str]) -> str:
    """`compress =`, else zstd for a custom dump (the whole archive through the zstd CLI), pg_dump's own
    gzip for a directory and none for plain SQL."""
    return compress or {"custom": "zstd", "directory": "gzip", "plain": "none"}[fmt]


def dump(ctx: CompileContext, step: A.Dump, db: Postgres, host: str, path: str):
    """`dump DB to LOC`: pg_dump to `PATH.part`, then rename (a crash never leaves a complete-looking dump).

    A custom dump is compressed by zstd by default: `pg_dump -Fc -Z0 | zstd`, which any pg_dump
    version can do (`compress = gzip` keeps pg_dump's own compression, a file pg_restore reads as is).
    """
    fmt = option_value(step, "format", "custom")
    if fmt == "directory" and db.container:
        raise CompileError(f"`format = directory` would write the dump inside container `{db.container}`, not on "
                           f"`{db.host}`", step.span, help=f"dump `{db.name}` in the custom or plain format")
    jobs = option_value(step, "jobs")
    compress = dump_compression(fmt, option_value(step, "compress"))
    piped = (fmt == "plain" and compress in ("gzip", "zstd")) or (fmt == "custom" and compress == "zstd")
    part = path + ".part"
    flags = {"custom": "-Fc", "directory": "-Fd", "plain": "-Fp"}[fmt]
    args: list = [_tool(db, "pg_dump"), Lit("-w"), Lit(flags)]
    if jobs and fmt == "directory":
        args += [Lit("-j"), Arg(str(jobs))]
    if fmt in ("custom", "directory"):
        if compress == "none" or piped:
            args.append(Lit("-Z0"))
        elif compress == "zstd":
            args.append(Lit("--compress=zstd"))  # a directory dump compressed by pg_dump itself: PostgreSQL 16+
    args.append(Arg(conninfo(db), "--dbname="))
    tools = ["pg_dump"]
    pre = sh("umask 077 && mkdir -p --", Arg(parent(path)), "&& rm -rf --", Arg(part), "&&")
    writers = ctx.stopped_writers_of(db.name)
    if writers:
        pre = _no_other_clients(ctx, db, writers) + sh("&&") + pre
        tools.append("psql")
    if fmt == "directory":
        # pg_dump writes the directory itself, so it is written by the run_as user.
        tool = tool_command(ctx, db, tuple(args) + (Arg(part, "--file="),), tools)
        body = pre + (Sub(tool),)
    elif piped and db.container and fmt == "custom":
        body = pre + _dump_from_container(ctx, db, tuple(args), tools, part)
        tools += ["zstd", "tee", "mkfifo", "dd", "chown"]
    elif piped:
        # sh has no pipefail: pg_dump's own status comes out on fd 3, so its failure (a missing
        # database, a refused login) is reported as itself, not as a short file afterwards.
        tool = tool_command(ctx, db, tuple(args), tools)
        body = pre + sh("rc=$( { {", Sub(tool), "; echo \"$?\" >&3; } |",
                        "gzip -c" if compress == "gzip" else ZSTD, ">", Arg(part), "; } 3>&1 ) &&",
                        '{ [ "$rc" = 0 ] || { echo "mdsl: pg_dump failed (exit $rc)" >&2; exit 1; }; }')
        tools.append("gzip" if compress == "gzip" else "zstd")
    else:
        tool = tool_command(ctx, db, tuple(args), tools)
        body = pre + (Sub(tool),) + sh(">", Arg(part))
    # pg_dump's exit status alone is not trusted (a pipe into gzip or zstd hides it; sh has no pipefail;
    # a full disk or a killed dump can leave a short file): the part is read back before the rename.
    if not (piped and db.container and fmt == "custom"):  # (that one is read back as it is written)
        body += _verify_dump(ctx, db, fmt, compress, part, path)
    tools.append("pg_restore" if fmt != "plain" else "tail")
    body += sh("&& mv -f -T --", Arg(part), Arg(path))
    ctx.remember(host, path, ArtifactFormat("postgres", fmt, compress))
    cmd = ctx.command(host, body, tools=_on_host(db, tools) + ("mkdir", "mv", "rm"))
    return ([Shell(cmd, f"dump {db.name} ({fmt}, {compress})", step_timeout(step, DEFAULT_TIMEOUT),
                   watch=Location(host, part))],
            [Destination(host, path, db.run_as if fmt == "directory" else None, db.name)])


def _dump_from_container(ctx: CompileContext, db: Postgres, args: Tuple, tools, part: str) -> Tuple:
    """`pg_dump -Fc -Z0` inside the container, zstd on the host, read back as it is written; `{ ... }`.

    `docker exec`'s stdin and stdout are streamed through the daemon, several times slower than a
    pipe (docs/performance.md, target 13): where the host can reach the container's file system
    (`/proc/PID/root`, as root) the dump travels through two fifos made there instead, pg_dump
    inside writing one, the host's `tee` reading it and writing the other, which a
    `pg_restore -f /dev/null` inside reads whole (`_dump_through_fifos`). Elsewhere the same runs
    on `docker exec`'s streams (`_dump_streamed`).
    """
    return sh("{ mdsl_tmp=/tmp/mdsl-dump.$$; if", *_container_root(db), "; then",
              *_dump_through_fifos(ctx, db, args, part), "; else", *_dump_streamed(ctx, db, args, tools, part),
              "; fi; }")


def _container_root(db: Postgres) -> Tuple:
    """Shell that succeeds when this host can write into the container's /tmp through `/proc/$mdsl_pid/root`.

    It sets `mdsl_pid` (the container's first process) and `mdsl_own`, the numeric `uid[:gid]` that
    `docker exec` runs as (empty for root), which should own what the host makes there. A user
    given by name would have to be looked up in the container's own passwd file: such a container
    is reached through `docker exec` (fails here).
    """
    return sh("mdsl_i=$(docker inspect --format '{{.State.Pid}} {{.Config.User}}' --", Arg(db.container),
              "2>/dev/null) && mdsl_pid=${mdsl_i%% *} && mdsl_own=${mdsl_i#* } &&",
              'case "$mdsl_own" in *[!0-9:]*) false;; esac &&',
              '[ "$mdsl_pid" -gt 0 ] 2>/dev/null && [ -d "/proc/$mdsl_pid/root/tmp" ] &&',
              '[ -w "/proc/$mdsl_pid/root/tmp" ]')


def _inside(ctx: CompileContext, db: Postgres, label: str, script: str, words, *, stdin: bool,
            secrets: bool = False) -> Command:
    """`docker exec [-i] CONTAINER sh -c SCRIPT LABEL WORDS...` (the password's env file when `secrets`)."""
    h = ctx.host(db.host)
    env_file = CONTAINER_ENV if (secrets and db.password is not None) else None
    parts = sh("sh -c", Arg(script), label, *words)
    return Command(db.host, in_container(db.container, parts, stdin=stdin, env_file=env_file), sudo=h.sudo,
                   sudo_password=h.sudo_password, tools=("docker",),
                   secret_files=_password_files(db) if secrets else (), argv=True)


# Opens both fifos' other ends without blocking, again and again while the host's reader (`$mdsl_rpid`)
# runs: when the `docker exec` fails before its shell opened the fifos, the host's ends, waiting in
# open(2), are let go (an empty stream, then a broken pipe) instead of waiting forever.
_UNBLOCK = ("mdsl_unblock() { while kill -0 \"$mdsl_rpid\" 2>/dev/null; do"
            " dd if=/dev/null of=\"$1\" oflag=nonblock conv=notrunc status=none 2>/dev/null;"
            " dd if=\"$1.v\" iflag=nonblock of=/dev/null count=0 status=none 2>/dev/null; sleep 0.05; done; };")

# The exit status of the one `docker exec` of a dump whose pg_dump succeeded but whose read-back failed
# (pg_dump's own failures exit 1, docker's own 125-127).
_READ_BACK_FAILED = 250


def _dump_through_fifos(ctx: CompileContext, db: Postgres, args: Tuple, part: str) -> Tuple:
    """The dump through fifos in the container's /tmp: pg_dump inside -> "$mdsl_d" -> host tee -> zstd -> part,
    and tee -> "$mdsl_d.v" -> pg_restore -f /dev/null inside; both in one `docker exec` (each costs a
    round trip through the daemon)."""
    inside = (f'{_render((_tool(db, "pg_restore"),))} -f /dev/null < "$1.v" & v=$!; {_render(args)} > "$1"; '
              f'rc=$?; wait "$v"; vrc=$?; [ "$rc" -eq 0 ] || exit "$rc"; [ "$vrc" -eq 0 ] || exit {_READ_BACK_FAILED}')
    both = _inside(ctx, db, "mdsl-dump", inside, (Lit('"$mdsl_tmp"'),), stdin=False, secrets=True)
    own = '{ [ -z "$mdsl_own" ] || chown -- "$mdsl_own" "$mdsl_d" "$mdsl_d.v"; }'
    return sh(_UNBLOCK, 'mdsl_d="/proc/$mdsl_pid/root$mdsl_tmp"; rm -f -- "$mdsl_d" "$mdsl_d.v" &&',
              'mkfifo -m 600 -- "$mdsl_d" "$mdsl_d.v" &&', own, "&& {",
              'tee -- "$mdsl_d.v" < "$mdsl_d" |', ZSTD, ">", Arg(part), "& mdsl_rpid=$!;",
              Sub(both), "; mdsl_x=$?;", '[ "$mdsl_x" -eq 0 ] || mdsl_unblock "$mdsl_d";',
              f'case "$mdsl_x" in 0) rc=0 vrc=0;; {_READ_BACK_FAILED}) rc=0 vrc=1;; *) rc=$mdsl_x vrc=1;; esac;',
              'wait "$mdsl_rpid"; zrc=$?; rm -f -- "$mdsl_d" "$mdsl_d.v";',
              *_dump_checks(part), "; }")


def _dump_checks(part: str) -> Tuple:
    """After a dump read back as it was written: pg_dump's status ($rc), zstd's ($zrc), the read-back's ($vrc),
    and the part read whole by `zstd -t`."""
    return sh('[ "$zrc" -eq 0 ] && { [ "$rc" = 0 ] || { echo "mdsl: pg_dump failed (exit $rc)" >&2; exit 1; }; } &&',
              '{ [ "$vrc" -eq 0 ] && zstd -q -t <', Arg(part), "|| { echo",
              Arg(f"mdsl: pg_dump exited 0 but {part} does not read back whole"), ">&2; exit 1; }; }")


def _dump_streamed(ctx: CompileContext, db: Postgres, args: Tuple, tools, part: str) -> Tuple:
    """The dump on `docker exec`'s streams: pg_dump's stdout into `tee`, which hands the same bytes, through a
    fifo beside the part, to `docker exec -i ... pg_restore -f /dev/null` while zstd writes the part (no
    second pass through `docker exec -i` afterwards)."""
    dump = tool_command(ctx, db, args, tools, stdin=False)
    fifo = Arg(part + ".verify")
    read = tool_command(ctx, db, (_tool(db, "pg_restore"), Lit("-f /dev/null")), ("pg_restore",))
    return sh("rm -f --", fifo, "&& mkfifo -m 600 --", fifo, "&& {", Sub(read), "<", fifo, "& mdsl_vpid=$!; } &&",
              "rc=$( { {", Sub(dump), "; echo \"$?\" >&3; } | tee --", fifo, "|", ZSTD, ">", Arg(part),
              "; } 3>&1 ); zrc=$?; wait \"$mdsl_vpid\"; vrc=$?; rm -f --", fifo, ";", *_dump_checks(part))


def _no_other_clients(ctx: CompileContext, db: Postgres, writers) -> Tuple:
    """`{ CHECK; }` failing when another client is still connected to the database: a service the plan
    stopped (`writers`) may not really have stopped, and a dump now would miss what it still writes."""
    sql = ("select string_agg(format('%s (pid %s, %s, since %s)', usename, pid, coalesce(nullif(application_name, ''),"
           " client_addr::text, 'local socket'), date_trunc('second', backend_start)), '; ') from pg_stat_activity"
           " where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'")
    query = tool_command(ctx, db, (_tool(db, "psql"), Lit("-X -w -q -A -t"), Arg(conninfo(db), "--dbname="),
                                   Arg(sql, "--command=")), ("psql",))
    stopped = ", ".join(writers)
    return sh("{ others=$(", Sub(query), ") || exit 1; [ -z \"$others\" ] || { printf '%s\\n'",
              Arg(f"mdsl: {db.name} still has clients after {stopped} stopped: "), "\"$others\"",
              Arg("mdsl: stop whatever still writes it (or check that the stop really stopped it), then run again"),
              ">&2; exit 1; }; }")


# The last lines pg_dump writes in plain format (PostgreSQL 9.x to 17); a plain dump without them
# is cut short, and psql would restore the part before the cut (a COPY ends at EOF) and exit 0.
PLAIN_TRAILER = "-- PostgreSQL database dump complete"


def _plain_complete(path: str, compress: Optional[str], what: str) -> Tuple:
    """`{ ... }` failing unless the plain dump at `path` ends with pg_dump's trailer."""
    if compress in ("gzip", "zstd"):
        reader = sh("gzip -dc <" if compress == "gzip" else "zstd -dc -q <", Arg(path), "| tail -c 4096")
    else:
        reader = sh("tail -c 4096 <", Arg(path))
    return sh("{", *reader, "| grep -q -F --", Arg(PLAIN_TRAILER), "|| { echo",
              Arg(f"mdsl: {what} {path} is incomplete: it lacks pg_dump's closing line"), ">&2; exit 1; }; }")


def _verify_dump(ctx: CompileContext, db: Postgres, fmt: str, compress: Optional[str], part: str,
                 path: str) -> Tuple:
    """`&& CHECK` reading the whole dump back: the plain trailer, or pg_restore's full read of the archive."""
    if fmt == "plain":
        return sh("&&") + _plain_complete(part, compress, "pg_dump exited 0 but")
    h = ctx.host(db.host)
    # A custom archive's table of contents comes first, so `pg_restore -l` passes a cut file;
    # reading every data block into /dev/null does not. A directory dump is read by its writer.
    # A zstd-compressed archive is read through zstd (its own checksum checked on the way).
    zstd = fmt == "custom" and compress == "zstd"
    if db.container:  # the file is the host's: read on stdin inside the container
        read = tool_command(ctx, db, (_tool(db, "pg_restore"), Lit("-f /dev/null")), ("pg_restore",))
        reader = sh(UNZSTD, "<", Arg(part), "|", Sub(read)) if zstd else sh(Sub(read), "<", Arg(part))
        return sh("&& {", *reader, "|| { echo", Arg(f"mdsl: pg_dump exited 0 but {part} does not read back whole"),
                  ">&2; exit 1; }; }")
    read = Command(db.host, (_tool(db, "pg_restore"), Lit("-f /dev/null")) + (() if zstd else (Lit("--"), Arg(part))),
                   run_as=db.run_as if fmt == "directory" else None, sudo=h.sudo, sudo_password=h.sudo_password,
                   tools=("pg_restore",), argv=True)
    reader = sh(UNZSTD, "<", Arg(part), "|", Sub(read)) if zstd else (Sub(read),)
    return sh("&& {", *reader, "|| { echo", Arg(f"mdsl: pg_dump exited 0 but {part} does not read back whole"),
              ">&2; exit 1; }; }")


def _exists_or_create(ctx: CompileContext, db: Postgres) -> Tuple:
    """Create the database from template0 when it does not exist yet (psql cannot connect to it)."""
    probe = tool_command(ctx, db, (_tool(db, "psql"), Lit("-X -w -q"), Arg(conninfo(db), "--dbname="),
                                   Lit("-c ''")), ("psql",))
    create = tool_command(ctx, db, (_tool(db, "createdb"), Lit("-w -T template0"), *_conn_options(db),
                                    Lit("--"), Arg(db.database)), ("createdb",))
    return sh("{", Sub(probe), ">/dev/null 2>&1 ||", Sub(create), "; }")


def _drop_create(ctx: CompileContext, db: Postgres) -> Tuple:
    drop = tool_command(ctx, db, (_tool(db, "dropdb"), Lit("-w --if-exists"), *_conn_options(db),
                                  Lit("--"), Arg(db.database)), ("dropdb",))
    create = tool_command(ctx, db, (_tool(db, "createdb"), Lit("-w -T template0"), *_conn_options(db),
                                    Lit("--"), Arg(db.database)), ("createdb",))
    return (Sub(drop), Lit("&&"), Sub(create))


def restore(ctx: CompileContext, step: A.Restore, db: Postgres, host: str, path: str):
    """`restore LOC into DB [replace]`: pg_restore (custom/directory) or psql (plain); (actions, destinations).

    pg_restore runs one job per CPU of the restore host (`auto_jobs`: `nproc` when the step runs,
    capped at RESTORE_JOBS_CAP) unless `jobs =` says otherwise, except for a custom file with
    `run_as`: that user may not be able to open the connecting user's file, so it reads it on stdin,
    serially (the seed's peer-auth setup). A zstd-compressed dump is decompressed next to itself
    (`PATH.restore.part`, removed afterwards: a `RestorePart` destination, for preflight) for a
    parallel restore, or tested whole (`zstd -t`) and piped into a serial one; either way a cut file
    fails before the database changes. A dump made outside the plan is looked at when the step runs:
    a directory, a custom archive (`PGDMP`), else zstd.
    """
    replace = bool(option_value(step, "replace", False))
    jobs = option_value(step, "jobs")
    known = ctx.format_of(host, path)
    if known is not None and known.engine != "postgres":
        raise CompileError(f'{host}:"{path}" holds a {known.engine} artifact, not a PostgreSQL dump', step.span)
    src = Arg(path)
    tmp = path + RESTORE_PART_SUFFIX
    if known is not None and known.format == "plain":
        setup = _drop_create(ctx, db) if replace else _exists_or_create(ctx, db)
        psql = tool_command(ctx, db, (_tool(db, "psql"), Lit("-X -w -q -v ON_ERROR_STOP=1 --single-transaction"),
                                      Arg(conninfo(db), "--dbname=")), ("psql",))
        # Checked before anything is dropped: psql would restore a cut file's first part and exit 0.
        setup = _plain_complete(path, known.compress, "the dump") + sh("&&") + setup
        if known.compress in ("gzip", "zstd"):
            unz = "gzip -dc" if known.compress == "gzip" else UNZSTD
            body = setup + sh("&&", unz, "<", src, "|", Sub(psql))
        else:
            body = setup + sh("&&", Sub(psql), "<", src)
        unzip = {"gzip": ("gzip",), "zstd": ("zstd",)}.get(known.compress, ())
        cmd = ctx.command(db.host, body, tools=_on_host(db, ("tail", "grep") + unzip))
        return [Shell(cmd, f"restore {db.name}: psql (plain dump)", step_timeout(step, DEFAULT_TIMEOUT))], []

    made = {"part": False, "auto": False}  # what the bodies below use: a part file, the CPU count

    def body_for(kind: str) -> Tuple:
        """pg_restore of a `directory`, a `custom` file or a `zstd`-compressed custom file."""
        file_as_user = db.run_as and kind != "directory"
        if jobs is not None:
            n = int(jobs)
            parallel = n > 1
            jobs_arg = [Lit("-j"), Arg(str(n))] if parallel else []
        else:
            parallel = not file_as_user
            jobs_arg = [Lit("-j"), Lit(f'"${RESTORE_JOBS_VAR}"')] if parallel else []
            made["auto"] = made["auto"] or parallel
        args = _restore_args(db, replace) + jobs_arg
        args.append(Arg(conninfo(db), "--dbname="))
        setup = _exists_or_create(ctx, db)
        if db.container:
            return _restore_in_container(ctx, db, kind, parallel, args, path)
        if kind == "zstd" and parallel:
            # pg_restore -j needs a seekable file: decompressed first, before anything in the database changes.
            made["part"] = True
            give = sh("&& chown --", Arg(db.run_as), Arg(tmp)) if db.run_as else ()
            tool = tool_command(ctx, db, tuple(args) + (Lit("--"), Arg(tmp)), ("pg_restore",))
            return sh("{ umask 077 &&", UNZSTD, "<", src, ">", Arg(tmp), *give, "&&", *setup, "&&", Sub(tool),
                      "; }; rc=$?; rm -f --", Arg(tmp), '; [ "$rc" -eq 0 ]')
        if kind == "zstd":
            # pg_restore reading a stream drops and fills tables as it goes: a cut file is found first
            # (`zstd -t` reads it whole, checking the frame and its checksum), before the database changes.
            tool = tool_command(ctx, db, tuple(args), ("pg_restore",))
            return sh("zstd -q -t <", src, "&&") + setup + sh("&&", UNZSTD, "<", src, "|", Sub(tool))
        if db.run_as and (parallel or kind == "directory"):
            # A parallel restore needs a seekable file the run_as user can read: hand the dump over.
            tool = tool_command(ctx, db, tuple(args) + (Lit("--"), src), ("pg_restore",))
            return sh("chown -R --", Arg(db.run_as), src, "&&") + setup + sh("&&", Sub(tool))
        if db.run_as:
            tool = tool_command(ctx, db, tuple(args), ("pg_restore",))
            return setup + sh("&&", Sub(tool), "<", src)  # read by the connecting user, fed on stdin
        tool = tool_command(ctx, db, tuple(args) + (Lit("--"), src), ("pg_restore",))
        return setup + sh("&&", Sub(tool))

    if known is not None:
        kind = "zstd" if known.format == "custom" and known.compress == "zstd" else known.format
        body = body_for(kind)
        tools: Tuple[str, ...] = ("zstd",) if kind == "zstd" else ()
        what = f"pg_restore ({known.format}, {known.compress})"
    else:
        # Made outside this plan: a directory, pg_dump's custom archive, or mdsl's zstd-compressed one.
        body = sh("if [ -d", src, "]; then", *body_for("directory"), "; elif [ \"$(head -c 5 <", src,
                  "| tr -cd A-Z)\" = PGDMP ]; then", *body_for("custom"), "; else", *body_for("zstd"), "; fi")
        tools = ("head", "tr")
        what = "pg_restore (format read from the file)"
    if made["auto"]:
        body = auto_jobs() + body  # nproc is optional (the fallback covers a host without it): not a tool
    cmd = ctx.command(db.host, body, tools=_on_host(db, tools))
    dests = [RestorePart(db.host, tmp, None, Location(host, path), if_zstd=known is None)] if made["part"] else []
    return [Shell(cmd, f"restore {db.name}: {what}", step_timeout(step, DEFAULT_TIMEOUT))], dests


def _restore_in_container(ctx: CompileContext, db: Postgres, kind: str, parallel: bool, args: list,
                          path: str) -> Tuple:
    """pg_restore inside the database's container: from stdin, or (parallel) from a copy made inside it.

    Each `docker exec` costs a round trip through the daemon, and its stdin stream is several times
    slower than a pipe (docs/performance.md, target 13), so the database is made (when missing) and
    restored by one shell inside the container, and a parallel restore's copy is written straight
    into the container's file system (`/proc/PID/root`, where the host runs as root: a 0600 file of
    the user `docker exec` runs as), else made by that user and streamed in through `docker exec -i`.
    A zstd dump piped into the container is tested whole (`zstd -t`) first: a cut file would only
    show as a short copy (sh has no pipefail); written straight in, zstd's own status says so.
    """
    src = Arg(path)
    if kind == "directory":
        return sh("echo", Arg(f"mdsl: {path} is a directory dump, which pg_restore inside container "
                              f"{db.container} cannot read"), ">&2; exit 1")
    test = sh("zstd -q -t <", src, "&&") if kind == "zstd" else ()

    def inside(script: str, words, stdin: bool, secrets: bool = False) -> Command:
        return _inside(ctx, db, "mdsl-restore", script, words, stdin=stdin, secrets=secrets)

    make_db = _render(_exists_or_create_inside(db))
    if not parallel:
        tool = inside(f"{make_db} && {_render(args)}", (), True, secrets=True)
        feed = sh(UNZSTD, "<", src, "|", Sub(tool)) if kind == "zstd" else sh(Sub(tool), "<", src)
        return test + feed
    # pg_restore -j reads a seekable file: "$1" inside the container; the job count is the host's ("$2").
    jobs_var = f'"${RESTORE_JOBS_VAR}"'
    inner = [Lit('"$2"') if isinstance(a, Lit) and a.text == jobs_var else a for a in args]
    tmp = Lit('"$mdsl_tmp"')
    make = inside('umask 077 && : > "$1"', (tmp,), False)
    copy = inside('cat > "$1"', (tmp,), True)
    restore_copy = f'{make_db} && {_render(inner)} -- "$1"'  # "$1" the copy, "$2" the job count
    words = (tmp, Lit(jobs_var))
    restore = inside(f'{restore_copy}; rc=$?; rm -f -- "$1"; exit "$rc"', words, False, secrets=True)
    remove = inside('rm -f -- "$1"', (tmp,), False)
    feed = sh(UNZSTD, "<", src, "|", Sub(copy)) if kind == "zstd" else sh(Sub(copy), "<", src)
    return sh("mdsl_tmp=/tmp/mdsl-restore.$$; mdsl_d=; { if", *_container_root(db), "; then",
              *_restore_written_in(inside, restore_copy, words, src, kind),
              "; else", *test, Sub(make), "&&", *feed, "&&", Sub(restore), "; fi; }; rc=$?;",
              '[ "$rc" -eq 0 ] || if [ -n "$mdsl_d" ]; then rm -f -- "$mdsl_d" "$mdsl_d.go"; else', Sub(remove),
              "; fi;", '[ "$rc" -eq 0 ]')


def _restore_written_in(inside, restore_copy: str, words: Tuple, src: Arg, kind: str) -> Tuple:
    """The copy written by the host straight into the container's /tmp while the `docker exec` that restores
    it starts (its round trip through the daemon overlaps the copy): the shell inside waits on a fifo
    (`$mdsl_d.go`) for the host's word, `go` once the copy is whole, else `stop`, and only then makes the
    database and restores, so a cut dump changes nothing."""
    go = inside(f'read mdsl_go < "$1.go" && [ "$mdsl_go" = go ] && {restore_copy}; rc=$?; rm -f -- "$1" "$1.go"; '
                'exit "$rc"', words, False, secrets=True)
    direct = Lit('"$mdsl_d"')
    feed = sh(UNZSTD, "<", src) if kind == "zstd" else sh("cat --", src)
    # The word is written by a non-blocking open, retried until the shell inside has the fifo open or the
    # exec has ended (it failed before reading: nothing is left waiting on either side).
    say = ('while kill -0 "$mdsl_epid" 2>/dev/null && ! echo "$mdsl_say" | '
           'dd of="$mdsl_d.go" oflag=nonblock status=none 2>/dev/null; do sleep 0.02; done;')
    return sh('mdsl_d="/proc/$mdsl_pid/root$mdsl_tmp"; umask 077 && rm -f --', direct, '"$mdsl_d.go" && : >', direct,
              '&& mkfifo -m 600 -- "$mdsl_d.go" && { [ -z "$mdsl_own" ] || chown -- "$mdsl_own"', direct,
              '"$mdsl_d.go"; } && {', Sub(go), "& mdsl_epid=$!;", *feed, ">", direct, "; mdsl_f=$?;",
              '[ "$mdsl_f" -eq 0 ] && mdsl_say=go || mdsl_say=stop;', say,
              'wait "$mdsl_epid"; mdsl_e=$?; [ "$mdsl_f" -eq 0 ] && [ "$mdsl_e" -eq 0 ]; }')


def _exists_or_create_inside(db: Postgres) -> Tuple:
    """`_exists_or_create` as one shell line run inside the database's container."""
    return sh("{", _tool(db, "psql"), "-X -w -q", Arg(conninfo(db), "--dbname="), "-c '' >/dev/null 2>&1 ||",
              _tool(db, "createdb"), "-w -T template0", *_conn_options(db), "--", Arg(db.database), "; }")


def _render(parts) -> str:
    """Parts as the shell words of a script run inside a container (no secret reaches them)."""
    return " ".join(p.render() for p in parts)


def _restore_args(db: Postgres, replace: bool) -> list:
    args = [_tool(db, "pg_restore"), Lit("-w --no-owner")]
    role = db.user or db.run_as
    if role:
        args.append(Arg(role, "--role="))
    if replace:
        args.append(Lit("--clean --if-exists"))
    return args


def drop(ctx: CompileContext, step: A.Drop, db: Postgres):
    """`drop DB`: dropdb --if-exists."""
    tool = tool_command(ctx, db, (_tool(db, "dropdb"), Lit("-w --if-exists"), *_conn_options(db), Lit("--"),
                                  Arg(db.database)), ("dropdb",))
    return [Shell(ctx.command(db.host, (Sub(tool),)), f"drop database {db.database}",
                  step_timeout(step, DEFAULT_TIMEOUT))]
