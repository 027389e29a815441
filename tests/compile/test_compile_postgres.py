"""PostgreSQL dump and restore defaults: what each option compiles to, and that restore reads what dump made.

The defaults are measured in bench/database.py (docs/performance.md, target 4): a custom dump is
`pg_dump -Fc -Z0 | zstd`, and pg_restore runs two jobs where it can open the file itself.
"""

from __future__ import annotations

import shlex

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Shell
from mdsl.compile.postgres import DEFAULT_RESTORE_JOBS, dump_compression
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
    assert "pg_dump -w -Fc -Z0 '--dbname=user=postgres dbname=old' | zstd -q -T0 -3 -c > /srv/db.dump.part" in dump
    # read back whole through zstd before the rename
    assert "zstd -q -dc < /srv/db.dump.part | pg_restore -f /dev/null ||" in dump
    assert dump.index("pg_restore -f /dev/null") < dump.index("mv -f -T -- /srv/db.dump.part /srv/db.dump")
    assert "zstd" in cp.tools_by_host()["a"] and "zstd" in cp.tools_by_host()["b"]


def test_default_restore_decompresses_beside_the_dump_and_runs_two_jobs():
    [restore] = commands(migrate(), "restore")
    tmp = "/srv/db.dump.restore.part"
    assert f"umask 077 && zstd -q -dc < /srv/db.dump > {tmp} &&" in restore
    w = words(restore)
    assert w[w.index("-j") + 1] == str(DEFAULT_RESTORE_JOBS) == "2"
    assert f"-- {tmp} ; }}; rc=$?; rm -f -- {tmp} ; [ \"$rc\" -eq 0 ]" in restore
    # decompressed before the database is created or touched: a cut file changes nothing
    assert restore.index("zstd -q -dc") < restore.index("createdb") < restore.index("pg_restore")


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
        # pg_restore opens the file itself, with two jobs, unless it is zstd-compressed as a whole
        assert ("zstd -q -dc <" in restore) == (piped is not None)
        assert "-j 2 '--dbname=user=app dbname=new' -- /srv/db.out" in restore
    needs_zstd = piped is not None and "zstd" in piped
    assert ("zstd" in cp.tools_by_host()["b"]) == needs_zstd


def test_a_gzip_dump_restores_with_two_jobs_straight_from_the_file():
    [restore] = commands(migrate(dump_opts=" compress = gzip"), "restore")
    w = words(restore)
    assert w[-2:] == ["--", "/srv/db.dump"] and w[w.index("-j") + 1] == "2"
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
    assert restore.startswith("if [ -d /srv/old.dump ]; then ")
    assert "elif [ \"$(head -c 5 < /srv/old.dump | tr -cd A-Z)\" = PGDMP ]; then " in restore
    assert "else { umask 077 && zstd -q -dc < /srv/old.dump > /srv/old.dump.restore.part" in restore
    # zstd is needed only if the file turns out to be zstd: preflight does not demand it
    assert "zstd" not in cp.tools_by_host()["b"]
