"""Redis: an RDB snapshot by `redis-cli --rdb`, restored into the live target by a one-shot replication master.

The target keeps running: a plan declares no way to restart it, and Redis 7
disables `DEBUG RELOAD`. The restore script (python3, on the target's host)
serves the RDB file to the target as a replication master: the target flushes
what it held, loads the file as it would at start-up (every logical database,
absolute expiry times, so TTLs stay exact), and is made a master again. Measured
against MIGRATE and DUMP/RESTORE key by key in docs/performance.md (Redis block).

A password reaches redis-cli as REDISCLI_AUTH and the script as a file, both
from a 0600 file made for the command; never argv.
"""

from __future__ import annotations

import shlex
from typing import Tuple

from mdsl.compile.actions import Destination, Location, Shell
from mdsl.compile.context import DEFAULT_TIMEOUT, ArtifactFormat, CompileContext, option_value, parent, step_timeout
from mdsl.compile.parts import Arg, Command, CompileError, Lit, SecretArg, SecretText, Sub, sh
from mdsl.stores.redis import Redis
from mdsl.syntax import ast as A

PASSWORD_FILE_VAR = "MDSL_REDIS_AUTH"
PYTHON = "python3"


def _password_files(db: Redis) -> Tuple[Tuple[str, SecretText], ...]:
    if db.password is None:
        return ()
    if not isinstance(db.password, A.Secret):
        raise CompileError(f"the password of `{db.name}` is a literal; use env(\"NAME\") or file(\"PATH\")",
                           db.password.span)
    return ((PASSWORD_FILE_VAR, SecretText([SecretArg(db.password)])),)


def target_args(db: Redis) -> Tuple:
    """`-s SOCKET` or `-h HOST -p PORT`: how redis-cli and the scripts below reach the server."""
    if db.socket:
        return (Lit("-s"), Arg(db.socket))
    return (Lit("-h"), Arg(db.tcp_host or "127.0.0.1"), Lit("-p"), Arg(str(db.tcp_port or 6379)))


def script_command(ctx: CompileContext, db: Redis, mode: str, *args, tools=()) -> Command:
    """SCRIPT in `mode` (probe, restore, keys, flush) against the server, with the password file."""
    h = ctx.host(db.host)
    parts = (Lit(PYTHON), Lit("-c"), Lit(shlex.quote(SCRIPT)), Lit(mode), *target_args(db), *args)
    return Command(db.host, parts, sudo=h.sudo, sudo_password=h.sudo_password, tools=(PYTHON, *tools),
                   secret_files=_password_files(db), argv=True)


# redis-cli --rdb waits repl-diskless-sync-delay (5 s by default) for other replicas before it gets
# anything: set to 0 for the copy and put back after, when CONFIG is allowed (else the copy just waits).
_DUMP_WRAPPER = (
    'if [ -n "${MDSL_REDIS_AUTH:-}" ]; then REDISCLI_AUTH=$(cat -- "$MDSL_REDIS_AUTH") || exit 1; '
    'export REDISCLI_AUTH; fi; part=$1; shift; '
    'd=$(redis-cli "$@" CONFIG GET repl-diskless-sync-delay 2>/dev/null | sed -n 2p); '
    'case "$d" in ""|*[!0-9]*) d=;; 0) ;; '
    '*) redis-cli "$@" CONFIG SET repl-diskless-sync-delay 0 >/dev/null 2>&1;; esac; '
    'redis-cli "$@" --rdb "$part" >/dev/null; rc=$?; '
    'case "$d" in ""|0) ;; *) redis-cli "$@" CONFIG SET repl-diskless-sync-delay "$d" >/dev/null 2>&1;; esac; '
    'exit $rc'
)


