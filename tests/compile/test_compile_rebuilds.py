"""Derived rebuilds as compiled steps: numbered `N+1` after the top-level step holding the start of the
service writing the target, run on the target's host, none when the plan runs the command itself or
when no such start follows, and `mdsl plan` shows why each is there."""

from __future__ import annotations

from mdsl.check import check_plan
from mdsl.check.rules.examples import DBS, HOSTS, MOVE, SERVICES, plan
from mdsl.compile import compile_plan
from mdsl.findings import Severity
from mdsl.run.commands import format_plan
from mdsl.run.schedule import count_steps
from mdsl.syntax.parser import parse_text

FILES = '''dir old_files on old {
  path  = "/srv/app/files"
  owner = "app:app"
  derived "cache" rebuild "app-rebuild-cache --all"
}
dir new_files on new { path = "/srv/app/files"  owner = "app:app" }
'''
DECLS = HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES
EXCLUDING = MOVE.replace('"/root/files.tar.gz"\n', '"/root/files.tar.gz" exclude "cache"\n', 1)


def compiled(steps: str):
    res = check_plan(parse_text(plan(steps, DECLS), "rebuild.plan"))
    assert not [f for f in res.findings if f.severity >= Severity.ERROR], res.findings
    return compile_plan(res.bound)


def test_the_rebuild_follows_the_start_on_the_target_host():
    c = compiled(EXCLUDING)
    ids = [s.id for s in c.steps]
    assert ids == ["1", "2", "3", "4", "5", "6", "7", "8", "8+1"]
    rb = c.steps[-1]
    assert [s.path for s in c.steps] == [(i,) for i in range(9)]
    assert rb.kind == "run" and rb.hosts == ("new",) and rb.implicit == "rebuilds old_files/cache"
    assert rb.describe() == ["[new] $ app-rebuild-cache --all"]
    assert c.steps[-2].summary == "start new_app"
    assert count_steps(c) == (9, 9)
    text = format_plan(c)
    assert "[8+1] run new \"app-rebuild-cache --all\"" in text
    assert "left behind by the `archive` at line" in text


def test_steps_after_it_keep_their_ids_and_get_their_place():
    c = compiled(EXCLUDING + '  verify http "https://app.example.net/" via = new\n')
    assert [s.id for s in c.steps][-3:] == ["8", "8+1", "9"]
    assert c.steps[-1].path == (9,)


def test_no_implicit_step_when_the_plan_runs_the_command():
    c = compiled(EXCLUDING + '  run new "sudo -u app app-rebuild-cache --all --verbose"\n')
    assert [s.id for s in c.steps][-2:] == ["8", "9"]
    assert not any(s.implicit for s in c.steps)


def test_no_implicit_step_when_the_subpath_is_copied_or_no_start_follows():
    assert not any(s.implicit for s in compiled(MOVE).steps)
    no_start = EXCLUDING.replace("  start new_app\n", "")
    assert not any(s.implicit for s in compiled(no_start).steps)


def test_a_start_inside_a_parallel_block_puts_the_rebuild_after_the_block():
    steps = EXCLUDING.replace("  start new_app\n", "  parallel {\n    start new_app\n    run old \"true\"\n  }\n")
    c = compiled(steps)
    assert [s.id for s in c.steps][-2:] == ["8", "8+1"]
    assert c.steps[-2].is_parallel and c.steps[-1].implicit
