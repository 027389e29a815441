"""Docker's own hazards, as far as the plan alone tells them: H308, Compose's project-name hazard; H311, a
database whose programs run inside a container that is not running at that step."""

from __future__ import annotations

from typing import Iterator

from mdsl.check.rules.base import WARNING, Rule
from mdsl.check.rules.examples import HOSTS, plan
from mdsl.docker import compose_project_name
from mdsl.findings import Finding
from mdsl.model import Service, Volume
from mdsl.syntax import ast as A

_DECLS = HOSTS + '''
volume old_cache on old { docker = "immich_model-cache" }
volume new_cache on new { docker = "immich_model-cache"  fresh = true }
service old_app on old { compose = "/srv/immich/docker-compose.yml"  writes = [old_cache] }
service new_app on new { compose = "/srv/immich/docker-compose.yml"  writes = [new_cache]  initially = stopped }
'''
_STEPS = '''  stop old_app
  archive old_cache to old:"/root/cache.tar.zst"
  transfer old:"/root/cache.tar.zst" to new:"/root/cache.tar.zst"
  extract new:"/root/cache.tar.zst" into new_cache
  start new_app
'''

H308 = Rule(
    "H308", "a Compose project will not use the volumes the plan fills", WARNING,
    summary=(
        "Compose names a project's volumes PROJECT_KEY, and the project is named after the directory "
        "of its compose file unless COMPOSE_PROJECT_NAME (environment or `.env`) or a top-level "
        "`name:` says otherwise. A volume the plan fills on a host whose name does not start with the "
        "project name of a Compose service there that uses it will not be the one `docker compose up` "
        "mounts: the app starts on new, empty volumes. The checker sees only the directory's name; "
        "preflight asks Compose itself on the host (P410), so a project named by `.env` or `name:` "
        "is proven there, and this warning can be allowed with that reason."),
    bad=plan(_STEPS, _DECLS.replace('new_app on new { compose = "/srv/immich/',
                                    'new_app on new { compose = "/srv/immich2/')),
    fixed=plan(_STEPS, _DECLS),
    source="Compose's project names: the same compose file started from another directory gets new volumes.",
)

@H308.at_end
def compose_volumes(walk) -> Iterator[Finding]:
    """H308: each volume a step fills, against the project names of the Compose services using it."""
    res = walk.bound.resources
    services = [s for s in res.values() if isinstance(s, Service) and s.compose]
    if not services:
        return
    for name, (_, steps) in walk.index.arrivals.items():
        v = res.get(name)
        if not isinstance(v, Volume):
            continue
        for svc in services:
            if svc.host != v.host or name not in svc.writes + svc.reads:
                continue
            project = compose_project_name(svc.compose)
            if not project or v.docker.startswith(project + "_"):
                continue
            yield H308.finding(
                f"`{steps[0].keyword}` fills volume `{v.docker}`, but Compose will name the volumes of "
                f"`{svc.compose}` `{project}_...`: `start {svc.name}` would not use it", steps[0].span,
                label=f"not a volume of project `{project}`",
                notes=(f"the project takes its name from its directory, `{project}`, unless its `.env` or `name:` "
                       "says otherwise (preflight asks Compose itself: P410)",),
                help=f"deploy the project from a directory named like the volume's prefix, or name the volume "
                     f"`{project}_...` in the plan")


_H311_DECLS = HOSTS + '''
service old_vw on old { container = "vaultwarden"  writes = [old_db] }
service old_db_server on old { container = "vw-postgres" }
service new_vw on new { container = "vaultwarden"  writes = [new_db]  initially = stopped }
service new_db_server on new { container = "vw-postgres"  initially = stopped }
postgres old_db on old { container = "vw-postgres"  database = "vaultwarden"  user = "postgres" }
postgres new_db on new { container = "vw-postgres"  database = "vaultwarden"  user = "postgres"  fresh = true }
'''
_H311_STEPS = '''  stop old_vw{also}
  dump old_db to old:"/root/vw.dump"
  transfer old:"/root/vw.dump" to new:"/root/vw.dump"
  start new_db_server
  restore new:"/root/vw.dump" into new_db
  start new_vw
'''

H311 = Rule(
    "H311", "a database's programs run inside a container that is not running", WARNING,
    summary=(
        "A database declared with `container = \"NAME\"` is dumped, restored and dropped by its own "
        "client programs inside that container (`docker exec`), which needs the container running. "
        "When a service of the plan runs that very container (`container = \"NAME\"` on the same host) "
        "and none of them runs at that step, the step fails: the database server was stopped before "
        "its dump (stop only the app, keep the database's container running), or the new one was not "
        "started before its restore. (Containers of a Compose project are matched to a database at "
        "preflight, by Docker itself: P406.)"),
    bad=plan(_H311_STEPS.format(also=", old_db_server"), _H311_DECLS),
    fixed=plan(_H311_STEPS.format(also=""), _H311_DECLS),
    source="Compose guides stop the whole stack before a backup, database included; `docker exec` into a stopped "
           "container then fails halfway through the downtime.",
)


@H311.on(A.Dump, A.Restore, A.Drop)
def container_not_running(facts, walk) -> Iterator[Finding]:
    """H311: the database's container is run by services of the plan, none of which runs now."""
    step = facts.step
    db = walk.bound.resources.get(step.db.name)
    name = getattr(db, "container", None)
    if not name:
        return
    runners = [s for s in walk.bound.resources.values()
               if isinstance(s, Service) and s.container == name and s.host == db.host]
    if not runners or any(s.name in walk.state.running for s in runners):
        return
    stops = [walk.last_stop[s.name] for s in runners if s.name in walk.last_stop]
    where = (f"`stop` at line {stops[-1].span.line} stopped it" if stops else
             f"{' and '.join(f'`{s.name}`' for s in runners)} {'is' if len(runners) == 1 else 'are'} stopped at "
             "this point (`initially = stopped`, not started yet)")
    later = f"start {runners[0].name} before this step" if not stops else \
        f"stop only the app, before this step, and keep {runners[0].name} (the database's container) running"
    yield H311.finding(
        f"`{step.keyword}` runs {db.name}'s programs inside container `{name}`, which is not running here: "
        "`docker exec` would fail", step.span, label="container stopped",
        notes=(f"{where}",), help=later)


CHECKS = (compose_volumes, container_not_running)
