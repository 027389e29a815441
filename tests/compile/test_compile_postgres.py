"""PostgreSQL dump and restore defaults: what each option compiles to, and that restore reads what dump made.

The defaults are measured in bench/database.py (docs/performance.md, target 4): a custom dump is
`pg_dump -Fc -Z0 | zstd`, and pg_restore runs one job per CPU of the restore host (at most 8) where it
can open the file itself.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Shell
from mdsl.stores.postgres.commands import (
    RESTORE_JOBS_CAP, RESTORE_JOBS_VAR, RestorePart, auto_jobs, dump_compression,
)
from mdsl.compile.parts import Command
from mdsl.syntax.parser import parse_text

HEAD = """plan "pg"
host a { ssh = "root@10.0.0.1" }
host b { ssh = "root@10.0.0.2" }
postgres old_db on a { database = "old"  user = "postgres" }
postgres new_db on b { database = "new"  user = "app"  password = env("PW")  fresh = true }
postgres peer_db on b { database = "peer"  run_as = "postgres"  fresh = true }
"""


def compiled(steps: str):
    bound = resolve(parse_text(HEAD + "steps {\n" + steps + "\n}\n", "pg.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def commands(cp, kind: str) -> list:
    """The rendered shell text of every `kind` step (dump, restore, ...)."""
    return [a.command.render() for s in cp.leaves() if s.kind == kind for a in s.actions if isinstance(a, Shell)]


def migrate(dump_opts: str = "", restore_opts: str = "", into: str = "new_db", path: str = "/srv/db.dump"):
    return compiled(f'  dump old_db to a:"{path}"{dump_opts}\n'
                    f'  transfer a:"{path}" to b:"{path}"\n'
                    f'  restore b:"{path}" into {into} replace{restore_opts}')


def words(text: str) -> list:
    return shlex.split(text.replace("<0600 temp file: *:*:*:*:***>", "F"))


def test_default_custom_dump_is_pg_dump_without_compression_piped_into_zstd():
    cp = migrate()
    [dump] = commands(cp, "dump")
    assert ("{ { pg_dump -w -Fc -Z0 '--dbname=user=postgres dbname=old' ; echo \"$?\" >&3; } | "
            "zstd -q -T0 -3 -c > /srv/db.dump.part ; } 3>&1 )") in dump
    # pg_dump's own exit status decides, not only the read-back (sh has no pipefail)
    assert '[ "$rc" = 0 ] || { echo "mdsl: pg_dump failed (exit $rc)" >&2; exit 1; }' in dump
    # read back whole through zstd before the rename
    assert "zstd -q -dc < /srv/db.dump.part | pg_restore -f /dev/null ||" in dump
    assert dump.index("pg_restore -f /dev/null") < dump.index("mv -f -T -- /srv/db.dump.part /srv/db.dump")
    assert "zstd" in cp.tools_by_host()["a"] and "zstd" in cp.tools_by_host()["b"]


def restore_parts(cp) -> list:
    """The RestorePart destinations of every restore step."""
    return [d for s in cp.leaves() if s.kind == "restore" for d in s.destinations if isinstance(d, RestorePart)]


AUTO = f'-j "${RESTORE_JOBS_VAR}"'


def test_default_restore_decompresses_beside_the_dump_and_runs_a_job_per_cpu():
    [restore] = commands(migrate(), "restore")
    tmp = "/srv/db.dump.restore.part"
    assert f"umask 077 && zstd -q -dc < /srv/db.dump > {tmp} &&" in restore
    # the job count is the restore host's, taken when the step runs: computed first, quoted where used
    assert restore.startswith(Command("b", auto_jobs()).render() + " { umask 077 && zstd")
    assert f"{AUTO} '--dbname=user=app dbname=new' -- {tmp} ;" in restore
    assert " -j 2 " not in restore
    assert f"-- {tmp} ; }}; rc=$?; rm -f -- {tmp} ; [ \"$rc\" -eq 0 ]" in restore
    # decompressed before the database is created or touched: a cut file changes nothing
    assert restore.index("zstd -q -dc") < restore.index("createdb") < restore.index("pg_restore")


def test_the_default_restore_declares_its_decompressed_copy_for_preflight():
    cp = migrate()
    [part] = restore_parts(cp)
    assert (part.host, part.path, part.run_as) == ("b", "/srv/db.dump.restore.part", None)
    # sized after the dump it decompresses (on the restore host), which preflight follows to old_db
    assert (part.size_of.host, part.size_of.path) == ("b", "/srv/db.dump") and not part.if_zstd


@pytest.mark.parametrize("opts", [
    dict(dump_opts=" compress = gzip"), dict(dump_opts=" compress = none"), dict(dump_opts=" format = directory"),
    dict(dump_opts=" format = plain"), dict(dump_opts=" format = plain compress = zstd"),
    dict(restore_opts=" jobs = 1"), dict(into="peer_db"),
], ids=["gzip", "none", "directory", "plain", "plain-zstd", "jobs-1", "run_as-stdin"])
def test_restores_without_a_decompressed_copy_declare_none(opts):
    cp = migrate(**opts)
    [restore] = commands(cp, "restore")
    assert ".restore.part" not in restore
    assert restore_parts(cp) == []


def test_an_explicit_jobs_option_is_used_as_is():
    cp = migrate(restore_opts=" jobs = 12")
    [restore] = commands(cp, "restore")
    assert "-j 12 '--dbname=user=app dbname=new' -- /srv/db.dump.restore.part" in restore
    assert RESTORE_JOBS_VAR not in restore and "nproc" not in restore
    assert len(restore_parts(cp)) == 1


@pytest.mark.parametrize("nproc,want", [("1", "1"), ("2", "2"), ("6", "6"), ("64", str(RESTORE_JOBS_CAP)),
                                        ("", "2"), ("0", "2"), ("garbage", "2"), (None, "2")])
def test_the_job_count_is_the_hosts_cpus_capped(tmp_path, nproc, want):
    """The shell auto_jobs() renders, run by sh with a stand-in nproc (None: no nproc on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nproc is not None:
        (bin_dir / "nproc").write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(nproc)}\n")
        (bin_dir / "nproc").chmod(0o755)
    script = Command("b", auto_jobs()).render() + f' printf %s "${RESTORE_JOBS_VAR}"'
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env={"PATH": str(bin_dir)})
    assert (r.returncode, r.stdout) == (0, want), r.stderr


