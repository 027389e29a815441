"""Docker and Compose as the resolver and the checker see them: what a plan may declare, no commands.

Three things are Docker's in a plan:

- a *service* run by Docker: a Compose project (`compose = "FILE"`, optionally only some of its
  `services`) or one container (`container = "NAME"`);
- a *volume*: a named Docker volume, a `dir` whose path Docker tells at apply time;
- a database *inside a container* (`container = "NAME"` on a store that supports it): its client
  programs run in that container (`docker exec -i`).

Their commands are in `mdsl/compile/docker.py` and their preflight checks in `mdsl/run/docker.py`:
each layer holds what it needs of Docker.
"""

from __future__ import annotations

import posixpath
import re
from typing import Dict, Optional, Tuple

from mdsl.model import Derived, Volume
from mdsl.stores.base import Binding

# Docker's own rules (daemon/names.go): a volume or container name.
_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# A Compose service name (compose-spec: `^[a-zA-Z0-9._-]+$`).
_COMPOSE_SERVICE = re.compile(r"[a-zA-Z0-9._-]+")
# `owner`: `user`, `user:group`, or numeric `uid:gid` as images use (999:999 for the postgres image).
_OWNER_WORD = r"(?:[0-9]+|[a-z_][a-z0-9_.-]*\$?)"
_OWNER = re.compile(rf"{_OWNER_WORD}(?::{_OWNER_WORD})?", re.I)

# The attributes a service run by Docker may have, beside `writes`, `reads`, `initially`.
SERVICE_SCHEMA = {"compose": ("str", False), "services": ("strs", False), "container": ("str", False)}

VOLUME_SCHEMA = {"docker": ("str", True), "owner": ("str", False), "mode": ("str", False), "fresh": ("bool", False)}

# What a store kind adds to its schema to run its client programs inside a container (postgres; the
# mysql store should add the same and call `bind_container`, then `mdsl.compile.docker.in_container`).
CONTAINER_SCHEMA = {"container": ("str", False)}

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_VOLUME_LABEL = "com.docker.compose.volume"


def is_docker_name(name: str) -> bool:
    """True for a name Docker accepts for a volume or a container."""
    return bool(_DOCKER_NAME.fullmatch(name))


def owner_error(owner: Optional[str]) -> Optional[str]:
    """Why `owner` cannot be handed to chown (None when it can): `user[:group]` or numeric `uid:gid`."""
    if owner is None or _OWNER.fullmatch(owner):
        return None
    return f"`owner` must be `user`, `user:group` or numeric `uid:gid`, not {owner!r}"


def bind_volume(b: Binding, derived: Tuple[Derived, ...]) -> Volume:
    """A `volume` declaration: its Docker name checked; it has no path (Docker tells the mountpoint)."""
    at = b.attrs
    name = at.get("docker", "")
    if name and not is_docker_name(name):
        b.error(f"`docker` of `{b.name}` is not a Docker volume name: {name!r}", "docker",
                help="a volume name is letters, digits and `_.-`, starting with a letter or digit "
                     "(what `docker volume ls` shows)")
    why = owner_error(at.get("owner"))
    if why:
        b.error(why, "owner")
    return Volume(docker=name, owner=at.get("owner"), mode=at.get("mode"), derived=derived, **b.common())


def bind_service(b: Binding) -> Optional[Dict[str, object]]:
    """The Docker fields of a service (compose, compose_services, container), or None when it is not Docker's."""
    at = b.attrs
    compose, container, services = at.get("compose"), at.get("container"), tuple(at.get("services", ()))
    if compose is None and container is None:
        if services:
            b.error(f"`services` of `{b.name}` names services of a Compose project, but it has no `compose`",
                    "services", help='add `compose = "/path/to/docker-compose.yml"`')
        return None
    if compose is not None and container is not None:
        b.error(f"service `{b.name}` is both a Compose project and a container", "container",
                help="keep `compose` (with `services = [...]` for some of it) or `container`")
    others = [k for k in ("systemd", "start", "stop", "status") if k in at]
    if others:
        b.error(f"service `{b.name}` is run by Docker, so it has no `{others[0]}`", others[0],
                help="mdsl stops, starts and checks it through Docker")
    if compose is not None:
        if not compose.startswith("/") or "\0" in compose or "\n" in compose:
            b.error(f"`compose` of `{b.name}` must be the absolute path of the Compose file", "compose")
        compose = posixpath.normpath(compose)
    if container is not None and not is_docker_name(container):
        b.error(f"`container` of `{b.name}` is not a Docker container name: {container!r}", "container")
    for s in services:
        if not _COMPOSE_SERVICE.fullmatch(s):
            b.error(f"`{s}` is not a Compose service name", "services")
    if "services" in at and not services:
        b.error(f"`services` of `{b.name}` is empty", "services", help="leave it out to mean every service")
    return {"compose": compose, "compose_services": services, "container": container}


def bind_container(b: Binding) -> Optional[str]:
    """A database's `container`: its name checked, and what cannot go with it reported."""
    container = b.attrs.get("container")
    if container is None:
        return None
    if not is_docker_name(container):
        b.error(f"`container` of `{b.name}` is not a Docker container name: {container!r}", "container")
    if "run_as" in b.attrs:
        b.error(f"`{b.name}` runs its client programs inside container `{container}`, so `run_as` (a user of the "
                "host) does not apply", "run_as", help="leave `run_as` out: `docker exec` runs them as the "
                "container's user")
    return container


def compose_project_name(compose_file: str) -> str:
    """The project name Compose gives a file when nothing names it: its directory's name, lowercased,
    with everything outside `[-_a-z0-9]` removed (v1 and v2; v2 also trims leading `-` and `_`).

    COMPOSE_PROJECT_NAME (in the environment or the project's `.env`) and v2's top-level `name:`
    override it: only the host can tell those, at preflight.
    """
    base = posixpath.basename(posixpath.dirname(compose_file))
    return re.sub(r"[^-_a-z0-9]", "", base.lower())


def runs_along(svc, services) -> Tuple[str, ...]:
    """The other services a Docker stop or start of `svc` stops or starts too: the declarations of the same
    Compose project on the same host whose services it includes (`docker compose stop` and `up -d` with
    no service names act on every service of the project; with names, on those)."""
    if not getattr(svc, "compose", None):
        return ()
    mine = set(svc.compose_services)
    return tuple(o.name for o in services
                 if o.name != svc.name and getattr(o, "compose", None) == svc.compose and o.host == svc.host
                 and (not mine or (o.compose_services and mine.issuperset(o.compose_services))))