def dump(ctx: CompileContext, step: A.Dump, db: Redis, host: str, path: str):
    """`dump DB to LOC`: `redis-cli --rdb PATH.part`, checked whole by redis-check-rdb, then renamed."""
    if host != db.host:
        raise CompileError(f"dump of `{db.name}` runs on its host `{db.host}`, not `{host}`", step.span,
                           help="dump where the server is reached from, then `transfer`")
    part = path + ".part"
    h = ctx.host(db.host)
    cli = Command(db.host, (Lit("sh -c"), Lit(shlex.quote(_DUMP_WRAPPER)), Lit("mdsl"), Arg(part),
                            *target_args(db)),
                  sudo=h.sudo, sudo_password=h.sudo_password, tools=("redis-cli", "sed"),
                  secret_files=_password_files(db), argv=True)
    bad = f"mdsl: redis-cli exited 0 but {part} is not a whole RDB file"
    body = sh("umask 077 && mkdir -p --", Arg(parent(path)), "&& rm -f --", Arg(part), "&&", Sub(cli),
              # redis-check-rdb reads every key and checks the file's CRC64
              "&& { out=$(redis-check-rdb", Arg(part), "2>&1) || { printf '%s\\n' \"$out\" | tail -n 4 >&2; echo",
              Arg(bad), ">&2; exit 1; }; }",
              "&& mv -f -T --", Arg(part), Arg(path))
    ctx.remember(host, path, ArtifactFormat("redis", "rdb"))
    cmd = ctx.command(host, body, tools=("redis-check-rdb", "tail", "mkdir", "mv", "rm"))
    return ([Shell(cmd, f"snapshot {db.name} (redis-cli --rdb)", step_timeout(step, DEFAULT_TIMEOUT),
                   watch=Location(host, part))],
            [Destination(host, path, None, db.name)])


def restore(ctx: CompileContext, step: A.Restore, db: Redis, host: str, path: str):
    """`restore LOC into DB [replace]`: the live target replicates the RDB file from a one-shot master.

    Without `replace` a target holding any key is refused; with it, whatever the target held is gone.
    """
    if host != db.host:
        raise CompileError(f"restore into `{db.name}` runs on its host `{db.host}`, not `{host}`", step.span,
                           help="transfer the snapshot to the server's host first")
    known = ctx.format_of(host, path)
    if known is not None and known.engine != "redis":
        raise CompileError(f'{host}:"{path}" holds a {known.engine} artifact, not a Redis snapshot', step.span)
    replace = bool(option_value(step, "replace", False))
    tool = script_command(ctx, db, "restore", Arg(path), Lit("replace" if replace else "empty"),
                          tools=("redis-check-rdb",) if known is None else ())
    if known is None:
        # A file made outside the plan is read whole first: a replica flushes its data before loading.
        check = sh("{ out=$(redis-check-rdb", Arg(path), "2>&1) || { printf '%s\\n' \"$out\" | tail -n 4 >&2; echo",
                   Arg(f"mdsl: {path} is not a whole RDB file"), ">&2; exit 1; }; } &&")
    else:
        # The plan's dump read it back whole (redis-check-rdb) and the copy compared sha256 on both ends:
        # reading it again here would cost as much as the load (docs/performance.md, Redis block).
        check = ()
    cmd = ctx.command(host, check + (Sub(tool),), tools=("tail",) if check else ())
    return [Shell(cmd, f"restore {db.name} (replicated from the snapshot)", step_timeout(step, DEFAULT_TIMEOUT))], []


def drop(ctx: CompileContext, step: A.Drop, db: Redis):
    """`drop DB`: FLUSHALL (every logical database of the server)."""
    cmd = ctx.command(db.host, (Sub(script_command(ctx, db, "flush")),))
    return [Shell(cmd, f"flush every database of {db.name}", step_timeout(step, DEFAULT_TIMEOUT))]


