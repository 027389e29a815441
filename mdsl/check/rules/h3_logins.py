"""H309: the app's own database login, as far as the plan alone tells it (preflight proves the rest: P411).

What the plan says about an app's login is its `login` declarations: the source's tells how the app logs in
today, the target's how it will, and `like` says the plan makes the target's. The walk tells which databases
a restore fills from which (a dump followed through transfers); this module judges that at the end.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

from mdsl.check.rules.base import ERROR, WARNING, Rule
from mdsl.findings import Finding
from mdsl.check.rules.examples import HOSTS, plan
from mdsl.model import Login
from mdsl.stores.registry import store_of
from mdsl.syntax import ast as A

_DECLS = HOSTS + '''
mysql old_db on old { database = "wordpress"  run_as = "root" }
mysql new_db on new { database = "wordpress"  run_as = "root"  fresh = true }

# how WordPress logs in (wp-config.php: DB_USER, DB_PASSWORD, DB_HOST)
login wp_old on old_db { user = "wordpress"  password = env("WP_DB_PASSWORD")  tcp = "127.0.0.1:3306" }

service old_app on old { systemd = ["apache2"]  writes = [old_db] }
service new_app on new { systemd = ["apache2"]  writes = [new_db]  initially = stopped }
'''
_MOVE = '''  stop old_app
  dump old_db to old:"/root/wp.sql.zst"
  transfer old:"/root/wp.sql.zst" to new:"/root/wp.sql.zst"
  restore new:"/root/wp.sql.zst" into new_db
  start new_app
'''
_MADE = ('login wp_new on new_db { user = "wordpress"  password = env("WP_DB_PASSWORD")  tcp = "127.0.0.1:3306"\n'
         '                         like = wp_old }\n')

H309 = Rule(
    "H309", "the app's database login is neither made nor proven on the target", WARNING,
    summary=(
        "A dump carries tables, not the server's users and grants, and the app's configuration moves "
        "unchanged: after the cutover the app logs in to the new server exactly as it did to the old one. "
        "When the plan declares how the app logs in to a database (a `login` on it) and restores that "
        "database elsewhere, it must also say how the app logs in there: a `login` on the target, which "
        "preflight proves works before the stop (P411), or one with `like = OTHER`, which the restore makes "
        "with OTHER's grants. A `like` login whose database no step restores into is never made (an error). "
        "A PostgreSQL restore runs `pg_restore --no-owner`: what the dump creates belongs to the restoring "
        "role, so a target login of another role that the plan does not make (`like`) owns nothing there."),
    bad=plan(_MOVE, _DECLS),
    fixed=plan(_MOVE, _DECLS + _MADE),
    source="issue 19: a WordPress move on MariaDB whose `wordpress` user existed on the old box only; the site "
           "failed right after the cutover, and nothing in the plan or in preflight had said so.",
    also=(ERROR,),
)


@H309.on(A.Restore, A.Replicate)
def restored(facts, walk) -> Iterator[Finding]:
    """Remember which databases a restore (or a replication's final pass, which makes the logins as a restore
    does) fills its database from (the pieces of data it carries)."""
    if isinstance(facts.step, A.Replicate):
        if facts.step.live:
            return iter(())
        sources = (facts.step.source.name,)
    else:
        sources = tuple(dict.fromkeys(p.resource.name for p in facts.pieces if p.resource.is_database))
    walk.memo.setdefault("h309", []).append((facts.step, facts.into, sources))
    return iter(())


@H309.at_end
def unmade_logins(walk) -> Iterator[Finding]:
    """H309 for every restore of a database the app logs in to, and every login the plan is to make."""
    bound = walk.bound
    restores: List[Tuple[A.Restore, object, Tuple[str, ...]]] = walk.memo.get("h309", [])
    logins: Dict[str, List[Login]] = {}
    for r in bound.resources.values():
        if isinstance(r, Login):
            logins.setdefault(r.database, []).append(r)
    filled = {db.name for _, db, _ in restores}
    for step, db, sources in restores:
        mine = logins.get(db.name, [])
        for source in sources:
            theirs = logins.get(source, [])
            if theirs and not mine and source != db.name:
                yield _unmade(walk, step, db, theirs[0])
        owner = store_of(db).restore_owner(db)
        for login in mine:
            if owner is not None and login.like is None and login.user != owner:
                yield _owns_nothing(step, db, login, owner)
    for logs in logins.values():
        for login in logs:
            if login.like is not None and login.database not in filled:
                yield H309.finding(
                    f"`{login.name}` is made by the restore into `{login.database}` (`like = {login.like}`), "
                    f"but no step restores into `{login.database}`", login.span, severity=ERROR,
                    label="never made",
                    help=f"restore the dump into `{login.database}`, or remove `like` if the login exists there "
                         "already (preflight then proves it)")


def _unmade(walk, step: A.Restore, db, theirs: Login) -> Finding:
    source = walk.bound.resources[theirs.database]
    return H309.finding(
        f"the app logs in to `{source.name}` as `{theirs.user}` (`{theirs.name}`), but the plan declares no login on "
        f"`{db.name}`: nothing makes `{theirs.user}` exist on its server, or proves it does", step.span,
        label=f"a dump carries no {store_of(db).title} users",
        notes=("after the cutover the app logs in with the configuration it moved with, as the same user and "
               "password",),
        help=f"declare `login NAME on {db.name} {{ user = \"{theirs.user}\" ... like = {theirs.name} }}` to have the "
             "restore make it with the same grants, or without `like` if it exists there (preflight proves it works)")


def _owns_nothing(step: A.Restore, db, login: Login, owner: str) -> Finding:
    why = "the restore leaves out the dump's owners (pg_restore --no-owner); the app is refused on its own tables"
    return H309.finding(f"the restore into `{db.name}` runs as `{owner}`: what it creates belongs to `{owner}`, not "
                        f"to `{login.user}`, the role the app logs in as (`{login.name}`)", step.span,
                        label=f"owned by {owner}", notes=(why,),
                        help=f"add `like = LOGIN` (the app's login on the source) to `{login.name}`: the restore "
                             f"then gives `{login.user}` what it owned there; or restore as `{login.user}`")


# The checks of this rule, in the order they judge (mdsl.check.catalog.CHECKS).
CHECKS = (restored, unmade_logins)
