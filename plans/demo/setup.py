#!/usr/bin/env python3
"""Reset the demo: ROOT/old gets a notes database, files (with a cache), secrets, and a running app;
ROOT/new is removed. Only folders this script made (marked `.mdsl-demo`) are ever removed.

    setup.py ROOT
"""

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "app.py")
MARK = ".mdsl-demo"


def app(cmd, root):
    return subprocess.run([sys.executable, APP, cmd, root], stdout=subprocess.DEVNULL).returncode


def reset(path):
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, MARK)):
            sys.exit(f"refusing to remove {path}: it was not made by the demo (no {MARK} file)")
        app("stop", path)
        shutil.rmtree(path)


def main(root):
    if not os.path.isabs(root) or os.path.normpath(root) == "/":
        sys.exit("ROOT must be an absolute path other than /")
    old, new = os.path.join(root, "old"), os.path.join(root, "new")
    reset(old)
    reset(new)
    os.makedirs(new, mode=0o755)
    open(os.path.join(new, MARK), "w").close()
    for d in ("files/attachments", "files/cache/avatars", "files/accounts"):
        os.makedirs(os.path.join(old, d))
    open(os.path.join(old, MARK), "w").close()
    db = sqlite3.connect(os.path.join(old, "notes.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, at REAL NOT NULL)")
    with db:
        db.executemany("INSERT INTO notes (body, at) VALUES (?, 0)", [(f"seed note {i}",) for i in range(1, 201)])
    db.close()
    for i in range(1, 21):
        with open(os.path.join(old, "files", "accounts", f"header-{i}.txt"), "w") as f:
            f.write(f"account {i}\n")
        with open(os.path.join(old, "files", "cache", "avatars", f"seed-{i}.bin"), "wb") as f:
            f.write(os.urandom(2048))
    fd = os.open(os.path.join(old, "app.env"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"SECRET_KEY={secrets.token_hex(32)}\nDB=notes.db\n")
    if app("start", old) != 0:
        sys.exit("the demo app did not start; see " + os.path.join(old, "app.log"))
    print(f"demo reset: {old} has data and a running app; {new} is empty")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
