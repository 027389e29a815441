"""SQLite: a consistent online copy with the backup API, never a file copy.

A plain `cp` of a live SQLite file can be torn (and misses what still sits in
the `-wal` file). Python's `sqlite3.Connection.backup` copies a consistent
snapshot even while a writer runs; python3 is on every host mdsl itself runs
on, while the `sqlite3` shell often is not. Paths reach the script as argv
(quoted words), never inside the script text.
"""

from __future__ import annotations

import shlex
from typing import Tuple

from mdsl.stores.sqlite import Sqlite
from mdsl.compile.actions import Destination, Location, Shell
from mdsl.compile.context import DEFAULT_TIMEOUT, ArtifactFormat, CompileContext, option_value, parent, step_timeout
from mdsl.compile.parts import Arg, CompileError, Lit, sh
from mdsl.syntax import ast as A

# The source is opened read-write through a URI (`mode=rw`: a missing file is an error, not a new
# empty database). Read-only would fail on a hot `-journal` left by a writer killed mid-commit
# ("attempt to write a readonly database"); read-write lets SQLite roll it back, as the app would
# have on its next start. The writers are stopped by then (the checker's H201 sees to it).
BACKUP_SCRIPT = (
    "import sqlite3, sys, urllib.parse; "
    "src = sqlite3.connect(\"file:\" + urllib.parse.quote(sys.argv[1]) + \"?mode=rw\", uri=True); "
    "dst = sqlite3.connect(sys.argv[2]); src.backup(dst); dst.close(); src.close()"
)

# A copy is checked as an immutable file: a WAL-mode database opened any other way, even read-only,
# leaves `-wal` and `-shm` files beside it, and the copy is complete in its main file once written.
CHECK_SCRIPT = (
    "import sqlite3, sys, urllib.parse; "
    "db = sqlite3.connect(\"file:\" + urllib.parse.quote(sys.argv[1]) + \"?immutable=1\", uri=True); "
    "r = db.execute(\"PRAGMA quick_check\").fetchone()[0]; "
    "sys.exit(0 if r == \"ok\" else \"integrity check failed: \" + r)"
)

# Before a backup that relies on the plan's stop of the database's writers: no process holds the file
# (or its -wal or -journal) open. Read from /proc, so no fuser is needed; as a non-root login user only
# the user's own processes are visible, which is what that user could stop anyway.
HOLDERS_SCRIPT = (
    "import os, sys; p = os.path.realpath(sys.argv[1]); names = {p, p + \"-wal\", p + \"-journal\"}; "
    "me = os.getpid(); found = []\n"
    "for pid in filter(str.isdigit, os.listdir(\"/proc\")):\n"
    "    try: links = {os.readlink(f\"/proc/{pid}/fd/{fd}\") for fd in os.listdir(f\"/proc/{pid}/fd\")}\n"
    "    except OSError: continue\n"
    "    if int(pid) != me and links & names:\n"
    "        try: comm = open(f\"/proc/{pid}/comm\").read().strip()\n"
    "        except OSError: comm = \"?\"\n"
    "        found.append(f\"{comm} (pid {pid})\")\n"
    "found and sys.exit(f\"mdsl: {sys.argv[1]} is still open by {', '.join(found)} after {sys.argv[2]} stopped: \"\n"
    "                   \"stop whatever still writes it (or check that the stop really stopped it), then run again\")"
)

PYTHON = "python3"


def script(text: str) -> Lit:
    # A constant of ours, quoted here once so it stays one word for `python3 -c`.
    return Lit(shlex.quote(text))


