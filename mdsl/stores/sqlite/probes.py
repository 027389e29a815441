"""SQLite in preflight: the source is a database file that passes quick_check (P406)."""

from __future__ import annotations

from typing import List

from mdsl.compile.context import CompileContext
from mdsl.compile.parts import Arg, sh
from mdsl.findings import Finding
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.sqlite import Sqlite
from mdsl.stores.sqlite.commands import PYTHON, script

CLIENTS = ()
PACKAGES = {}
TOOL_HELP = ""


def tool_word(db: Sqlite, name: str) -> str:
    """SQLite needs no client of its own: python3's sqlite3 module."""
    return name


def auth_text(db: Sqlite) -> str:
    """How the database is opened, for P406's note."""
    return f"read as the login user: {db.path}"


def version_words(db: Sqlite, dumps: bool, restores_archive: bool) -> List[str]:
    """No client versions to compare: a backup file opens in any SQLite 3."""
    return []


def dump_findings(db, step, version, probe_of) -> List[Finding]:
    """Nothing to compare (see version_words)."""
    return []


def pair_findings(source, target, restore_step, plain, version, probe_of) -> List[Finding]:
    """Nothing to compare (see version_words)."""
    return []


# Preflight: a missing file is reported (exit 3) rather than opened, which would create it. Without a
# `-wal` beside it no writer has the database open, and it is read as immutable: a read-only open of a
# WAL-mode database would leave `-wal` and `-shm` files behind that it may not remove.
PROBE_SCRIPT = (
    "import os, sqlite3, sys, urllib.parse; p = sys.argv[1]; "
    "os.path.exists(p) or sys.exit(3); "
    "how = \"?mode=ro\" if os.path.exists(p + \"-wal\") else \"?immutable=1\"; "
    "db = sqlite3.connect(\"file:\" + urllib.parse.quote(p) + how, uri=True); "
    "r = db.execute(\"PRAGMA quick_check\").fetchone()[0]; db.close(); "
    "print(os.path.getsize(p)) if r == \"ok\" else sys.exit(\"integrity check failed: \" + r)"
)


def probe(ctx: CompileContext, run, db: Sqlite) -> DatabaseProbe:
    """The file is a SQLite database that passes quick_check (its size), or is missing."""
    r = run(ctx.command(db.host, sh(PYTHON, "-c", script(PROBE_SCRIPT), Arg(db.path), "2>&1")))
    if r.exit == 3:
        return DatabaseProbe(False, missing=True, error=f"{db.path} does not exist",
                             help="fix `path`, or mount the disk that holds it")
    if r.exit == 127:
        return DatabaseProbe(False, skipped=True)
    out = r.stdout.strip().splitlines()
    if r.ok and out and out[-1].isdigit():
        return DatabaseProbe(True, size=int(out[-1]))
    last = out[-1] if out else f"exit {r.exit}"
    return DatabaseProbe(False, error=f"{db.path} is not a readable SQLite database: {last}",
                         help="check `path` (is it the database file?) and that the login user may read it")
