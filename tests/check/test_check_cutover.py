"""mdsl.check.cutover: the point of no return and what a rollback undoes at each step; `mdsl plan` shows it."""

from __future__ import annotations

from mdsl.check import check_plan
from mdsl.check.cutover import rollback_of
from mdsl.syntax.parser import parse_text

PLAN = '''host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }

postgres old_db on old { database = "app"  run_as = "postgres" }
postgres new_db on new { database = "app"  run_as = "postgres"  fresh = true }

service old_app on old { systemd = ["app"]  writes = [old_db] }
service old_web on old { systemd = ["nginx"] }
service new_app on new { systemd = ["app"]  writes = [new_db]  initially = stopped }

steps {
  run old "occ maintenance:mode --on" undo = "occ maintenance:mode --off" run_as = "www-data"
  stop old_app, old_web
  start old_web
  dump old_db to old:"/root/app.dump"
  transfer old:"/root/app.dump" to new:"/root/app.dump"
  restore new:"/root/app.dump" into new_db
  start new_app
  stop old_web
}
'''


def _rollback():
    res = check_plan(parse_text(PLAN, "p.plan"))
    assert res.bound.ok
    return rollback_of(res.bound)


def test_each_step_before_the_cutover_knows_its_rollback():
    rb = _rollback()
    assert rb.cutover == {(6,)} and rb.cutover_top == 6
    texts = {p: [u.text() for u in rb.at(p)] for p in rb.order}
    assert texts[(0,)] == ['run old "occ maintenance:mode --off"']
    assert texts[(1,)] == ["start old_app, old_web", 'run old "occ maintenance:mode --off"']
    # old_web was started again by step 3: a rollback after it starts old_app only
    assert texts[(5,)] == ["start old_app", 'run old "occ maintenance:mode --off"']
    assert rb.undo[(0,)].run_as == "www-data"
    # at and after the point of no return: nothing
    assert texts[(6,)] == [] and texts[(7,)] == []
    assert not rb.before_cutover((6,))
    every = rb.every_step()
    assert all(every.get(p, []) == rb.at(p) for p in rb.order)


def test_mdsl_plan_shows_the_rollback_of_every_step():
    from mdsl.compile.plan import compile_plan
    from mdsl.run.commands import format_plan

    text = format_plan(compile_plan(check_plan(parse_text(PLAN, "p.plan")).bound))
    assert '    # rollback if it fails: start old_app, old_web; run old "occ maintenance:mode --off"' in text
    assert "    # rollback if it fails: none (at or after the point of no return)" in text