def dump(ctx: CompileContext, step: A.Dump, db: Sqlite, host: str, path: str):
    """`dump DB to LOC`: backup API into `PATH.part`, then rename."""
    if db.host != host:
        raise CompileError(f"`dump` of {db.name} writes on its own host `{db.host}`, not `{host}`", step.span,
                           help="dump where the database is, then `transfer`")
    part = path + ".part"
    writers = ctx.stopped_writers_of(db.name)
    guard = sh(PYTHON, "-c", script(HOLDERS_SCRIPT), Arg(db.path), Arg(", ".join(writers)), "&&") if writers else ()
    cmd = ctx.command(host, sh(
        *guard, "umask 077 && mkdir -p --", Arg(parent(path)), "&& rm -f --", Arg(part), "&&",
        PYTHON, "-c", script(BACKUP_SCRIPT), Arg(db.path), Arg(part),
        "&&", PYTHON, "-c", script(CHECK_SCRIPT), Arg(part),
        "&& mv -f -T --", Arg(part), Arg(path),
    ), tools=(PYTHON, "mkdir", "mv", "rm"))
    ctx.remember(host, path, ArtifactFormat("sqlite"))
    return ([Shell(cmd, f"online backup of {db.name}", step_timeout(step, DEFAULT_TIMEOUT),
                   watch=Location(host, part))],
            [Destination(host, path, None, db.name)])


def restore(ctx: CompileContext, step: A.Restore, db: Sqlite, host: str, path: str):
    """`restore LOC into DB [replace]`: check the copy, then swap it in with one rename.

    The stale `-wal`/`-shm`/`-journal` files of the replaced database are
    removed first: SQLite would otherwise replay an old WAL onto the new file.
    Without `replace` an existing database is refused rather than overwritten.
    The new file belongs to the database's `owner` and has its `mode` (else those
    of the file it replaces, else the login user's and 0600); a directory made for
    it belongs to `owner` too, so the app can create its `-wal` and `-shm` there.
    """
    known = ctx.format_of(host, path)
    if known is not None and known.engine != "sqlite":
        raise CompileError(f'{host}:"{path}" holds a {known.engine} artifact, not a SQLite database', step.span)
    if host != db.host:
        raise CompileError(f"restore into {db.name} reads on `{db.host}`, but the dump is on `{host}`", step.span,
                           help="transfer the dump to the database's host first")
    replace = bool(option_value(step, "replace", False))
    target, new = Arg(db.path), Arg(db.path + ".mdsl-new")
    guard = () if replace else sh(
        "{ [ ! -s", target, "] || { echo", Arg(f"mdsl: {db.path} exists; add `replace` to overwrite it"),
        ">&2; exit 1; }; } &&")
    folder = Arg(parent(db.path))
    make_folder = sh("{ [ -d", folder, "] || { mkdir -p --", folder,
                     *(sh("&& chown --", Arg(db.owner), folder) if db.owner else ()), "; }; } &&")
    like_before = sh("{ [ ! -e", target, "] || {", "chown", Arg(db.path, "--reference="), "--", new, "2>/dev/null;",
                     "chmod", Arg(db.path, "--reference="), "--", new, "; }; } &&")
    declared = (sh("chown --", Arg(db.owner), new, "&&") if db.owner else ()) + (
        sh("chmod", Arg(db.mode), "--", new, "&&") if db.mode else ())
    cmd = ctx.command(host, sh(
        "umask 077 &&", *make_folder, *guard,
        "cp -f --", Arg(path), new, "&&",
        PYTHON, "-c", script(CHECK_SCRIPT), new, "&&",
        *like_before, *declared,
        "rm -f --", Arg(db.path + "-wal"), Arg(db.path + "-shm"), Arg(db.path + "-journal"), "&&",
        "mv -f -T --", new, target,
    ), tools=(PYTHON, "cp", "mv", "rm", "chown", "chmod"))
    return [Shell(cmd, f"replace {db.name} with the checked copy", step_timeout(step, DEFAULT_TIMEOUT))], []


def _companions(db: Sqlite) -> Tuple[Arg, ...]:
    """The database file and the files SQLite keeps beside it."""
    return tuple(Arg(db.path + suffix) for suffix in ("", "-wal", "-shm", "-journal"))


def drop(ctx: CompileContext, step: A.Drop, db: Sqlite):
    """`drop DB`: remove the database file and its -wal/-shm/-journal."""
    cmd = ctx.command(db.host, sh("rm -f --", *_companions(db)), tools=("rm",))
    return [Shell(cmd, f"delete the SQLite database {db.path}", step_timeout(step, DEFAULT_TIMEOUT))]