def test_restore_with_one_job_streams_the_zstd_dump_without_a_temp_file():
    [restore] = commands(migrate(restore_opts=" jobs = 1"), "restore")
    assert "zstd -q -dc < /srv/db.dump | " in restore and "pg_restore" in restore
    # a stream restore changes the database as it reads: the whole file is tested first
    assert restore.startswith("zstd -q -t < /srv/db.dump && ")
    assert ".restore.part" not in restore and " -j " not in restore


def test_a_run_as_target_reads_the_zstd_dump_on_stdin_serially():
    [restore] = commands(migrate(into="peer_db"), "restore")
    assert "zstd -q -dc < /srv/db.dump | sudo -n -u postgres -- pg_restore" in restore
    assert restore.index("zstd -q -t < /srv/db.dump") < restore.index("createdb")
    assert ".restore.part" not in restore and " -j " not in restore and "chown" not in restore


def test_a_run_as_target_with_jobs_gets_the_decompressed_file_handed_over():
    [restore] = commands(migrate(into="peer_db", restore_opts=" jobs = 3"), "restore")
    tmp = "/srv/db.dump.restore.part"
    assert f"> {tmp} && chown -- postgres {tmp} &&" in restore
    assert f"-j 3 --dbname=dbname=peer -- {tmp}" in restore
    # the connecting user writes it (then hands it over)
    [part] = restore_parts(migrate(into="peer_db", restore_opts=" jobs = 3"))
    assert part.path == tmp and part.run_as is None