# One script for the probe, the restore and FLUSHALL: a small RESP client (the standard library only).
# argv: MODE (-s SOCKET | -h HOST -p PORT) [RDB replace|empty]; the password in the file named by
# $MDSL_REDIS_AUTH. Exit 2 with a one-line reason on stderr when the server says no.
SCRIPT = r'''
import os, secrets, socket, sys, time
mode, args = sys.argv[1], sys.argv[2:]
def fail(msg, code=2):
    sys.stderr.write("mdsl: " + msg + "\n"); sys.exit(code)
class Err(Exception): pass
class Conn:
    def __init__(self, sock):
        self.sock, self.f = sock, sock.makefile("rb")
    def call(self, *words):
        words = [w if isinstance(w, bytes) else str(w).encode() for w in words]
        self.sock.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
        return self.reply()
    def reply(self):
        line = self.f.readline()
        if not line: raise Err("the server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+": return rest
        if kind == b"-": raise Err(rest.decode(errors="replace"))
        if kind == b":": return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise Err("unexpected reply %r" % line[:40])
def connect():
    try:
        if args[0] == "-s":
            s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(args[1]); rest = args[2:]
        else:
            s = socket.create_connection((args[1], int(args[3])), timeout=30); rest = args[4:]
    except OSError as e:
        where = args[1] if args[0] == "-s" else args[1] + ":" + args[3]
        fail("cannot connect to Redis at %s: %s" % (where, e.strerror or e))
    c = Conn(s)
    pw = os.environ.get("MDSL_REDIS_AUTH")
    try:
        if pw:
            c.call("AUTH", open(pw, "rb").read())
        c.call("PING")
    except Err as e:
        fail("Redis refused the login: " + str(e))
    return c, rest
def info(c, section):
    out = {}
    for line in c.call("INFO", section).decode(errors="replace").splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1); out[k] = v
    return out
def config(c, name):
    try:
        r = c.call("CONFIG", "GET", name)
        return r[1].decode() if r else ""
    except Err:
        return None
c, rest = connect()
if mode == "probe":
    server, memory, keyspace = info(c, "server"), info(c, "memory"), info(c, "keyspace")
    keys = sum(int(dict(p.split("=") for p in v.split(","))["keys"]) for v in keyspace.values())
    print("version=" + server.get("redis_version", ""))
    print("used_memory=" + memory.get("used_memory", ""))
    print("maxmemory=%s" % config(c, "maxmemory"))
    print("dir=%s" % config(c, "dir"))
    print("keys=%d" % keys)
    print("role=" + info(c, "replication").get("role", ""))
    sys.exit(0)
if mode == "flush":
    c.call("FLUSHALL"); sys.exit(0)
if mode != "restore":
    fail("unknown mode " + mode)
path, how = rest
with open(path, "rb") as f:
    if f.read(5) != b"REDIS": fail(path + " is not an RDB file")
size = os.path.getsize(path)
if info(c, "replication").get("role") != "master":
    fail("the target is a replica of another server: make it a master first")
if how == "empty":
    keyspace = info(c, "keyspace")
    if keyspace:
        fail("the target already holds keys (%s); add `replace` to the restore to remove them"
             % ", ".join(sorted(keyspace)))
old_auth = config(c, "masterauth")
if old_auth is None:
    fail("the target does not allow CONFIG (needed to replicate the snapshot into it)")
token = secrets.token_hex(24)
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(4); listener.settimeout(30)
port = listener.getsockname()[1]
served = False
try:
    c.call("CONFIG", "SET", "masterauth", token)
    c.call("REPLICAOF", "127.0.0.1", port)
    deadline = time.monotonic() + 60
    while not served:
        if time.monotonic() > deadline:
            fail("the target did not connect to the snapshot's one-shot master at 127.0.0.1:%d "
                 "(a server in another network namespace cannot)" % port)
        try:
            peer, _ = listener.accept()
        except socket.timeout:
            continue
        peer.settimeout(30)
        link, authed = Conn(peer), False
        try:
            while True:
                line = link.f.readline()
                if not line.startswith(b"*"): break
                words = [link.f.read(int(link.f.readline()[1:]) + 2)[:-2] for _ in range(int(line[1:]))]
                name = words[0].upper()
                if name == b"PING":
                    peer.sendall(b"+PONG\r\n" if authed else b"-NOAUTH Authentication required.\r\n")
                elif name == b"AUTH":
                    if not secrets.compare_digest(words[-1], token.encode()): break
                    authed = True; peer.sendall(b"+OK\r\n")
                elif not authed:
                    break
                elif name == b"REPLCONF":
                    peer.sendall(b"+OK\r\n")
                elif name in (b"PSYNC", b"SYNC"):
                    peer.sendall(b"+FULLRESYNC " + secrets.token_hex(20).encode() + b" 0\r\n$%d\r\n" % size)
                    with open(path, "rb") as f:
                        peer.sendfile(f)
                    served = True
                    break
                else:
                    break
        except (OSError, ValueError):
            pass
        if not served:
            peer.close()
    while True:
        rep = info(c, "replication")
        if rep.get("master_link_status") == "up" and rep.get("master_sync_in_progress") == "0":
            break
        if time.monotonic() > deadline + 3600 * 6: fail("the target did not finish loading the snapshot")
        try:
            peer.settimeout(0.05)
            if peer.recv(65536) == b"": fail("the target dropped the link while loading the snapshot (see its log)")
        except socket.timeout:
            pass
finally:
    try:
        c.call("REPLICAOF", "NO", "ONE")
        c.call("CONFIG", "SET", "masterauth", old_auth or "")
    except Err as e:
        sys.stderr.write("mdsl: could not make the target a master again: %s\n" % e)
    listener.close()
keyspace = info(c, "keyspace")
print("loaded %d bytes: %s" % (size, ", ".join("%s %s" % kv for kv in sorted(keyspace.items())) or "no keys"))
'''
