"""What a `replicate ... live` makes is journaled with the commands that remove it (secrets as references
only), read back from the journal alone, and forgotten once its final pass removed it."""

from __future__ import annotations

import json

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Feed
from mdsl.run import journal as J
from mdsl.run.apply import replications_of
from mdsl.run.command_json import from_json, to_json
from mdsl.syntax.parser import parse_text

PLAN = '''plan "r"
host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }
KIND old_db on old { database = "app"  user = "rep"  tcp = "10.0.0.5:3307"  password = env("PW") }
KIND new_db on new { database = "app"  run_as = "ADMIN" }
service old_app on old { systemd = ["app"]  writes = [old_db] }
steps {
  replicate old_db to new_db live
  stop old_app
  replicate old_db to new_db
}
'''


def compiled(kind: str):
    text = PLAN.replace("KIND", kind).replace("ADMIN", "root" if kind == "mysql" else "postgres")
    bound = resolve(parse_text(text, "r.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def _feeds(step):
    return [a for a in step.actions if isinstance(a, Feed)]


def test_each_kind_journals_its_objects_at_the_live_pass_and_removes_them_at_the_final_pass():
    for kind, hosts in (("postgres", ["new", "old"]), ("mysql", ["new"])):
        cp = compiled(kind)
        creates = [a.creates for a in _feeds(cp.steps[0]) if a.creates is not None]
        assert len(creates) == 1 and creates[0].name.startswith("mdsl_")
        assert sorted(c.host for c in creates[0].cleanup) == hosts
        assert [a.removes for a in _feeds(cp.steps[2]) if a.removes] == [creates[0].name]
        assert replications_of(cp) == [creates[0].name]


def test_commands_round_trip_through_json_with_secrets_as_references():
    cp = compiled("postgres")
    objects = next(a.creates for a in _feeds(cp.steps[0]) if a.creates is not None)
    for cmd in objects.cleanup:
        raw = json.loads(json.dumps(to_json(cmd)))
        assert from_json(raw) == cmd
    source_cleanup = next(c for c in objects.cleanup if c.host == "old")
    text = json.dumps(to_json(source_cleanup))
    assert '["env", "PW"]' in text and "pg_drop_replication_slot" in text


def test_the_journal_keeps_a_replication_until_it_is_removed_and_across_a_restart(tmp_path):
    path = str(tmp_path / "p.journal")
    cp = compiled("mysql")
    objects = next(a.creates for a in _feeds(cp.steps[0]) if a.creates is not None)
    j = J.Journal(path)
    j.started_run("p.plan")
    j.replication_created(objects.name, [to_json(c) for c in objects.cleanup])
    j.reset()  # --restart, or an edited plan: the steps are forgotten, not what is left on the servers
    j.close()
    state = J.read_journal(path)
    rec = state.replications[objects.name]
    assert rec.hosts == ("new",)
    assert [from_json(c) for c in rec.cleanup] == list(objects.cleanup)
    assert "STOP SLAVE" in rec.cleanup[0]["stdin"][0][1]
    j = J.Journal(path)
    j.replication_removed(objects.name)
    j.close()
    assert J.read_journal(path).replications == {}
