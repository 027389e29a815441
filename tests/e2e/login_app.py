#!/usr/bin/env python3
"""A small app for e2e tests that logs in to its database exactly as its configuration file says.

    login_app.py start  --config C --pidfile P --log L --sql "INSERT ..."   # first write now, then one per 0.1 s
    login_app.py stop   --pidfile P
    login_app.py status --pidfile P        # exit 0 while it runs (it exits at its first failed write)

The configuration is what a real app keeps (wp-config.php, .env.production), as KEY=VALUE lines:
DB_TYPE (mysql or postgres), DB_HOST (an address, or a socket: a path), DB_PORT, DB_NAME, DB_USER,
DB_PASSWORD. The password reaches the client through a 0600 file (an option file, a PGPASSFILE),
never argv. `start` makes the first write itself and exits non-zero when it fails, so a `start` step
of a plan fails when the app cannot log in. Standard library only: any python3 on a host runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PSQL = "/usr/lib/postgresql/15/bin/psql" if os.path.exists("/usr/lib/postgresql/15/bin/psql") else "psql"


def read_config(path: str) -> dict:
    """KEY=VALUE lines (the value is everything after the first `=`); `#` starts a comment line."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


class Client:
    """One write as the configuration says, through the database's own client program."""

    def __init__(self, conf: dict, secrets_dir: str) -> None:
        self.conf = conf
        self.kind = conf["DB_TYPE"]
        path = os.path.join(secrets_dir, "secret")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            pw = conf.get("DB_PASSWORD", "")
            if self.kind == "mysql":
                f.write('[client]\npassword="' + pw.replace("\\", "\\\\").replace('"', '\\"') + '"\n')
            else:
                f.write("*:*:*:*:" + pw.replace("\\", "\\\\").replace(":", "\\:") + "\n")
        self.secret = path

    def argv(self, sql: str) -> tuple[list[str], dict]:
        c = self.conf
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL"))}
        if self.kind == "mysql":
            where = ([f"--socket={c['DB_HOST']}", "--protocol=socket"] if c["DB_HOST"].startswith("/") else
                     ["--protocol=tcp", f"--host={c['DB_HOST']}", f"--port={c.get('DB_PORT', '3306')}"])
            return (["mariadb", f"--defaults-extra-file={self.secret}", *where, f"--user={c['DB_USER']}",
                     "--batch", "--skip-column-names", f"--execute={sql}", "--", c["DB_NAME"]], env)
        env["PGPASSFILE"] = self.secret
        dsn = (f"host={c['DB_HOST']} port={c.get('DB_PORT', '5432')} dbname={c['DB_NAME']} user={c['DB_USER']} "
               "connect_timeout=5")
        return [PSQL, "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql], env

    def write(self, sql: str) -> subprocess.CompletedProcess:
        argv, env = self.argv(sql)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def start(args) -> int:
    conf = read_config(args.config)
    secrets_dir = tempfile.mkdtemp(prefix="login-app-")
    client = Client(conf, secrets_dir)
    first = client.write(args.sql)
    log = open(args.log, "a")
    if first.returncode != 0:
        log.write(f"login failed: {first.stderr.strip()}\n")
        print(f"login_app: cannot write as {conf['DB_USER']}: {first.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(secrets_dir)
        return 1
    log.write("first write ok\n")
    log.flush()
    if os.fork():
        return 0
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the session that started it must not wait for our output
        os.dup2(null, fd)
    Path(args.pidfile).write_text(str(os.getpid()))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    while not stopping:
        r = client.write(args.sql)
        if r.returncode != 0:
            log.write(f"write failed: {r.stderr.strip()}\n")
            break
        time.sleep(0.1)
    log.close()
    shutil.rmtree(secrets_dir, ignore_errors=True)
    Path(args.pidfile).unlink(missing_ok=True)
    os._exit(0)


def _pid(pidfile: str):
    try:
        pid = int(Path(pidfile).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--config")
    p.add_argument("--pidfile", required=True)
    p.add_argument("--log", default="/dev/null")
    p.add_argument("--sql", default="SELECT 1")
    args = p.parse_args(argv)
    if args.action == "start":
        return start(args)
    pid = _pid(args.pidfile)
    if args.action == "status":
        return 0 if pid else 3
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if _pid(args.pidfile) is None:
                break
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
