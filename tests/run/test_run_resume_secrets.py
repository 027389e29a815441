"""A resume asks only for the secrets of the steps it will run (issue 17 item 10): a failed `verify`
resumed after the dump is done needs no database password, and a secret missing for a step still to run
is refused with the same words on a resume as on a first run, before anything connects."""

from __future__ import annotations

from mdsl.check import check_plan
from mdsl.compile import compile_plan
from mdsl.run import journal as J
from mdsl.syntax.parser import parse_text
from run_helpers import apply

SECRET = "MDSL_TEST_D17_DB_PASSWORD"


def plan_text(d) -> str:
    return f"""plan "resume"
host here {{ local = true }}
postgres old_db on here {{
  database = "app"
  user     = "app"
  tcp      = "127.0.0.1:9"
  password = env("{SECRET}")
}}
steps {{
  dump old_db to here:"{d}/app.dump"
  verify run here "test -e {d}/ok"
}}
"""


def _journal_dump_done_verify_failed(plan) -> None:
    compiled = compile_plan(check_plan(parse_text(plan.read_text(), str(plan))).bound)
    dump, verify = compiled.leaves()
    j = J.Journal(J.journal_path(str(plan)))
    j.started_run(str(plan))
    j.step_started(dump.id, dump.fingerprint)
    j.step_done(dump.id, dump.fingerprint, 1.0, [])
    j.step_started(verify.id, verify.fingerprint)
    j.step_failed(verify.id, verify.fingerprint, 0.1, "exit 1")
    j.finished(False)


def test_resuming_a_failed_verify_needs_no_password_of_a_done_dump(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET, raising=False)
    plan = tmp_path / "resume.plan"
    plan.write_text(plan_text(tmp_path))
    _journal_dump_done_verify_failed(plan)
    (tmp_path / "ok").touch()
    code, out, err = apply(plan)
    assert code == 0, out + err
    assert SECRET not in out + err
    assert J.read_journal(J.journal_path(str(plan))).steps["2"].status == "done"


def test_a_missing_secret_reads_the_same_on_a_first_run_and_a_resume(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET, raising=False)
    plan = tmp_path / "resume.plan"
    # a login on the database the step still to run restores into: preflight would prove it (P411)
    plan.write_text(plan_text(tmp_path).replace("steps {", f'''login app on old_db {{
  user     = "app"
  password = env("{SECRET}_APP")
}}
steps {{''').replace('  verify run', f'  restore here:"{tmp_path}/app.dump" into old_db\n  verify run'))
    code, out, first = apply(plan)
    assert code == 1
    assert "secrets needed by the plan are missing" in first and f"{SECRET}_APP" in first, first

    monkeypatch.setenv(SECRET, "not-needed-any-more")
    compiled = compile_plan(check_plan(parse_text(plan.read_text(), str(plan))).bound)
    dump = next(iter(compiled.leaves()))
    j = J.Journal(J.journal_path(str(plan)))
    j.started_run(str(plan))
    j.step_done(dump.id, dump.fingerprint, 1.0, [])
    j.finished(False)
    monkeypatch.delenv(SECRET)
    code, out, again = apply(plan)
    assert code == 1
    assert "secrets needed by the plan are missing" in again and f"{SECRET}_APP" in again, again
