"""H310: a step changes the source before the point of no return, and a rollback cannot undo it.

Only when the plan runs with rollback (`mdsl check --rollback`, `mdsl apply --rollback-on-failure`): a
rollback promises the old site back as it was, so every change the plan makes to the source before the
cutover must come with its way back. What counts as the source and what a rollback undoes is
mdsl.check.cutover's; this module words the finding.
"""

from __future__ import annotations

from typing import Iterator

from mdsl.check.cutover import rollback_of
from mdsl.check.rules.base import WARNING, Rule
from mdsl.check.rules.examples import HOSTS, plan
from mdsl.findings import Finding
from mdsl.model import BoundPlan
from mdsl.syntax import ast as A

_DECLS = HOSTS + '''
postgres old_db on old { database = "nextcloud"  run_as = "postgres" }
postgres new_db on new { database = "nextcloud"  run_as = "postgres"  fresh = true }

service old_app on old { systemd = ["php8.2-fpm"]  writes = [old_db] }
service new_app on new { systemd = ["php8.2-fpm"]  writes = [new_db]  initially = stopped }
'''
_MARKER = "# checked with: mdsl check --rollback\n"


def _steps(maintenance: str) -> str:
    return f'''  {maintenance}
  stop old_app
  dump old_db to old:"/root/nc.dump"
  transfer old:"/root/nc.dump" to new:"/root/nc.dump"
  restore new:"/root/nc.dump" into new_db
  start new_app
'''


H310 = Rule(
    "H310", "a step changes the source before the cutover, and a rollback cannot undo it", WARNING,
    summary=(
        "Before the point of no return (the first start of a service on data that arrived from elsewhere) "
        "a failure, a `no` or a Ctrl-C can roll back: mdsl starts again what the plan stopped and runs the "
        "`undo` of each `run` step that declared one, so the old site serves again as it was. A step before "
        "the cutover that changes the source without a way back breaks that promise: a `run` on a source "
        "host with no `undo` (unless it declares that it only `reads`), or a `drop`, `delete`, `move`, "
        "`restore` or `extract` of the source's data. After a rollback the old app would serve again with "
        "that change made (a maintenance mode still on, a table gone). Declare `undo = \"CMD\"` on the `run`, "
        "or move the step after the cutover. Reported only when the plan runs with rollback "
        "(`mdsl check --rollback`, `mdsl apply --rollback-on-failure`)."),
    bad=_MARKER + plan(_steps('run old "sudo -u www-data php occ maintenance:mode --on"'), _DECLS),
    fixed=_MARKER + plan(_steps('run old "sudo -u www-data php occ maintenance:mode --on" '
                                'undo = "sudo -u www-data php occ maintenance:mode --off"'), _DECLS),
    source="issue 16: a Nextcloud move failed at the restore after `occ maintenance:mode --on` and the stop; "
           "the old site stayed down, in maintenance mode, until someone logged in and undid both by hand.",
)


@H310.on_text
def irreversible(walk) -> Iterator[Finding]:
    """When the plan runs with rollback: each step before the cutover that changes the source with no undo."""
    if walk.rollback:
        yield from findings(walk.bound)


CHECKS = (irreversible,)


def findings(bound: BoundPlan) -> Iterator[Finding]:
    """H310 for each step before the cutover that changes the source with no undo."""
    rb = rollback_of(bound)
    cut = (f"the point of no return is line {min(_line(bound, p) for p in rb.cutover)}" if rb.cutover
           else "the plan has no point of no return: a rollback may follow any step")
    for change in rb.irreversible:
        s = change.step
        if isinstance(s, A.Run):
            help = ('declare how to undo it: `undo = "CMD"` (run on the same host when a rollback follows '
                    'this step), or, if it changes nothing, `reads = [..]` only')
        else:
            help = "move it after the cutover (once the new host is verified), where no rollback follows it"
        yield H310.finding(f"`{s.keyword}` {change.what} before the cutover, and a rollback cannot undo it",
                           s.span, label="no way back for a rollback",
                           notes=(f"{cut}; a rollback after this step would bring the old app back with "
                                  "this change still made",),
                           help=help)


def _line(bound: BoundPlan, path) -> int:
    steps = bound.steps
    step = None
    for i in path:
        step = steps[i]
        steps = getattr(step, "steps", ())
    return step.span.line
