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


def dump(ctx: CompileContext, step: A.Dump, db: Redis, host: str, path: str):
    """`dump DB to LOC`: the script takes the snapshot as a replica would (what `redis-cli --rdb` does) into
    `PATH.part`, feeding the same bytes to redis-check-rdb as they arrive; renamed once the check passed.

    The check (every key, the CRC64) runs while the source streams, not after it (docs/performance.md).
    """
    if host != db.host:
        raise CompileError(f"dump of `{db.name}` runs on its host `{db.host}`, not `{host}`", step.span,
                           help="dump where the server is reached from, then `transfer`")
    part = path + ".part"
    snapshot = script_command(ctx, db, "dump", Arg(part), tools=("redis-check-rdb",))
    body = sh("umask 077 && mkdir -p --", Arg(parent(path)), "&& rm -f --", Arg(part), "&&", Sub(snapshot),
              "&& mv -f -T --", Arg(part), Arg(path))
    ctx.remember(host, path, ArtifactFormat("redis", "rdb"))
    cmd = ctx.command(host, body, tools=("mkdir", "mv", "rm"))
    return ([Shell(cmd, f"snapshot {db.name} (as a replica, checked as it arrives)",
                   step_timeout(step, DEFAULT_TIMEOUT), watch=Location(host, part))],
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
def whole(path):
    # An RDB starts REDIS + 4 digits and ends with opcode 0xFF and its CRC64 (version 5 on): a file cut
    # short almost never ends so. Cheap; the bytes in between were checked by the dump's redis-check-rdb.
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(9)
            if head[:5] != b"REDIS" or not head[5:].isdigit(): fail(path + " is not an RDB file")
            f.seek(max(size - 9, 0))
            tail = f.read(9)
    except OSError as e:
        fail("cannot read %s: %s" % (path, e.strerror or e))
    if size < 18 or tail[:1] != b"\xff" and int(head[5:]) >= 5:
        fail("%s is cut short (%d bytes, no end-of-file marker): not a whole RDB file" % (path, size))
    return size
if mode == "restore":  # before the target is touched, or even reached
    size = whole((args[2:] if args[0] == "-s" else args[4:])[0])
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
if mode == "dump":
    import subprocess, tempfile
    part = rest[0]
    delay = config(c, "repl-diskless-sync-delay")
    if delay in (None, "", "0"):
        delay = None
    else:  # the source would wait this many seconds for other replicas before it streams anything
        try: c.call("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        except Err: delay = None
    out = tempfile.TemporaryFile()
    check = subprocess.Popen(["redis-check-rdb", "/dev/stdin"], stdin=subprocess.PIPE, stdout=out,
                             stderr=subprocess.STDOUT)
    try:
        import fcntl; fcntl.fcntl(check.stdin.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ: less lockstep
    except (ImportError, OSError):
        pass
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    got, checking = 0, True
    def emit(data):
        global got, checking
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        got += len(data)
        if checking:
            try: check.stdin.write(data)
            except BrokenPipeError: checking = False  # it stopped reading: a bad snapshot, said below
    def refuse(msg):
        try: check.stdin.close()
        except OSError: pass
        check.wait()
        os.close(fd); os.unlink(part)
        fail(msg)
    try:
        s, _ = connect()
        for words in (("REPLCONF", "capa", "eof"), ("REPLCONF", "rdb-only", "1")):
            try: s.call(*words)
            except Err: pass  # an older server: it still sends the RDB
        s.sock.settimeout(600)
        s.sock.sendall(b"SYNC\r\n")
        try:
            line = b"\n"
            while line in (b"\n", b"\r\n"):  # newlines: the source keeps the link alive while it forks
                line = s.f.readline()
            if not line.startswith(b"$"):
                refuse("the source refused the snapshot: " + line.decode(errors="replace").strip()[:200])
            head = line[1:].rstrip()
            if head.startswith(b"EOF:"):  # streamed from the fork: ends with this 40-byte mark
                mark, held = head[4:], b""
                while True:
                    chunk = s.f.read1(1 << 20)
                    if not chunk:
                        refuse("the source closed the link after %d bytes, before the snapshot's end" % got)
                    buf = held + chunk
                    at = buf.find(mark)
                    if at >= 0:
                        emit(buf[:at]); break
                    emit(buf[:-len(mark)]); held = buf[-len(mark):]
            else:
                left = int(head)
                while left:
                    chunk = s.f.read1(min(left, 1 << 20))
                    if not chunk:
                        refuse("the source closed the link after %d bytes, before the snapshot's end" % got)
                    emit(chunk); left -= len(chunk)
        except socket.timeout:
            refuse("no data from the source for 600 s (%d bytes received)" % got)
        except OSError as e:
            refuse("the link to the source failed after %d bytes: %s" % (got, e))
        s.sock.close()
    finally:
        if delay is not None:
            try: c.call("CONFIG", "SET", "repl-diskless-sync-delay", delay)
            except (Err, OSError): connect()[0].call("CONFIG", "SET", "repl-diskless-sync-delay", delay)
    try: check.stdin.close()
    except BrokenPipeError: pass
    rc = check.wait()
    os.fsync(fd)
    if rc != 0 or not checking:
        out.seek(0)
        said = [ln for ln in out.read().decode(errors="replace").splitlines() if ln.strip()]
        sys.stderr.write("\n".join(said[-4:]) + "\n")
        refuse("the snapshot (%d bytes) is not a whole RDB file: redis-check-rdb refused it" % got)
    os.close(fd)
    whole(part)
    print("snapshot: %d bytes, checked by redis-check-rdb" % got)
    sys.exit(0)
if mode != "restore":
    fail("unknown mode " + mode)
path, how = rest
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
served = gone = False
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
        try:
            rep = info(c, "replication")
        except (Err, OSError) as e:
            # Redis exits when the RDB it loads is corrupt (after emptying itself): nothing to put back
            gone = True
            fail("the target went away while loading the snapshot (%s): a Redis server exits when the RDB "
                 "it loads is corrupt; see its log, and restart it" % e)
        if rep.get("master_link_status") == "up" and rep.get("master_sync_in_progress") == "0":
            break
        if time.monotonic() > deadline + 3600 * 6: fail("the target did not finish loading the snapshot")
        try:
            peer.settimeout(0.05)
            if peer.recv(65536) == b"":
                fail("the target dropped the link while loading the snapshot (see its log)")
        except socket.timeout:
            pass
        except OSError as e:
            fail("the target dropped the link while loading the snapshot (%s; see its log)" % e)
finally:
    try:
        if not gone: c.call("REPLICAOF", "NO", "ONE")
        if not gone: c.call("CONFIG", "SET", "masterauth", old_auth or "")
    except (Err, OSError) as e:
        sys.stderr.write("mdsl: could not make the target a master again: %s\n" % e)
    listener.close()
keyspace = info(c, "keyspace")
print("loaded %d bytes: %s" % (size, ", ".join("%s %s" % kv for kv in sorted(keyspace.items())) or "no keys"))
'''
