"""E: the plan cannot be understood. E101 comes from the parser, E102-E106 from
name resolution (`mdsl/check/resolve.py`), E107 from suppressions (`suppress.py`).
Each makes its findings through its rule here (`E106.finding(message, span, ...)`),
so a misspelt code is an undefined name, not a silent string."""

from __future__ import annotations

from mdsl.check.rules.base import ERROR, Rule
from mdsl.check.rules.examples import DBS, FILES, HOSTS, MOVE, SERVICES, plan

_DECLS = HOSTS + "\n" + DBS + "\n" + FILES + "\n" + SERVICES

E101 = Rule(
    "E101", "syntax error", ERROR,
    summary=(
        "The text is not a plan: a keyword is missing or misspelled, a string is not closed on its "
        "line, a name uses capitals or dashes. The finding gives the file, line and column, the "
        "offending text and what was expected there. Nothing else is checked until it parses."),
    bad=plan(MOVE.replace('transfer old:"/root/app.dump" to new:', 'transfer old:"/root/app.dump" new:', 1)),
    fixed=plan(MOVE),
    source="rustc- and sqlglot-style diagnostics (STYLE.md): the file, line and column, the offending "
           "text and what was expected, so a typo costs seconds, not a failed migration.",
)

E102 = Rule(
    "E102", "unknown name", ERROR,
    summary=(
        "A step or attribute names a host, database, dir, file or service that is not declared. "
        "The finding suggests the closest declared name."),
    bad=plan(MOVE.replace("  stop old_app\n", "  stop old_ap\n", 1)),
    fixed=plan(MOVE),
    source="rustc's and ruff's 'did you mean': most unknown names are typos of declared ones.",
)

E103 = Rule(
    "E103", "a name of the wrong kind", ERROR,
    summary=(
        "A name is declared, but as something else than the step needs: `stop old_db` (a database, "
        "not a service), `dump old_files` (a dir, not a database), a location on a name that is not "
        "a host."),
    bad=plan(MOVE.replace("  stop old_app\n", "  stop old_db\n", 1)),
    fixed=plan(MOVE),
    source="without it, `stop old_db` would fail at apply time, in the middle of the downtime, with "
           "systemd's 'Unit old_db.service not found'.",
)

E104 = Rule(
    "E104", "a name or label is declared twice", ERROR,
    summary=(
        "Every host, database, dir, file and service has its own name, and every step label names "
        "one step (for `apply --from LABEL`). A second declaration of the same name is reported "
        "with the place of the first."),
    bad=plan(MOVE, _DECLS + 'host new { ssh = "root@203.0.113.9" }\n'),
    fixed=plan(MOVE),
    source="two declarations of one name make every reference to it ambiguous; a label must name one "
           "step for `apply --from LABEL`.",
)

E105 = Rule(
    "E105", "a location on an unknown host, or one host where two are needed", ERROR,
    summary=(
        "A location `HOST:\"PATH\"` names a host that is not declared, or a step that moves data "
        "between places names the same place twice (`transfer` from a file to itself, `move` across "
        "hosts, which is a `transfer`)."),
    bad=plan(MOVE.replace('to new:"/root/app.dump"', 'to neww:"/root/app.dump"', 1)),
    fixed=plan(MOVE),
    source="the seed moved its files between machines by hand (`tailscale file cp` on one, `tailscale "
           "file get` on the other): which host holds which file is easy to get wrong.",
)

E106 = Rule(
    "E106", "an unknown or ill-typed attribute or option", ERROR,
    summary=(
        "An attribute the declaration does not have (with a suggestion), a value of the wrong type "
        "(`port = \"22\"`), a missing required attribute (a postgres without `database`), a "
        "relative path, or a step option the step does not take (`format = tar` on a dump)."),
    bad=plan(MOVE.replace('dump old_db to old:"/root/app.dump"', 'dump old_db to old:"/root/app.dump" format = tar')),
    fixed=plan(MOVE.replace('dump old_db to old:"/root/app.dump"',
                            'dump old_db to old:"/root/app.dump" format = custom')),
    source="the seed's PostgreSQL authentication took a day to get right; an attribute silently "
           "ignored because of a typo would cost the same day.",
)

_UNOWNED = _DECLS.replace('dir new_files on new { path = "/srv/app/files"  owner = "app:app" }',
                          'dir new_files on new { path = "/srv/app/files" }')
E107 = Rule(
    "E107", "a suppression without a reason, or for a code that does not fire", ERROR,
    summary=(
        "`# mdsl: allow CODE \"reason\"` on a step's line or the line above silences that code on "
        "that step. It needs a reason (the next reader must know why the hazard is acceptable), it "
        "must name a code that fires there (a stale allow hides the next real finding), and E-codes "
        "cannot be allowed. A malformed `# mdsl:` comment is reported too."),
    bad=plan(MOVE.replace("  extract", "  # mdsl: allow H302\n  extract"), _UNOWNED),
    fixed=plan(MOVE.replace("  extract", '  # mdsl: allow H302 "the image build chowns /srv/app/files on boot"\n'
                                         "  extract"), _UNOWNED),
    source="ruff's `# noqa` and clippy's `#[allow]` make the reason optional and let stale allows pile"
           " up; mdsl requires the reason and reports the stale ones.",
)
