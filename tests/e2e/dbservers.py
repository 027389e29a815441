"""Real MariaDB and Redis servers for end-to-end tests, started here and stopped by pid.

Plain Python (no pytest); conftest.py wraps these in fixtures. Processes are
recorded in hosts.REGISTRY, like the sshd daemons and PostgreSQL clusters.

Layout under the e2e base directory:

    mariadb/<name>/data                 the data directory (mariadb-install-db, owned by mysql)
    mariadb/<name>/run/mysqld.sock      socket, pid file and error log (owned by mysql)
    redis/<name>/redis.sock, dump dir   one redis-server (runs as root, like the test sshd)

Both read no configuration of the machine (`--no-defaults`, every redis
setting on the command line), so the Debian packages' /etc files and the
daemons those packages would start change nothing here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hosts import REGISTRY, ProcRef, _require_traversable, _run, free_port, plan_str, wait_for_tcp

MARIADBD = "/usr/sbin/mariadbd"
MARIADB_TOOLS = ("mariadb-install-db", "mariadb", "mariadb-dump")
REDIS_SERVER = "/usr/bin/redis-server"
REDIS_TOOLS = ("redis-cli",)


def missing_tools() -> list[str]:
    """Server and client programs these classes need that this machine lacks."""
    missing = [p for p in (MARIADBD, REDIS_SERVER) if not os.path.exists(p)]
    missing += [t for t in MARIADB_TOOLS + REDIS_TOOLS if shutil.which(t) is None]
    try:
        import pwd

        pwd.getpwnam("mysql")
    except KeyError:
        missing.append("OS user mysql")
    return missing


def _redis_config_str(value: str) -> str:
    """A double-quoted redis.conf value (sdssplitargs unescapes \\, \\" and \\xHH)."""
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@+=")
    return '"' + "".join(chr(b) if b in safe else f"\\x{b:02x}" for b in value.encode()) + '"'


def _chown_mysql(path: Path) -> None:
    shutil.chown(path, "mysql", "mysql")


def sql_ident(name: str) -> str:
    """A MariaDB identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"


def sql_str(value: str) -> str:
    """A MariaDB string literal (backslashes escaped too: the default sql_mode treats them as escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def option_file_text(password: str, user: str | None = None) -> str:
    """A `[client]` option file holding a password (quoted: `#`, `;`, quotes and spaces survive)."""
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = ["[client]"]
    if user is not None:
        lines.append(f"user={user}")
    lines.append(f"password={quoted}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MariaTableSum:
    """A table's row count and `CHECKSUM TABLE` value."""

    rows: int
    checksum: int | None


# ---------------------------------------------------------------- mariadb


# A Nextcloud-like schema: utf8mb4 text with emoji, BLOBs, and a view, a trigger and a procedure whose
# DEFINER (`ncadmin`@`localhost`) exists only on the source server. Rows come from MariaDB's SEQUENCE
# engine (seq_1_to_N), so loading needs no client-side data.
NEXTCLOUD_SQL = r"""
SET NAMES utf8mb4;
CREATE TABLE oc_users (
  uid VARCHAR(64) NOT NULL PRIMARY KEY,
  displayname VARCHAR(64),
  password VARCHAR(255) NOT NULL DEFAULT '',
  uid_lower VARCHAR(64) DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO oc_users
  SELECT CONCAT('user', seq), CONCAT('Üser ', seq, ' 🐘'), CONCAT('3|$argon2id$v=19$', MD5(seq)), CONCAT('user', seq)
  FROM seq_1_to_@USERS@;

CREATE TABLE oc_filecache (
  fileid BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  storage BIGINT NOT NULL,
  path VARCHAR(4000),
  path_hash VARCHAR(32) NOT NULL,
  parent BIGINT NOT NULL,
  name VARCHAR(250),
  mimetype BIGINT NOT NULL DEFAULT 0,
  size BIGINT NOT NULL DEFAULT 0,
  mtime BIGINT NOT NULL DEFAULT 0,
  etag VARCHAR(40),
  permissions INT DEFAULT 0,
  checksum VARCHAR(255),
  UNIQUE KEY fs_storage_path_hash (storage, path_hash),
  KEY fs_parent (parent)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO oc_filecache (fileid, storage, path, path_hash, parent, name, mimetype, size, mtime, etag, permissions, checksum)
  SELECT seq, 1 + seq % @USERS@, CONCAT('files/Documents/', seq % 97, '/Fïlé ', seq, ' 📄.odt'),
         MD5(CONCAT('files/', seq)), seq - seq % 50, CONCAT('Fïlé ', seq, ' 📄.odt'),
         1 + seq % 12, (seq * 7919) % 50000000, 1600000000 + seq * 31, SUBSTR(SHA1(seq), 1, 13), 27,
         CONCAT('SHA1:', SHA1(seq))
  FROM seq_1_to_@FILES@;

CREATE TABLE oc_activity (
  activity_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  timestamp INT NOT NULL DEFAULT 0,
  affecteduser VARCHAR(64) NOT NULL,
  app VARCHAR(32) NOT NULL,
  subject VARCHAR(255) NOT NULL,
  subjectparams LONGTEXT NOT NULL,
  file VARCHAR(4000),
  object_id BIGINT NOT NULL DEFAULT 0,
  KEY activity_user_time (affecteduser, timestamp)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO oc_activity (activity_id, timestamp, affecteduser, app, subject, subjectparams, file, object_id)
  SELECT seq, 1600000000 + seq * 60, CONCAT('user', 1 + seq % @USERS@), ELT(1 + seq % 3, 'files', 'comments', 'files_sharing'),
         ELT(1 + seq % 4, 'created_self', 'changed_self', 'deleted_by', 'shared_with_by'),
         JSON_OBJECT('file', CONCAT('/Fïlé ', seq, ' 📄.odt'), 'by', CONCAT('user', seq % 7), 'n', seq),
         CONCAT('/Documents/', seq % 97, '/Fïlé ', seq, ' 📄.odt'), seq
  FROM seq_1_to_@ACTIVITIES@;

CREATE TABLE oc_comments (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  actor_id VARCHAR(64) NOT NULL,
  object_id VARCHAR(64) NOT NULL,
  message LONGTEXT,
  creation_timestamp DATETIME NOT NULL,
  KEY comments_object (object_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
CREATE TABLE oc_comment_counts (
  object_id VARCHAR(64) NOT NULL PRIMARY KEY,
  n INT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE oc_preview_blobs (
  id BIGINT NOT NULL PRIMARY KEY,
  fileid BIGINT NOT NULL,
  data MEDIUMBLOB NOT NULL
) ENGINE=InnoDB;
INSERT INTO oc_preview_blobs
  SELECT seq, seq * 3, CONCAT(UNHEX('00275C0A0D1A22FF'), RANDOM_BYTES(1 + seq % 1000), UNHEX(SHA2(seq, 256)))
  FROM seq_1_to_@BLOBS@;

CREATE DEFINER = `ncadmin`@`localhost` TRIGGER oc_comments_count AFTER INSERT ON oc_comments FOR EACH ROW
  INSERT INTO oc_comment_counts VALUES (NEW.object_id, 1) ON DUPLICATE KEY UPDATE n = n + 1;
INSERT INTO oc_comments (actor_id, object_id, message, creation_timestamp)
  SELECT CONCAT('user', 1 + seq % @USERS@), seq % 5000,
         CONCAT('Comment ', seq, ': ', ELT(1 + seq % 4, 'looks good 👍', 'naïve café ☕', '日本語のコメント', 'emoji 🎉🔥💾')),
         TIMESTAMP '2021-01-01 00:00:00' + INTERVAL seq MINUTE
  FROM seq_1_to_@COMMENTS@;

CREATE DEFINER = `ncadmin`@`localhost` SQL SECURITY DEFINER VIEW oc_storage_usage AS
  SELECT storage, COUNT(*) AS files, SUM(size) AS bytes FROM oc_filecache GROUP BY storage;

DELIMITER //
CREATE DEFINER = `ncadmin`@`localhost` PROCEDURE oc_files_of(IN st BIGINT)
  SQL SECURITY DEFINER
BEGIN
  SELECT COUNT(*) FROM oc_filecache WHERE storage = st;
END //
DELIMITER ;
"""


class MariaDbServer:
    """One MariaDB server (mariadb-install-db, then mariadbd as the mysql OS user) in its own directory.

    root authenticates over the socket by unix_socket (Debian's default); application users get
    passwords and connect over TCP. `reported_version` makes the server claim another version
    (mariadbd's `--version=`), to stand in for an older or newer server.
    """

    def __init__(self, base: Path, name: str, *, listen: str = "127.0.0.1", port: int | None = None,
                 reported_version: str | None = None) -> None:
        self.name = name
        self.dir = Path(base) / "mariadb" / name
        self.datadir = self.dir / "data"
        self.rundir = self.dir / "run"
        self.socket = self.rundir / "mysqld.sock"
        self.pid_file = self.rundir / "mysqld.pid"
        self.log_path = self.rundir / "error.log"
        self.listen = listen
        self.port = port or 0
        self.reported_version = reported_version
        # options after the defaults (a later option wins): e.g. a replication source's --log-bin
        self.extra_args: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._ref: ProcRef | None = None
        # what the fixtures put in it: the application database, user and password
        self.db: str | None = None
        self.app_user: str | None = None
        self.app_password: str | None = None

    # -- creation
    def _make_dirs(self) -> None:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.parent.chmod(0o755)
        _require_traversable(self.dir.parent)
        self.dir.mkdir()
        self.dir.chmod(0o755)
        self.rundir.mkdir()
        self.rundir.chmod(0o755)
        _chown_mysql(self.rundir)

    def install(self) -> "MariaDbServer":
        """A new, stopped server: system tables only, root by unix_socket."""
        self._make_dirs()
        _run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=mysql",
              "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve",
              *self._small_innodb()], cwd=str(self.dir))
        return self

    @staticmethod
    def _small_innodb() -> list[str]:
        # The default 96 MiB redo log is written in full at start and copied by every clone.
        return ["--innodb-log-file-size=16M", "--innodb-buffer-pool-size=64M"]

    def clone(self, base: Path, name: str, *, reported_version: str | None = None) -> "MariaDbServer":
        """A stopped copy of this (stopped) server, e.g. a pristine data set per test."""
        assert not self.running, "stop a server before cloning it"
        other = MariaDbServer(base, name, listen=self.listen, reported_version=reported_version)
        other._make_dirs()
        _run(["cp", "-a", str(self.datadir), str(other.datadir)])
        other.db, other.app_user, other.app_password = self.db, self.app_user, self.app_password
        return other

    # -- lifecycle
    @property
    def pid(self) -> int | None:
        return self._ref.pid if self._ref and self._ref.alive() else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _argv(self) -> list[str]:
        argv = [MARIADBD, "--no-defaults"]
        if self.reported_version:
            argv.append(f"--version={self.reported_version}")
        return argv + [
            f"--datadir={self.datadir}", f"--socket={self.socket}", f"--port={self.port}",
            f"--bind-address={self.listen}", "--user=mysql", f"--pid-file={self.pid_file}",
            f"--log-error={self.log_path}", "--skip-name-resolve", "--skip-log-bin",
            # Debian's /etc/mysql/mariadb.conf.d/50-server.cnf sets these; --no-defaults skipped it
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
            "--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0", "--max-connections=60",
            *self._small_innodb(), *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> "MariaDbServer":
        """Start mariadbd (its own session, stays our child) and wait until it answers on its socket."""
        if self.running:
            return self
        last = ""
        for attempt in range(5):
            if not self.port or attempt:
                self.port = free_port(self.listen)
            self.pid_file.unlink(missing_ok=True)
            proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            ref = REGISTRY.record(proc.pid, f"mariadbd {self.name}")
            if wait_for_tcp(self.listen, self.port, timeout, proc) and self._answers(timeout):
                self._proc, self._ref = proc, ref
                return self
            ref.stop(timeout=10.0)
            proc.wait(timeout=5)
            last = self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
        raise RuntimeError(f"mariadbd {self.name} did not start:\n{last}")

    def _answers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql("SELECT 1", check=False) == "1":
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 60.0, *, discard: bool = False) -> None:
        """Clean shutdown (SIGTERM) by pid; SIGKILL only if it hangs (at once with discard: the data
        dir is about to be deleted, so InnoDB's shutdown flush is wasted time)."""
        ref = self._ref
        if ref is None and self.pid_file.exists():
            ref = REGISTRY.record(int(self.pid_file.read_text().split()[0]), f"mariadbd {self.name}")
        if ref is not None:
            ref.stop(signal.SIGKILL if discard else signal.SIGTERM, timeout=timeout)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = self._ref = None

    def destroy(self) -> None:
        """Stop and delete the server's directory."""
        self.stop(discard=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "MariaDbServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- connections
    @property
    def tcp(self) -> str:
        """`addr:port`, as a plan's `tcp = "..."` wants it."""
        return f"{self.listen}:{self.port}"

    def client_argv(self, db: str | None = None) -> list[str]:
        """`mariadb` as root over the socket (unix_socket auth), batch mode, no column names."""
        argv = ["mariadb", "--no-defaults", "--protocol=socket", f"--socket={self.socket}", "-u", "root",
                "--batch", "--skip-column-names", "--default-character-set=utf8mb4"]
        return argv + ([f"--database={db}"] if db else [])

    def sql(self, sql: str, db: str | None = None, check: bool = True, timeout: float = 600) -> str:
        """Run SQL as root over the socket; the output, tab-separated, stripped."""
        r = _run(self.client_argv(db), input=sql, check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"mariadb failed ({r.returncode}) on {self.name}/{db}: {r.stderr}")
        return r.stdout.strip() if r.returncode == 0 else ""

    def sql_tcp(self, sql: str, db: str | None, user: str, password: str | None) -> subprocess.CompletedProcess:
        """Run SQL over TCP as user; the password goes in a 0600 option file, never argv or the environment."""
        with tempfile.TemporaryDirectory(prefix="mdsl-mycnf-") as tmp:
            cnf = Path(tmp) / "client.cnf"
            fd = os.open(cnf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(option_file_text(password, user) if password is not None else f"[client]\nuser={user}\n")
            argv = ["mariadb", f"--defaults-file={cnf}", "--protocol=tcp", f"--host={self.listen}",
                    f"--port={self.port}", "--batch", "--skip-column-names", "--connect-timeout=5",
                    "--default-character-set=utf8mb4", *([f"--database={db}"] if db else [])]
            return _run(argv, input=sql, check=False, timeout=600)

    def create_user(self, name: str, password: str | None = None, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                    database: str | None = None) -> None:
        """A user at each host (the password travels on the client's stdin), with all rights on `database`."""
        stmts = []
        for host in hosts:
            who = f"{sql_str(name)}@{sql_str(host)}"
            ident = f" IDENTIFIED BY {sql_str(password)}" if password is not None else ""
            stmts.append(f"CREATE USER {who}{ident};")
            if database:
                stmts.append(f"GRANT ALL PRIVILEGES ON {sql_ident(database)}.* TO {who};")
        self.sql("\n".join(stmts))

    def createdb(self, name: str) -> None:
        self.sql(f"CREATE DATABASE {sql_ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;")

    def databases(self) -> list[str]:
        system = {"information_schema", "mysql", "performance_schema", "sys"}
        return [d for d in self.sql("SHOW DATABASES").splitlines() if d not in system]

    def load_nextcloud(self, db: str, files: int = 200_000) -> dict[str, int]:
        """Nextcloud-like tables (`files` rows in oc_filecache, the others in proportion); row counts.

        The view, trigger and procedure are defined by `ncadmin`@`localhost`, made here and nowhere else.
        """
        sizes = {"USERS": max(files // 1000, 10), "FILES": files, "ACTIVITIES": max(files // 2, 10),
                 "COMMENTS": max(files // 10, 10), "BLOBS": max(files // 100, 10)}
        script = NEXTCLOUD_SQL
        for key, value in sizes.items():
            script = script.replace(f"@{key}@", str(value))
        self.sql("CREATE USER IF NOT EXISTS `ncadmin`@`localhost`;\n"
                 f"GRANT ALL PRIVILEGES ON {sql_ident(db)}.* TO `ncadmin`@`localhost`;")
        # The benches load millions of rows: allow 600 s per million (6-10x what a load took here).
        self.sql(script, db=db, timeout=max(600, files * 600 / 1_000_000))
        return self.row_counts(db)

    # -- comparing
    def tables(self, db: str) -> list[str]:
        """Base tables of db (views excluded), sorted."""
        return self.sql(f"SELECT table_name FROM information_schema.tables WHERE table_schema = {sql_str(db)} "
                        "AND table_type = 'BASE TABLE' ORDER BY 1").splitlines()

    def row_counts(self, db: str) -> dict[str, int]:
        return {t: s.rows for t, s in self.table_sums(db, checksum=False).items()}

    def table_sums(self, db: str, checksum: bool = True) -> dict[str, MariaTableSum]:
        """Per base table: exact row count and `CHECKSUM TABLE` (content and layout of every row)."""
        tables = self.tables(db)
        if not tables:
            return {}
        counts = self.sql("\nUNION ALL\n".join(f"SELECT {sql_str(t)}, COUNT(*) FROM {sql_ident(t)}" for t in tables), db=db)
        rows = dict(line.split("\t") for line in counts.splitlines())
        sums: dict[str, int | None] = {t: None for t in tables}
        if checksum:
            out = self.sql(f"CHECKSUM TABLE {', '.join(sql_ident(db) + '.' + sql_ident(t) for t in tables)} EXTENDED")
            for line in out.splitlines():
                qualified, value = line.split("\t")
                sums[qualified.split(".", 1)[1]] = None if value == "NULL" else int(value)
        return {t: MariaTableSum(int(rows[t]), sums[t]) for t in tables}

    def routines(self, db: str) -> dict[str, str]:
        """{"TYPE name": definer} for every view, trigger, procedure, function and event in db."""
        q = sql_str(db)
        out = self.sql(
            f"SELECT CONCAT('VIEW ', table_name), definer FROM information_schema.views WHERE table_schema = {q}\n"
            f"UNION ALL SELECT CONCAT('TRIGGER ', trigger_name), definer FROM information_schema.triggers "
            f"WHERE trigger_schema = {q}\n"
            f"UNION ALL SELECT CONCAT(routine_type, ' ', routine_name), definer FROM information_schema.routines "
            f"WHERE routine_schema = {q}\n"
            f"UNION ALL SELECT CONCAT('EVENT ', event_name), definer FROM information_schema.events WHERE event_schema = {q}")
        return dict(line.split("\t") for line in out.splitlines())

    def version(self) -> str:
        return self.sql("SELECT VERSION()")

    def plan_decl(self, name: str, on: str, *, database: str | None = None, user: str | None = None,
                  password_env: str | None = None, socket: bool = False, run_as: str | None = None,
                  fresh: bool = False) -> str:
        """A `mysql NAME on HOST { }` declaration: TCP with user and password, or the socket (as run_as)."""
        lines = [f"mysql {name} on {on} {{", f"  database = {plan_str(database or self.db or '')}"]
        if user:
            lines.append(f"  user     = {plan_str(user)}")
        if socket:
            lines.append(f"  socket   = {plan_str(str(self.socket))}")
        else:
            lines.append(f"  tcp      = {plan_str(self.tcp)}")
        if password_env:
            lines.append(f"  password = env({plan_str(password_env)})")
        if run_as:
            lines.append(f"  run_as   = {plan_str(run_as)}")
        if fresh:
            lines.append("  fresh    = true")
        return "\n".join(lines + ["}"])

    def __repr__(self) -> str:
        return f"MariaDbServer({self.name!r}, {self.tcp}, sock={str(self.socket)!r})"


# ---------------------------------------------------------------- redis


@dataclass(frozen=True)
class RedisKey:
    """One key as compared after a copy: its database, type, value and remaining TTL in ms (-1: none)."""

    type: str
    value: object
    pttl: int


class RespError(Exception):
    """An error reply from Redis (`-ERR ...`, `-WRONGPASS ...`)."""


class Resp:
    """A minimal blocking RESP2 client (enough for tests: no pipelining, no pub/sub)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    @classmethod
    def unix(cls, path: str, timeout: float = 30.0) -> "Resp":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock)

    @classmethod
    def tcp(cls, address: str, port: int, timeout: float = 30.0) -> "Resp":
        return cls(socket.create_connection((address, port), timeout=timeout))

    @staticmethod
    def encode(*words: str | bytes) -> bytes:
        """One command in RESP (an array of bulk strings)."""
        parts = [w.encode() if isinstance(w, str) else w for w in words]
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    def call(self, *words: str | bytes):
        """Send one command, return its reply (bytes, int, list, None); raise RespError on an error reply."""
        self.sock.sendall(self.encode(*words))
        return self._reply()

    def _reply(self):
        line = self.reader.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> "Resp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RedisServer:
    """One redis-server on a loopback port and a unix socket, no persistence of its own (`--save ''`)."""

    def __init__(self, base: Path, name: str, *, listen: str = "127.0.0.1", port: int | None = None,
                 password: str | None = None, maxmemory: int | None = None) -> None:
        self.name = name
        self.dir = Path(base) / "redis" / name
        self.socket = self.dir / "redis.sock"
        self.pid_file = self.dir / "redis.pid"
        self.log_path = self.dir / "redis.log"
        self.listen = listen
        self.port = port or 0
        self.password = password
        self.maxmemory = maxmemory
        self._proc: subprocess.Popen | None = None
        self._ref: ProcRef | None = None

    @property
    def pid(self) -> int | None:
        return self._ref.pid if self._ref and self._ref.alive() else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _argv(self) -> list[str]:
        argv = [REDIS_SERVER, "-", "--port", str(self.port), "--bind", self.listen, "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--pidfile", str(self.pid_file),
                "--logfile", str(self.log_path), "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.maxmemory is not None:
            argv += ["--maxmemory", str(self.maxmemory)]
        return argv

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start redis-server; its password is read from its stdin (`redis-server -`), never argv."""
        if self.running:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        last = ""
        for attempt in range(5):
            if not self.port or attempt:
                self.port = free_port(self.listen)
            proc = subprocess.Popen(self._argv(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            ref = REGISTRY.record(proc.pid, f"redis-server {self.name}")
            config = f"requirepass {_redis_config_str(self.password)}\n" if self.password is not None else ""
            proc.stdin.write(config.encode())
            proc.stdin.close()
            if wait_for_tcp(self.listen, self.port, timeout, proc):
                self._proc, self._ref = proc, ref
                return self
            ref.stop(timeout=5.0)
            proc.wait(timeout=5)
            last = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        raise RuntimeError(f"redis-server {self.name} did not start:\n{last}")

    def stop(self) -> None:
        """SIGTERM by pid (nothing saved: `--save ''`), SIGKILL if it hangs."""
        if self._ref is not None:
            self._ref.stop(signal.SIGTERM, timeout=10.0)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = self._ref = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def tcp(self) -> str:
        return f"{self.listen}:{self.port}"

    def cli(self, *args: str, db: int = 0, input: str | None = None, check: bool = True) -> str:
        """redis-cli over the socket (the password in REDISCLI_AUTH, not argv); raw output."""
        env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password is not None else None
        r = _run(["redis-cli", "-s", str(self.socket), "-n", str(db), *args], input=input, env=env, check=False,
                 timeout=600)
        if check and (r.returncode != 0 or r.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS"))):
            raise RuntimeError(f"redis-cli {' '.join(args[:2])} failed on {self.name}: {r.stdout}{r.stderr}")
        return r.stdout

    def load_sample(self, keys: int = 1000, *, db: int = 0, prefix: str = "k", ttl_every: int = 5) -> int:
        """Strings, hashes, lists, sets and sorted sets (binary-safe values), every `ttl_every`-th key
        expiring in 1-2 hours; returns the number of keys written. Fed through `redis-cli --pipe`."""
        proto = []
        for i in range(keys):
            kind = i % 5
            key = f"{prefix}:{('str', 'hash', 'list', 'set', 'zset')[kind]}:{i}"
            if kind == 0:
                proto.append(Resp.encode("SET", key, f"value {i} ☕ ".encode() + bytes([i % 256, 0, 13, 10])))
            elif kind == 1:
                proto.append(Resp.encode("HSET", key, "name", f"user{i}", "bio", f"naïve {i} 🐘", "n", str(i)))
            elif kind == 2:
                proto.append(Resp.encode("RPUSH", key, *[f"job-{i}-{j}" for j in range(1 + i % 7)]))
            elif kind == 3:
                proto.append(Resp.encode("SADD", key, *[f"m{j}" for j in range(1 + i % 9)]))
            else:
                proto.append(Resp.encode("ZADD", key, *[w for j in range(1 + i % 6) for w in (str(j * 1.5), f"member{j}")]))
            if i % ttl_every == 0:
                proto.append(Resp.encode("PEXPIRE", key, str(3_600_000 + i * 997 % 3_600_000)))
        env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password is not None else None
        r = subprocess.run(["redis-cli", "-s", str(self.socket), "-n", str(db), "--pipe"], input=b"".join(proto),
                           env=env, capture_output=True, timeout=600)
        if r.returncode != 0 or b"errors: 0" not in r.stdout:
            raise RuntimeError(f"redis-cli --pipe into {self.name}: {r.stdout!r} {r.stderr!r}")
        return keys

    def keyspace(self) -> dict[int, int]:
        """{db: number of keys} from INFO keyspace."""
        out = {}
        for line in self.cli("INFO", "keyspace").splitlines():
            if line.startswith("db"):
                name, fields = line.strip().split(":", 1)
                out[int(name[2:])] = int(dict(f.split("=") for f in fields.split(","))["keys"])
        return out

    def connect(self) -> "Resp":
        """A RESP connection over the socket, authenticated."""
        conn = Resp.unix(str(self.socket))
        if self.password is not None:
            conn.call("AUTH", self.password)
        return conn

    def snapshot(self) -> dict[tuple[int, bytes], RedisKey]:
        """Every key of every database: type, value (sets sorted, hashes as dicts) and PTTL in ms."""
        result: dict[tuple[int, bytes], RedisKey] = {}
        with self.connect() as conn:
            for db in self.keyspace():
                conn.call("SELECT", str(db))
                for key in conn.call("KEYS", "*"):
                    kind = conn.call("TYPE", key).decode()
                    if kind == "string":
                        value: object = conn.call("GET", key)
                    elif kind == "hash":
                        flat = conn.call("HGETALL", key)
                        value = dict(zip(flat[::2], flat[1::2], strict=True))
                    elif kind == "list":
                        value = tuple(conn.call("LRANGE", key, "0", "-1"))
                    elif kind == "set":
                        value = tuple(sorted(conn.call("SMEMBERS", key)))
                    elif kind == "zset":
                        value = tuple(conn.call("ZRANGE", key, "0", "-1", "WITHSCORES"))
                    else:
                        value = conn.call("DUMP", key)
                    result[(db, key)] = RedisKey(kind, value, conn.call("PTTL", key))
        return result

    def plan_decl(self, name: str, on: str, *, password_env: str | None = None, socket: bool = False,
                  fresh: bool = False) -> str:
        """A `redis NAME on HOST { }` declaration (TCP or the socket, optional password)."""
        lines = [f"redis {name} on {on} {{"]
        lines.append(f"  socket   = {plan_str(str(self.socket))}" if socket else f"  tcp      = {plan_str(self.tcp)}")
        if password_env:
            lines.append(f"  password = env({plan_str(password_env)})")
        if fresh:
            lines.append("  fresh    = true")
        return "\n".join(lines + ["}"])

    def __repr__(self) -> str:
        return f"RedisServer({self.name!r}, {self.tcp}, sock={str(self.socket)!r})"


# ---------------------------------------------------------------- templates for the fixtures


NEXTCLOUD_DB = "nextcloud"
NEXTCLOUD_USER = "nextcloud"
NEXTCLOUD_FILES = 200_000  # oc_filecache rows; with the other tables about 330k rows


@dataclass
class MariaTemplates:
    """Stopped template servers, copied per test (cp -a of the data dir beats install + load).

    source: database `nextcloud` with the Nextcloud-like data, user `nextcloud` (password, TCP) and
    the DEFINER-only user `ncadmin`; target: an empty database `nextcloud`, root by unix_socket only.
    """

    source: object  # hosts.ClonePool of MariaDbServer
    target: object
    password: str

    @classmethod
    def build(cls, base: Path, password: str) -> "MariaTemplates":
        from hosts import ClonePool

        made: list[MariaDbServer] = []
        try:
            source = MariaDbServer(base, "template-source").install()
            made.append(source)
            with source:
                source.createdb(NEXTCLOUD_DB)
                source.create_user(NEXTCLOUD_USER, password, database=NEXTCLOUD_DB)
                source.load_nextcloud(NEXTCLOUD_DB, files=NEXTCLOUD_FILES)
                # what preflight asks an admin to do, so that the app user can dump ncadmin's procedure
                source.sql(f"GRANT SELECT ON mysql.proc TO {sql_str(NEXTCLOUD_USER)}@'127.0.0.1';")
            source.db, source.app_user, source.app_password = NEXTCLOUD_DB, NEXTCLOUD_USER, password
            target = MariaDbServer(base, "template-target").install()
            made.append(target)
            with target:
                target.createdb(NEXTCLOUD_DB)
            target.db = NEXTCLOUD_DB
            return cls(ClonePool(source, base, "mariadb-source"), ClonePool(target, base, "mariadb-target"), password)
        except BaseException:
            for server in made:
                server.destroy()
            raise

    def close(self) -> None:
        for pool in (self.source, self.target):
            pool.close()
            pool.template.destroy()