@pytest.mark.parametrize("opt,flags,piped", [
    (" compress = gzip", "-Fc '--dbname", None),
    (" compress = none", "-Fc -Z0 '--dbname", None),
    (" compress = zstd", "-Fc -Z0 '--dbname", "zstd -q -T0 -3 -c"),
    (" format = directory", "-Fd '--dbname", None),
    (" format = directory jobs = 2 compress = none", "-Fd -j 2 -Z0 '--dbname", None),
    (" format = plain", "-Fp '--dbname", None),
    (" format = plain compress = zstd", "-Fp '--dbname", "zstd -q -T0 -3 -c"),
    (" format = plain compress = gzip", "-Fp '--dbname", "gzip -c"),
])
def test_every_format_and_compression_keeps_its_meaning(opt, flags, piped):
    cp = migrate(dump_opts=opt, path="/srv/db.out")
    [dump] = commands(cp, "dump")
    assert "pg_dump -w " + flags in dump
    if piped:
        assert f"| {piped} > /srv/db.out.part" in dump
    else:
        assert "| zstd" not in dump and "| gzip" not in dump
    [restore] = commands(cp, "restore")
    if "plain" in opt:
        assert "psql -X -w -q -v ON_ERROR_STOP=1 --single-transaction" in restore and " -j " not in restore
    else:
        # pg_restore opens the file itself, a job per CPU, unless it is zstd-compressed as a whole
        assert ("zstd -q -dc <" in restore) == (piped is not None)
        assert f"{AUTO} '--dbname=user=app dbname=new' -- /srv/db.out" in restore
    needs_zstd = piped is not None and "zstd" in piped
    assert ("zstd" in cp.tools_by_host()["b"]) == needs_zstd


def test_a_gzip_dump_restores_with_a_job_per_cpu_straight_from_the_file():
    [restore] = commands(migrate(dump_opts=" compress = gzip"), "restore")
    w = words(restore)
    assert w[-2:] == ["--", "/srv/db.dump"] and w[w.index("-j") + 1] == f"${RESTORE_JOBS_VAR}"
    assert "zstd" not in restore and ".restore.part" not in restore


def test_a_run_as_target_of_a_gzip_dump_keeps_reading_stdin():
    [restore] = commands(migrate(dump_opts=" compress = gzip", into="peer_db"), "restore")
    assert restore.endswith("pg_restore -w --no-owner --role=postgres --clean --if-exists --dbname=dbname=peer "
                            "< /srv/db.dump")


def test_dump_compression_defaults():
    assert dump_compression("custom", None) == "zstd"
    assert dump_compression("directory", None) == "gzip"
    assert dump_compression("plain", None) == "none"
    assert dump_compression("custom", "gzip") == "gzip"


def test_a_dump_made_outside_the_plan_is_recognised_when_the_step_runs():
    cp = compiled('  # mdsl: allow H203 "made by an earlier plan"\n'
                  '  restore b:"/srv/old.dump" into new_db replace')
    [restore] = commands(cp, "restore")
    assert restore.startswith(Command("b", auto_jobs()).render() + " if [ -d /srv/old.dump ]; then ")
    assert "elif [ \"$(head -c 5 < /srv/old.dump | tr -cd A-Z)\" = PGDMP ]; then " in restore
    assert "else { umask 077 && zstd -q -dc < /srv/old.dump > /srv/old.dump.restore.part" in restore
    # zstd is needed only if the file turns out to be zstd: preflight does not demand it
    assert "zstd" not in cp.tools_by_host()["b"]
    # nor nproc: without it the restore takes 2 jobs
    assert "nproc" not in cp.tools_by_host()["b"]
    # the decompressed copy is written only if the file is zstd: preflight looks at it the same way
    [part] = restore_parts(cp)
    assert part.if_zstd and (part.size_of.host, part.size_of.path) == ("b", "/srv/old.dump")
