"""Issue #16 over real sshd and PostgreSQL: a restore that fails after `stop old_app` ends, with
--rollback-on-failure, with the old app serving again on unchanged data and its maintenance mode undone;
the journal resumes once the cause is fixed; a killed apply is rolled back by `mdsl rollback`."""

from __future__ import annotations

from hosts import plan_str
from reliability_helpers import Apply, human, mdsl, no_traceback, output, wait_until


def _plan(ssh_hosts, pg_source, pg_target, writer, tmp_path, extra: str = "") -> str:
    a, b = ssh_hosts.a, ssh_hosts.b
    text = f"""plan "rollback"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
{pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True)}
service old_app on a {{
  start  = {plan_str(writer.start_cmd)}
  stop   = {plan_str(writer.stop_cmd)}
  status = {plan_str(writer.status_cmd)}
  writes = [old_db]
}}
steps {{
  run a "touch {a.root}/MAINTENANCE" undo = "rm -f {a.root}/MAINTENANCE"
  stop old_app
  dump old_db to a:"{a.root}/backup/db.dump"
  transfer a:"{a.root}/backup/db.dump" to b:"{b.root}/in/db.dump"
{extra}  restore b:"{b.root}/in/db.dump" into new_db
}}
"""
    plan = tmp_path / "rollback.plan"
    plan.write_text(text)
    return plan


def _source_tables(pg):
    """The source's tables the app does not write (their rows and checksums): what a rollback must keep."""
    return {t: s for t, s in pg.table_checksum(pg.db).items() if t != "writer_events"}


def test_a_failed_restore_after_the_stop_rolls_back_and_resumes_once_fixed(ssh_hosts, pg_source, pg_target,
                                                                          writer, tmp_path):
    a = ssh_hosts.a
    writer.start()
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote")
    before = _source_tables(pg_source)
    # the cause: a table already in the target's database, owned by someone else, that the restore cannot replace
    pg_target.psql("CREATE TABLE public.accounts (id int)", db=pg_target.db)
    plan = _plan(ssh_hosts, pg_source, pg_target, writer, tmp_path)
    r = mdsl("apply", "--yes", "--rollback-on-failure", str(plan))
    text = human(output(r))
    no_traceback(text)
    assert r.returncode == 1, text
    assert "error: step 5 `restore" in text, text
    assert "rollback: start old_app ... ok  (undid step 2)" in text, text
    assert "undid step 1" in text, text
    # the old app serves again, on the same data; its maintenance mode is off again
    assert writer.running
    rows = pg_source.row_counts(pg_source.db)["writer_events"]
    wait_until(lambda: pg_source.row_counts(pg_source.db)["writer_events"] > rows, what="the old app writes again")
    assert _source_tables(pg_source) == before
    assert not (a.root / "MAINTENANCE").exists()
    assert "the journal resumes at step 1" in text, text
    # the cause fixed: the run resumes from the start (the source ran again since the dump) and finishes
    pg_target.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION mastodon", db=pg_target.db)
    r = mdsl("apply", "--yes", "--rollback-on-failure", str(plan))
    assert r.returncode == 0, human(output(r))
    assert not writer.running
    src, dst = pg_source.table_checksum(pg_source.db), pg_target.table_checksum(pg_target.db)
    assert dst == src


def test_kill_then_mdsl_rollback(ssh_hosts, pg_source, pg_target, writer, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    writer.start()
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote")
    before = _source_tables(pg_source)
    started = b.root / "STARTED"
    plan = _plan(ssh_hosts, pg_source, pg_target, writer, tmp_path,
                 extra=f'  run b "touch {started} && sleep 120"\n')
    run = Apply(plan)
    try:
        wait_until(lambda: started.exists() or not run.running, timeout=240, step=0.2, what="the slow step")
        assert run.running, run.finish().stderr
        run.kill()
    finally:
        res = run.finish()
    assert res.returncode != 0
    assert not writer.running and (a.root / "MAINTENANCE").exists()
    r = mdsl("status", str(plan))
    r = mdsl("rollback", "--yes", str(plan))
    text = human(output(r))
    no_traceback(text)
    assert r.returncode == 0, text
    assert "start old_app  (undoes step 2 `stop old_app`)" in text, text
    assert "rolled back: the old app serves again" in text, text
    assert writer.running and not (a.root / "MAINTENANCE").exists()
    assert _source_tables(pg_source) == before
    # the journal now resumes at the stop; a second rollback has nothing left to do
    r = mdsl("rollback", "--yes", str(plan))
    assert r.returncode == 0 and "nothing to roll back" in r.stdout, human(output(r))
