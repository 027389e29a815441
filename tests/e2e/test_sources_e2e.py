"""Issue #16 over real sshd and PostgreSQL: a source database whose name is wrong is refused before the
first step, and a stop that did not stop is caught before the dump reads the database."""

from __future__ import annotations

import subprocess

from hosts import plan_str
from reliability_helpers import mdsl


def _plan(ssh_hosts, pg_source, writer, tmp_path, *, database: str, stop: str, status: str) -> str:
    a = ssh_hosts.a
    marker = a.root / "MARKER"
    text = f"""plan "sources"
{ssh_hosts.plan_host_decl("a")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD").replace(
    f"database = {plan_str(pg_source.db)}", f"database = {plan_str(database)}")}
service old_app on a {{
  start  = {plan_str(writer.start_cmd)}
  stop   = {plan_str(stop)}
  status = {plan_str(status)}
  writes = [old_db]
}}
steps {{
  run a "touch {marker}"
  stop old_app
  dump old_db to a:"{a.root}/backup/db.dump"
}}
"""
    plan = tmp_path / "sources.plan"
    plan.write_text(text)
    return plan


def test_a_source_database_with_a_wrong_name_is_refused_before_the_first_step(ssh_hosts, pg_source, writer,
                                                                            tmp_path):
    plan = _plan(ssh_hosts, pg_source, writer, tmp_path, database=pg_source.db + "_prod",
                 stop=writer.stop_cmd, status=writer.status_cmd)
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error[P406]" in r.stderr and "is read by the plan but does not exist" in r.stderr, r.stderr
    assert "nothing was stopped or changed" in r.stderr
    assert not (ssh_hosts.a.root / "MARKER").exists()


def test_a_stop_that_did_not_stop_is_caught_before_the_dump(ssh_hosts, pg_source, writer, tmp_path):
    # a stop that fails silently (as dash rejecting `kill --` did) and a status that believes it
    subprocess.run(writer.start_cmd, shell=True, check=True)
    plan = _plan(ssh_hosts, pg_source, writer, tmp_path, database=pg_source.db,
                 stop="true", status="false")
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "old_db still has clients after old_app stopped" in r.stderr, r.stderr
    assert not (ssh_hosts.a.root / "backup" / "db.dump").exists()
    assert subprocess.run(writer.status_cmd, shell=True).returncode == 0  # it really still runs
