#!/usr/bin/env python3
"""The demo's service: a tiny notes app that keeps writing while it runs.

    app.py start ROOT    start it in the background (needs ROOT/app.env)
    app.py stop ROOT     stop it (SIGTERM, waits until it is gone); fine if not running
    app.py status ROOT   exit 0 when it runs, 3 when it does not
    app.py check ROOT    it runs, its database is intact, its files and secrets are there
    app.py serve ROOT    the process itself (start runs this)

While running it adds a note to ROOT/notes.db (SQLite, WAL mode) every 50 ms,
writes an attachment under ROOT/files/attachments and, now and then, an avatar
under ROOT/files/cache: a copy taken while it runs would be torn, which is why
the plan stops it first.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

PID = "app.pid"


def _pid(root):
    try:
        with open(os.path.join(root, PID)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return None
    # Only our own `serve` process for this root counts (pids get reused).
    if b"serve" in cmd and os.path.abspath(root).encode() in cmd:
        return pid
    return None


def start(root):
    if _pid(root):
        print(f"already running (pid {_pid(root)})")
        return 0
    env_file = os.path.join(root, "app.env")
    if not os.path.exists(env_file):
        print(f"refusing to start: {env_file} is missing (the app's secrets)", file=sys.stderr)
        return 2
    log = open(os.path.join(root, "app.log"), "ab")
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", os.path.abspath(root)],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root,
                     start_new_session=True, close_fds=True)
    for _ in range(100):
        if _pid(root):
            print(f"started (pid {_pid(root)})")
            return 0
        time.sleep(0.05)
    print("did not start; see " + os.path.join(root, "app.log"), file=sys.stderr)
    return 1


def stop(root):
    pid = _pid(root)
    if not pid:
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not _pid(root):
            return 0
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return 0


def status(root):
    pid = _pid(root)
    if pid:
        print(f"running (pid {pid})")
        return 0
    print("not running")
    return 3


def serve(root):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    with open(os.path.join(root, "app.env")) as f:
        secret = dict(line.strip().split("=", 1) for line in f if "=" in line).get("SECRET_KEY", "")
    if not secret:
        sys.exit("app.env has no SECRET_KEY")
    files = os.path.join(root, "files")
    os.makedirs(os.path.join(files, "attachments"), exist_ok=True)
    os.makedirs(os.path.join(files, "cache", "avatars"), exist_ok=True)
    db = sqlite3.connect(os.path.join(root, "notes.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, at REAL NOT NULL)")
    db.commit()
    with open(os.path.join(root, PID + ".tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(root, PID + ".tmp"), os.path.join(root, PID))
    n = 0
    while not stopping:
        n += 1
        with db:
            cur = db.execute("INSERT INTO notes (body, at) VALUES (?, ?)", (f"note {n} from pid {os.getpid()}",
                                                                          time.time()))
        note_id = cur.lastrowid
        with open(os.path.join(files, "attachments", f"{note_id}.txt"), "w") as f:
            f.write(f"attachment of note {note_id}\n")
        if n % 10 == 0:
            with open(os.path.join(files, "cache", "avatars", f"{note_id}.bin"), "wb") as f:
                f.write(os.urandom(256))
        time.sleep(0.05)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.unlink(os.path.join(root, PID))
    return 0


def check(root):
    pid = _pid(root)
    if not pid:
        print(f"the app is not running in {root}", file=sys.stderr)
        return 1
    db = sqlite3.connect("file:" + os.path.join(root, "notes.db") + "?mode=ro", uri=True)
    if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        print("notes.db is damaged", file=sys.stderr)
        return 1
    notes = db.execute("SELECT count(*) FROM notes").fetchone()[0]
    cache = os.path.join(root, "files", "cache", "avatars")
    avatars = len(os.listdir(cache)) if os.path.isdir(cache) else 0
    env = os.path.join(root, "app.env")
    mode = oct(os.stat(env).st_mode & 0o777) if os.path.exists(env) else None
    if not avatars or mode != "0o600":
        print(f"cache avatars: {avatars}, app.env mode: {mode}", file=sys.stderr)
        return 1
    print(f"the app runs in {root} (pid {pid}): {notes} notes, {avatars} cached avatars, app.env 0600")
    print(f"stop it with: python3 {os.path.abspath(__file__)} stop {root}")
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop", "status", "check", "serve"):
        print(__doc__, file=sys.stderr)
        return 2
    return globals()[argv[1]](argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
