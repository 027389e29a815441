"""H308: Docker Compose's project-name hazard, as far as the plan alone tells it."""

from __future__ import annotations

from typing import Iterator

from mdsl.check.rules.base import WARNING, Rule
from mdsl.check.rules.examples import HOSTS, plan
from mdsl.docker import compose_project_name
from mdsl.findings import Finding
from mdsl.model import Service, Volume

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
def compose_volumes(w) -> Iterator[Finding]:
    """H308: each volume a step fills, against the project names of the Compose services using it."""
    res = w.bound.resources
    services = [s for s in res.values() if isinstance(s, Service) and s.compose]
    if not services:
        return
    for name, (_, steps) in w.index.arrivals.items():
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


CHECKS = (compose_volumes,)
