"""Docker in preflight: what the plan needs of Docker on each host (derived without I/O, in plan order),
and the read-only questions asked there.

- P409: Docker answers the login user (or through sudo, on a `sudo = true` host).
- P402: a host with Compose services has `docker compose` (v2) or `docker-compose` (v1).
- P405: the containers and Compose projects (and their listed services) the plan stops or starts
  exist, and a project the plan finds running has containers under the name Compose gives it; the
  images a project the plan starts needs are on the host (a missing one would be pulled in the
  middle of the downtime: a warning).
- P406: a database inside a container is reached through it: the container runs, or a step before
  the database's first use starts a Docker service on that host (a container the plan creates).
- P408: a volume the plan reads exists (its mountpoint readable).
- P410: the Compose project-name hazard: the project on a host will use other volume names than the
  ones the plan fills there (another directory name, `name:`, COMPOSE_PROJECT_NAME), so it would
  start on new, empty volumes. Compose's own answer is asked, through the same shell functions the
  steps use (`mdsl.compile.docker`).
- P414: a database inside a container is used after a stop of the Compose service that runs its
  container (Docker's labels name the project and service; the plan's stops are replayed in order).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from attrs import define, field

from mdsl.check.rules.base import Rule
from mdsl.check.rules.p_preflight import P402, P405, P408, P409, P410, P414
from mdsl.compile.docker import COMPOSE, PROJECT_NAME, compose_dir
from mdsl.docker import COMPOSE_PROJECT_LABEL
from mdsl.compile.parts import Arg, Lit, sh
from mdsl.findings import Finding, Severity
from mdsl.model import Service, Volume
from mdsl.syntax import ast as A


@define
class DockerNeeds:
    """What the plan asks of Docker, host by host."""

    hosts: Dict[str, A.Step] = field(factory=dict)  # host -> the first step that needs Docker there
    services: Dict[str, Tuple[Service, A.Step]] = field(factory=dict)  # docker services stopped or started
    started: Dict[str, Tuple[Service, A.Step]] = field(factory=dict)  # ...of which the plan starts these
    first_start: Dict[str, int] = field(factory=dict)  # host -> order of the first step starting a docker service
    databases: Dict[str, int] = field(factory=dict)  # container database -> order of its first use
    filled: Dict[str, A.Step] = field(factory=dict)  # volume -> the first step filling it
    read: Dict[str, A.Step] = field(factory=dict)  # volume -> a step reading it before any step fills it
    # (order, "stop" | "start", service) of every stop and start of a Compose service, in plan order
    compose_events: List[Tuple[int, str, Service]] = field(factory=list)
    # (order, database, step) of every dump, restore and drop of a database inside a container
    database_uses: List[Tuple[int, object, A.Step]] = field(factory=list)

    def step(self, order: int, step: A.Step, resources) -> None:
        """Note what one step (in plan order) needs of Docker."""
        if isinstance(step, (A.Stop, A.Start, A.Restart)):
            for ident in step.services:
                svc = resources.get(ident.name)
                if isinstance(svc, Service) and (svc.compose or svc.container):
                    self.hosts.setdefault(svc.host, step)
                    self.services.setdefault(svc.name, (svc, step))
                    if not isinstance(step, A.Stop):
                        self.started.setdefault(svc.name, (svc, step))
                        self.first_start.setdefault(svc.host, order)
                    if svc.compose:
                        self.compose_events.append((order, "stop" if isinstance(step, A.Stop) else "start", svc))
        if isinstance(step, (A.Dump, A.Restore, A.Drop)):
            db = resources.get(step.db.name)
            if getattr(db, "container", None):
                self.hosts.setdefault(db.host, step)
                self.databases.setdefault(db.name, order)
                self.database_uses.append((order, db, step))
        reads = {A.Archive: lambda s: s.dir, A.Sync: lambda s: s.source}.get(type(step))
        fills = {A.Extract: lambda s: s.dir, A.Sync: lambda s: s.dest}.get(type(step))
        for which, into in ((reads, self.read), (fills, self.filled)):
            v = resources.get(which(step).name) if which else None
            if isinstance(v, Volume):
                self.hosts.setdefault(v.host, step)
                if into is self.filled or v.name not in self.filled:
                    into.setdefault(v.name, step)

    def started_before(self, host: str, order: int) -> bool:
        """True when a step before `order` starts a Docker service on `host` (it may create a container)."""
        first = self.first_start.get(host)
        return first is not None and first < order


def docker_hosts(bound, leaves) -> List[str]:
    """The hosts where these compiled steps need Docker, the far end of a `sync` into a volume included
    (its commands run from the other host, but its Docker is asked at preflight all the same: P409, P410)."""
    needs = DockerNeeds()
    for order, leaf in enumerate(leaves):
        needs.step(order, leaf.step, bound.resources)
    return list(needs.hosts)


def _finding(rule: Rule, message: str, span: A.Span, help: Optional[str], notes=(), label: str = "",
             severity: Optional[Severity] = None) -> Finding:
    return rule.finding(message, span, label=label, notes=notes, help=help, severity=severity)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class DockerChecks:
    """The Docker questions asked of one host (`checks` is preflight's HostChecks for it)."""

    def __init__(self, checks, needs: DockerNeeds) -> None:
        self.checks, self.needs, self.host = checks, needs, checks.name
        self.findings: List[Finding] = checks.facts.findings
        self.compose_flavour: Optional[str] = None  # "v2" | "v1" | None (neither)

    def run(self, parts):
        return self.checks.run(self.checks.cmd(parts))

    def go(self) -> None:
        """Every Docker check of this host, when the plan uses Docker there."""
        first = self.needs.hosts.get(self.host)
        if first is None:
            return
        r = self.run(sh("docker version --format '{{.Server.Version}}'"))
        if not r.ok:
            err = _first_line(r.stderr) or f"exit {r.exit}"
            how = "through sudo" if self.checks.host.sudo else "as the login user"
            self.findings.append(_finding(
                P409, f"Docker does not answer on `{self.host}` ({how}): {err}", first.span,
                "add the login user to the `docker` group, or declare `sudo = true` on the host; "
                "is dockerd running there (DOCKER_HOST)?", label="needs Docker"))
            return
        mine = [(s, step) for s, step in self.needs.services.values() if s.host == self.host]
        if any(s.compose for s, _ in mine):
            self.compose()
        for svc, step in mine:
            (self.project if svc.compose else self.container)(svc, step)
        for name, step in self.needs.read.items():
            v = self.checks.ctx.bound.resources[name]
            if v.host == self.host:
                self.volume_source(v, step)
        self.project_names()
        self.database_containers()

    # -- P402: which Compose

    def compose(self) -> None:
        r = self.run(sh("if docker compose version >/dev/null 2>&1; then echo v2;",
                        "elif command -v docker-compose >/dev/null 2>&1; then echo v1; fi"))
        self.compose_flavour = r.stdout.strip() or None
        if self.compose_flavour is None:
            step = next(step for s, step in self.needs.services.values() if s.host == self.host and s.compose)
            self.findings.append(_finding(
                P402, f"`{self.host}` has neither `docker compose` (v2) nor `docker-compose` (v1)", step.span,
                "install one (Debian/Ubuntu: `apt install docker-compose-plugin` from Docker's repository, or "
                "`apt install docker-compose` for v1)", label="needs Compose"))

    # -- P405: projects, services, images; containers

    def project(self, svc: Service, step: A.Step) -> None:
        if self.compose_flavour is None:
            return
        f = Arg(svc.compose)
        r = self.run(sh("cd --", Arg(compose_dir(svc)), "&&", COMPOSE, "mdsl_compose -f", f, "config --services"))
        if not r.ok:
            self.findings.append(_finding(
                P405, f"the Compose project `{svc.compose}` of service `{svc.name}` cannot be read on "
                f"`{self.host}`: {_first_line(r.stderr) or f'exit {r.exit}'}", svc.span,
                "fix `compose` (the path of the project's compose file on that host), or the file itself",
                label="no such project"))
            return
        declared = r.stdout.split()
        missing = [s for s in svc.compose_services if s not in declared]
        if missing:
            self.findings.append(_finding(
                P405, f"the Compose project `{svc.compose}` on `{self.host}` has no service "
                + ", ".join(f"`{m}`" for m in missing), svc.span, "its services: " + ", ".join(declared),
                label="unknown service"))
        if svc.name in self.needs.started:
            self.images(svc, step, [s for s in (svc.compose_services or declared) if s in declared])
        if svc.initially_running and not missing:
            self.deployed(svc)

    def deployed(self, svc: Service) -> None:
        """A project the plan finds running has containers on this host under the name Compose gives it
        from this file: else the plan names another deployment (another directory, `name:`,
        COMPOSE_PROJECT_NAME), and stopping it would stop nothing while the real app writes on."""
        names = svc.compose_services
        r = self.run(sh("cd --", Arg(compose_dir(svc)), "&&", PROJECT_NAME, "p=$(mdsl_project", Arg(svc.compose),
                        ") && printf '%s\\n' \"$p\" && docker ps -a --filter", Lit('"label=' + COMPOSE_PROJECT_LABEL
                        + '=$p"'), "--filter label=com.docker.compose.oneoff=False",
                        "--format '{{.Label \"com.docker.compose.service\"}}'"))
        if not r.ok:
            return
        project, *found = r.stdout.split()
        lacking = [n for n in names if n not in found] if names else ([] if found else ["any service"])
        if not lacking:
            return
        what = "no container" if not found else "no container of " + ", ".join(f"`{n}`" for n in lacking)
        self.findings.append(_finding(
            P405, f"the Compose project `{project}` of `{svc.compose}` has {what} on `{self.host}`, but the plan "
            f"finds `{svc.name}` running there", svc.span,
            "check that the app is deployed from this file (`docker compose ls` / `docker ps` show the project "
            "names); or declare `initially = stopped` if it is not running",
            [f"Compose names the project `{project}` from COMPOSE_PROJECT_NAME, `name:` or the file's directory"],
            label="not deployed from here"))

    def images(self, svc: Service, step: A.Step, services: List[str]) -> None:
        # `config` prints the resolved file (both versions); each service's `image:` is what `up` runs.
        r = self.run(sh("cd --", Arg(compose_dir(svc)), "&&", COMPOSE, "mdsl_compose -f", Arg(svc.compose), "config"))
        if not r.ok:
            return
        wanted = []
        current = None
        for line in r.stdout.splitlines():
            if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
                current = line.strip()[:-1]
            elif current in services and line.strip().startswith("image:"):
                wanted.append(line.split(":", 1)[1].strip().strip("'\""))
        for image in dict.fromkeys(wanted):
            if not self.run(sh("docker image inspect --", Arg(image), ">/dev/null 2>&1")).ok:
                self.findings.append(_finding(
                    P405, f"image `{image}` of `{svc.compose}` is not on `{self.host}`: `start {svc.name}` "
                    "would pull it during the downtime (or fail, if no registry answers)", step.span,
                    f"pull it before the move (`docker compose pull` in {compose_dir(svc)})",
                    label="image missing", severity=Severity.WARNING))

    def container(self, svc: Service, step: A.Step) -> None:
        r = self.run(sh("docker inspect --format '{{.State.Status}}' --", Arg(svc.container)))
        if not r.ok:
            self.findings.append(_finding(
                P405, f"container `{svc.container}` of service `{svc.name}` does not exist on `{self.host}`",
                svc.span, "fix `container` (`docker ps -a --format '{{.Names}}'` lists them), or create it "
                "first (`docker create` / `docker compose create`)", label="no such container"))

    # -- P406 (for the store's probe): a database inside a container

    def database_reachable(self, db) -> Optional[str]:
        """None when the database's container runs (log in as usual); else why it cannot be reached now.

        "" when it does not run yet but an earlier step starts a Docker service on its host.
        """
        r = self.run(sh("docker inspect --format '{{.State.Running}}' --", Arg(db.container)))
        if r.ok and r.stdout.strip() == "true":
            return None
        if self.needs.started_before(db.host, self.needs.databases.get(db.name, 0)):
            return ""
        state = "is not running" if r.ok else "does not exist"
        return (f"container `{db.container}` {state} on `{db.host}`, and no step before the database's first use "
                "starts it")

    # -- P408: a volume the plan reads

    def volume_source(self, v: Volume, step: A.Step) -> None:
        r = self.run(sh("p=$(docker volume inspect --format '{{.Mountpoint}}' --", Arg(v.docker),
                        ") || { echo missing; exit 0; };",
                        "if [ ! -r \"$p\" ] || [ ! -x \"$p\" ]; then echo unreadable;",
                        "elif [ -z \"$(ls -A -- \"$p\" | head -c 1)\" ]; then echo empty; fi"))
        verdict = r.stdout.strip()
        if verdict == "missing":
            self.findings.append(_finding(
                P408, f"docker volume `{v.docker}` ({v.name}) does not exist on `{self.host}`", step.span,
                "fix `docker` of the volume (`docker volume ls` lists them)", ["nothing was stopped or changed"],
                label="missing"))
        elif verdict == "unreadable":
            self.findings.append(_finding(
                P408, f"the files of docker volume `{v.docker}` ({v.name}) on `{self.host}` cannot be read by the "
                "login user", step.span, "declare `sudo = true` on the host (Docker's data root is root's)",
                label="unreadable"))
        elif verdict == "empty":
            self.findings.append(_finding(
                P408, f"docker volume `{v.docker}` ({v.name}) on `{self.host}` is empty, but the plan copies it "
                "as data", step.span, "check that this is the volume the app uses (`docker inspect` its container)",
                label="empty", severity=Severity.WARNING))

    # -- P414: a database's container stopped by a Compose service before the database is used

    def database_containers(self) -> None:
        """Each use of a database inside a container, against the plan's stops of the Compose service that
        runs that container (Docker's labels say which), the last one before the use winning."""
        uses = [(order, db, step) for order, db, step in self.needs.database_uses if db.host == self.host]
        events = [e for e in self.needs.compose_events if e[2].host == self.host]
        if not uses or not events or self.compose_flavour is None:
            return
        projects: Dict[str, str] = {}
        labels: Dict[str, Tuple[str, str]] = {}
        reported = set()
        for order, db, step in uses:
            if db.container not in labels:
                r = self.run(sh("docker inspect --format", Arg('{{index .Config.Labels "' + COMPOSE_PROJECT_LABEL
                                                               + '"}} {{index .Config.Labels "com.docker.compose'
                                                               '.service"}}'), "--", Arg(db.container)))
                words = r.stdout.split() if r.ok else []
                labels[db.container] = (words[0], words[1]) if len(words) == 2 else ("", "")
            project, service = labels[db.container]
            if not project or db.name in reported:
                continue
            last = None
            for e_order, verb, svc in events:
                if e_order >= order or (svc.compose_services and service not in svc.compose_services):
                    continue
                if svc.compose not in projects:
                    projects[svc.compose] = self._project_volumes(svc)[0]
                if projects[svc.compose] == project:
                    last = (verb, svc)
            if last is not None and last[0] == "stop":
                reported.add(db.name)
                self.findings.append(_finding(
                    P414, f"`{step.keyword}` runs {db.name}'s programs inside container `{db.container}`, the "
                    f"Compose service `{service}` of project `{project}`, which `stop {last[1].name}` stops before it "
                    f"on `{self.host}`: `docker exec` would fail in the middle of the move", step.span,
                    f"stop only the app's services there (`services = [...]` without `{service}`), and stop "
                    f"`{service}` after the {step.keyword}", ["nothing was stopped or changed"],
                    label="container stopped by then"))

    # -- P410: the project-name hazard

    def project_names(self) -> None:
        """Each volume the plan fills here, against the names the Compose projects declaring it will use."""
        if self.compose_flavour is None:
            return
        bound = self.checks.ctx.bound
        projects: Dict[str, Tuple[str, List[str]]] = {}  # compose file -> (project name, volume keys)
        for name, step in self.needs.filled.items():
            v = bound.resources[name]
            if v.host != self.host:
                continue
            users = [s for s in bound.resources.values() if isinstance(s, Service) and s.compose
                     and s.host == self.host and v.name in s.writes + s.reads]
            for svc in users:
                if svc.compose not in projects:
                    projects[svc.compose] = self._project_volumes(svc)
                project, keys = projects[svc.compose]
                if not project:
                    continue
                names = {f"{project}_{k}": k for k in keys}
                if v.docker in names:
                    continue
                key = next((k for k in sorted(keys, key=len, reverse=True) if v.docker.endswith("_" + k)), None)
                uses = f"`{project}_{key}`" if key else "none of that name (its volumes: " + (
                    ", ".join(f"`{n}`" for n in sorted(names)) or "none") + ")"
                self.findings.append(_finding(
                    P410, f"the plan fills volume `{v.docker}` on `{self.host}`, but the Compose project "
                    f"`{svc.compose}` there will use {uses}: `start {svc.name}` would run on new, empty volumes",
                    step.span, "deploy the project from a directory named like the old one, or set "
                    f"`name: {v.docker[:-len(key) - 1] if key else '...'}` (v2) or COMPOSE_PROJECT_NAME in its `.env`; "
                    f"or name the volume `{project}_{key}` in the plan" if key else "declare the volume in the "
                    "project, or fix `docker` of the volume",
                    [f"Compose names this project `{project}` (from COMPOSE_PROJECT_NAME, `name:`, or its directory)",
                     "nothing was stopped or changed"], label="not the project's volume"))

    def _project_volumes(self, svc: Service) -> Tuple[str, List[str]]:
        r = self.run(sh("cd --", Arg(compose_dir(svc)), "&&", COMPOSE, PROJECT_NAME, "mdsl_project", Arg(svc.compose),
                        "&& echo --- && mdsl_compose -f", Arg(svc.compose), "config --volumes"))
        if not r.ok or "---" not in r.stdout:
            return "", []
        head, _, tail = r.stdout.partition("---")
        return head.strip(), tail.split()
