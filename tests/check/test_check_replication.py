"""`replicate DB to DB live` and its final pass: parsed, formatted, bound (two databases of one kind
that can replicate) and walked: the target is provisional until the final pass (H206), which is not
H201's business."""

from __future__ import annotations

from mdsl.check.resolve import resolve
from mdsl.syntax import ast as A
from mdsl.syntax.format import format_text
from mdsl.syntax.parser import parse_text
from check_helpers import findings_of

DECLS = '''host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }
postgres old_db on old { database = "app"  user = "postgres"  tcp = "127.0.0.1:5432"  password = env("PW") }
postgres new_db on new { database = "app"  run_as = "postgres" }
mysql my_db on new { database = "app" }  redis q_old on old { tcp = "127.0.0.1:6379" }
mysql my_new on new { database = "app2" }  redis q_new on new { tcp = "127.0.0.1:6379" }
service old_app on old { systemd = ["app"]  writes = [old_db] }
service new_app on new { systemd = ["app"]  writes = [new_db]  initially = stopped }
'''


def check(steps: str):
    text = f'plan "repl"\n{DECLS}\nsteps {{\n{steps}}}\n'
    return findings_of(text, "repl.plan")


def codes(findings):
    return [(f.code, f.span.line) for f in findings]


def test_parses_with_live_and_formats_back():
    plan = parse_text('steps {\n  replicate old_db to new_db live port = 45000\n}\n', "x.plan")
    step = plan.steps[0]
    assert isinstance(step, A.Replicate) and step.live and step.source.name == "old_db"
    assert not parse_text('steps {\n  replicate old_db to new_db\n}\n', "x.plan").steps[0].live
    assert "replicate old_db to new_db live port = 45000" in format_text(
        'steps {\n  replicate   old_db to new_db   live  port = 45000\n}\n', "x.plan")


def test_live_stop_final_start_is_clean():
    assert codes(check("  replicate old_db to new_db live\n  stop old_app\n  replicate old_db to new_db\n"
                       "  start new_app\n")) == []


def test_start_before_final_is_h206_at_the_live_pass_and_not_h201():
    f = check("  replicate old_db to new_db live\n  stop old_app\n  start new_app\n  replicate old_db to new_db\n")
    assert ("H206", 12) in codes(f) and not any(x.code in ("H201", "H205") for x in f)
    h = next(x for x in f if x.code == "H206")
    assert "`start` at line 14" in h.message and "before line 14" in h.help


def test_plan_ending_with_replication_running_is_h206():
    f = check("  replicate old_db to new_db live\n  stop old_app\n  start new_app\n")
    assert [x.code for x in f].count("H206") == 1  # reported once: at the use, not again at the end
    f = check("  replicate old_db to new_db live\n")
    assert any(x.code == "H206" and "ends with old_db still replicated" in x.message for x in f)


def test_final_pass_while_writers_run_or_without_live_pass():
    f = check("  replicate old_db to new_db live\n  replicate old_db to new_db\n  stop old_app\n  start new_app\n")
    assert any(x.code == "H206" and "while old_app may write" in x.message for x in f)
    f = check("  stop old_app\n  replicate old_db to new_db\n  start new_app\n")
    assert any(x.code == "H206" and "no `replicate old_db to new_db live`" in x.message for x in f)


def test_run_writing_the_source_during_replication_is_h206():
    f = check('  replicate old_db to new_db live\n  run old "rails db:migrate" writes = [old_db]\n'
              "  stop old_app\n  replicate old_db to new_db\n  start new_app\n")
    assert [(x.code, x.span.line) for x in f] == [("H206", 13)]
    assert "DDL" in f[0].notes[0]
    # a `run` before the live pass is fine
    f = check('  run old "rails db:migrate" writes = [old_db]\n  replicate old_db to new_db live\n'
              "  stop old_app\n  replicate old_db to new_db\n  start new_app\n")
    assert codes(f) == []


def test_dropping_the_source_before_the_final_pass_is_h206():
    f = check("  replicate old_db to new_db live\n  stop old_app\n  drop old_db\n  replicate old_db to new_db\n"
              "  start new_app\n")
    assert any(x.code == "H206" and "`drop` at line" in x.message
               and "deletes old_db before the final pass" in x.message for x in f)


def test_resolver_wants_two_distinct_databases_of_a_kind_that_replicates():
    def errors(step):
        bound = resolve(parse_text(f'plan "x"\n{DECLS}\nsteps {{\n{step}\n}}\n', "x.plan"))
        return [(f.code, f.message) for f in bound.findings]
    assert any(c == "E105" and "both are the same" in m for c, m in errors("  replicate old_db to old_db live"))
    assert any(c == "E105" and "of one kind" in m for c, m in errors("  replicate old_db to my_db live"))
    assert any(c == "E106" and "cannot be replicated" in m for c, m in errors("  replicate q_old to q_new live"))
    assert any(c == "E103" for c, _ in errors("  replicate old_app to new_db live"))
    assert any(c == "E106" and "replica_identity" in m for c, m in
               errors("  replicate old_db to new_db live replica_identity = half"))


def test_a_replicated_database_the_app_logs_in_to_needs_a_login_on_the_target():
    login = 'login app_old on old_db { user = "app"  password = env("APP_PW")  tcp = "127.0.0.1:5432" }\n'
    text = (f'plan "repl"\n{DECLS}{login}\nsteps {{\n  replicate old_db to new_db live\n  stop old_app\n'
            "  replicate old_db to new_db\n  start new_app\n}\n")
    f = findings_of(text, "repl.plan")
    assert [(x.code, x.span.line) for x in f] == [("H309", 15)]  # at the final pass
    made = login + 'login app_new on new_db { user = "app"  socket = "/run/postgresql"  like = app_old }\n'
    assert findings_of(text.replace(login, made), "repl.plan") == []


def test_replicating_into_a_database_whose_service_runs_is_h202():
    text = (f'plan "repl"\n{DECLS.replace("  initially = stopped", "")}\nsteps {{\n'
            "  replicate old_db to new_db live\n  stop old_app\n  replicate old_db to new_db\n}\n")
    f = findings_of(text, "repl.plan")
    assert ("H202", 12) in [(x.code, x.span.line) for x in f]
