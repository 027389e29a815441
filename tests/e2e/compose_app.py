"""An Immich-like app for the Docker e2e tests, run inside a container by Compose.

Until it gets SIGTERM it writes, every tick N: /library/asset-N.txt (a bind mount),
/cache/model-N.bin (a named volume), and one row (N) into table `assets` of database
`immich` through a psql it keeps open (PGHOST/PGUSER in the environment). A stop
finishes the tick, so after a clean stop the table has exactly one row per file in each
dir. At start it prints what it found: `started: R rows, L library files, C cache files`.
Only the standard library, so the image's small python3 runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

LIBRARY, CACHE = "/library", "/cache"
stopping = False


def _stop(signum, frame) -> None:
    global stopping
    stopping = True


def psql(database: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-d", database, "-c", sql], capture_output=True, text=True)


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    deadline = time.monotonic() + 60
    while psql("postgres", "select 1").returncode != 0:  # the database container may still be starting
        if time.monotonic() > deadline or stopping:
            print("database never answered", flush=True)
            return 1
        time.sleep(0.2)
    if "immich" not in psql("postgres", "select datname from pg_database").stdout.split():
        psql("postgres", "create database immich")
    psql("immich", "create table if not exists assets (seq int primary key, written timestamptz default now())")
    rows = int(psql("immich", "select count(*) from assets").stdout.strip() or 0)
    print(f"started: {rows} rows, {len(os.listdir(LIBRARY))} library files, {len(os.listdir(CACHE))} cache files",
          flush=True)
    feed = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "immich"], stdin=subprocess.PIPE,
                            text=True)
    n = int(psql("immich", "select coalesce(max(seq), 0) from assets").stdout.strip() or 0)
    while not stopping:
        n += 1
        with open(f"{LIBRARY}/asset-{n:07d}.txt", "w") as f:
            f.write(f"asset {n}\n" * 20)
        with open(f"{CACHE}/model-{n:07d}.bin", "wb") as f:
            f.write(os.urandom(512))
        feed.stdin.write(f"insert into assets (seq) values ({n});\n")
        feed.stdin.flush()
        time.sleep(0.02)
    feed.stdin.close()
    code = feed.wait()
    print(f"stopped after {n} assets (psql exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
