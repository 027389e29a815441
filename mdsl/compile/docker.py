"""Docker's commands: services run by Compose or as one container, volumes, programs inside containers.

Everything here is shell text built from typed parts, decided when the plan is compiled; what only
the host can tell (which Compose it has, the project's name, a volume's mountpoint) is found by
that text when it runs, so a step's commands, and its fingerprint, do not depend on the host.

- Compose is `docker compose` (v2) where the host has it, else `docker-compose` (v1): `COMPOSE`
  defines a shell function `mdsl_compose` for whichever it is, run from the project's directory
  (where both read `.env`).
- The project's name is what Compose itself will use (`PROJECT_NAME`): v2 says it
  (`config --format json`); for v1 it is COMPOSE_PROJECT_NAME from the environment or `.env`,
  else the directory's name, normalised as v1 does. Preflight asks the same function.
- Whether a project's containers run (and are healthy, where they have a healthcheck) is asked of
  Docker by the labels Compose puts on them, so polling costs no Compose start-up.
- A volume's files are reached at its mountpoint (`docker volume inspect`); a volume the plan fills
  is created when missing, with the labels Compose gives its own volumes (project and key, from the
  plan's Compose projects on that host that declare it), so `docker compose up` adopts it.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import List, Optional, Sequence, Tuple

from mdsl.compile.actions import Poll, Shell
from mdsl.compile.context import SERVICE_TIMEOUT, CompileContext, step_timeout
from mdsl.compile.parts import Arg, Lit, Part, sh
from mdsl.docker import COMPOSE_PROJECT_LABEL, COMPOSE_VOLUME_LABEL
from mdsl.model import Dir, Service, Volume
from mdsl.syntax import ast as A

# Defines `mdsl_compose` (v2 plugin, else v1) and `mdsl_ps_all` (v2's `ps` lists only running containers
# unless `-a`; v1's lists all of them, and its `-a` adds one-off `run` containers).
COMPOSE = (
    "if docker compose version >/dev/null 2>&1; then mdsl_compose() { docker compose \"$@\"; };"
    " elif command -v docker-compose >/dev/null 2>&1; then mdsl_compose() { docker-compose \"$@\"; };"
    " else echo 'mdsl: this host has neither `docker compose` (v2) nor `docker-compose` (v1)' >&2; exit 127; fi;"
)

# Defines `mdsl_project FILE`: prints the project name Compose uses for FILE, run from its directory.
PROJECT_NAME = (
    "mdsl_project() { ( cd -- \"$(dirname -- \"$1\")\" || exit 1;"
    " if docker compose version >/dev/null 2>&1; then"
    " docker compose -f \"$1\" config --format json"
    " | sed -n 's/^  \"name\": \"\\(.*\\)\",\\{0,1\\}$/\\1/p' | head -n 1;"
    " else p=${COMPOSE_PROJECT_NAME:-};"
    " if [ -z \"$p\" ] && [ -f .env ]; then"
    " p=$(sed -n 's/^[[:space:]]*COMPOSE_PROJECT_NAME[[:space:]]*=[[:space:]]*//p' .env"
    " | tail -n 1 | tr -d \"\\\"'\\r\");"
    " fi; [ -n \"$p\" ] || p=$(basename -- \"$PWD\");"
    " printf '%s\\n' \"$p\" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9_\\n-'; fi ); };"
)

# One container's state as `running healthy`, `running ` (no healthcheck), `exited `, ...
_STATE = "--format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}'"
_UP = '"running "|"running healthy"'
_BUSY = "running*|restarting*|paused*|removing*"


def compose_dir(s: Service) -> str:
    """The directory of a service's Compose file (Compose's project directory)."""
    return posixpath.dirname(s.compose) or "/"


def _in_project(s: Service) -> Tuple[Part, ...]:
    return sh("cd --", Arg(compose_dir(s)), "&&", COMPOSE)


def _services(s: Service) -> Tuple[Part, ...]:
    return sh("--", *(Arg(name) for name in s.compose_services)) if s.compose_services else ()


def _project_containers(s: Service, service: Optional[Part]) -> Tuple[Part, ...]:
    """`docker ps -a -q` of the project's containers (of one service), found by Compose's labels."""
    by_service = sh("--filter", Lit('"label=com.docker.compose.service=$mdsl_s"')) if service is not None else ()
    return sh("docker ps -a -q --filter", Lit('"label=' + COMPOSE_PROJECT_LABEL + '=$mdsl_p"'), *by_service,
              "--filter label=com.docker.compose.oneoff=False")


def _project_name(s: Service) -> Tuple[Part, ...]:
    return sh(PROJECT_NAME, "mdsl_p=$(mdsl_project", Arg(s.compose), ") && [ -n \"$mdsl_p\" ] ||",
              "{ echo", Arg(f"mdsl: cannot tell the Compose project name of {s.compose}"), ">&2; exit 2; };")


def _compose_running(s: Service) -> Tuple[Part, ...]:
    """Succeeds when every container of the (listed) services runs, healthy where it has a healthcheck."""
    check_ids = sh('[ -n "$ids" ] || { echo "mdsl: no container of', Lit('${mdsl_s:-the project}'),
                   'yet" >&2; exit 1; };',
                   'for id in $ids; do st=$(docker inspect', _STATE, '-- "$id") || exit 2;',
                   f'case "$st" in {_UP}) ;; *) echo "mdsl: $id is $st" >&2; exit 1;; esac; done')
    if s.compose_services:
        return _project_name(s) + sh("for mdsl_s in", *(Arg(n) for n in s.compose_services), "; do",
                                     "ids=$(", *_project_containers(s, Lit("$mdsl_s")), ") || exit 2;",
                                     *check_ids, "; done")
    return _project_name(s) + sh("mdsl_s=; ids=$(", *_project_containers(s, None), ") || exit 2;", *check_ids)


def _stopped_check(ids: Tuple[Part, ...]) -> Tuple[Part, ...]:
    return sh("for id in", *ids, "; do st=$(docker inspect --format '{{.State.Status}}' -- \"$id\") || exit 2;",
              f'case "$st" in {_BUSY}) echo "mdsl: $id is still $st" >&2; exit 1;; esac; done')


def _compose_stopped(s: Service) -> Tuple[Part, ...]:
    """Succeeds when no container of the (listed) services runs."""
    if s.compose_services:
        return _project_name(s) + sh("for mdsl_s in", *(Arg(n) for n in s.compose_services), "; do",
                                     "ids=$(", *_project_containers(s, Lit("$mdsl_s")), ") || exit 2;",
                                     *_stopped_check((Lit("$ids"),)), "; done")
    return _project_name(s) + sh("ids=$(", *_project_containers(s, None), ") || exit 2;",
                                 *_stopped_check((Lit("$ids"),)))


def _container_running(s: Service) -> Tuple[Part, ...]:
    return sh("st=$(docker inspect", _STATE, "--", Arg(s.container), ") || exit 2;",
              f'case "$st" in {_UP}) ;; *) echo "mdsl: container', Arg(s.container), 'is $st" >&2; exit 1;; esac')


def _container_stopped(s: Service) -> Tuple[Part, ...]:
    return _stopped_check((Arg(s.container),))


def control(ctx: CompileContext, step: A.Step, s: Service, verb: str) -> List:
    """`stop` or `start` a service run by Docker, then wait until Docker says it is stopped, or running and healthy.

    Compose starts with `up -d` (it creates the containers a new host does not have yet), and only the
    listed services with `--no-deps` (what the plan starts is what runs). Stopping keeps each
    container's own grace period (`stop_grace_period`, `--stop-timeout`) before Docker kills it.
    """
    t = step_timeout(step, SERVICE_TIMEOUT)
    running = verb == "start"
    if s.compose:
        if running:
            act = _in_project(s) + sh("mdsl_compose -f", Arg(s.compose), "up -d",
                                      *(("--no-deps",) if s.compose_services else ()), *_services(s))
        else:
            act = _in_project(s) + sh("mdsl_compose -f", Arg(s.compose), "stop", *_services(s))
        check = _compose_running(s) if running else _compose_stopped(s)
        tools = ("docker", "sed", "tr")
    else:
        act = sh("docker", verb, "--", Arg(s.container), ">/dev/null")
        check = _container_running(s) if running else _container_stopped(s)
        tools = ("docker",)
    state = f"{s.name} {'running' if running else 'stopped'}"
    return [Shell(ctx.command(s.host, act, tools=tools), f"{verb} {s.name}", t),
            Poll(ctx.command(s.host, check, tools=tools), state, want_ok=True, timeout=t, interval=1.0)]


# ---------------------------------------------------------------- volumes


def _volume_labels(compose_files: Sequence[str], volume: str) -> Tuple[Part, ...]:
    """Shell that sets `mdsl_labels` to Compose's labels for `volume`, from the first project that declares it."""
    if not compose_files:
        return sh("mdsl_labels=;")
    return sh("mdsl_labels=;", COMPOSE, PROJECT_NAME, "for f in", *(Arg(f) for f in compose_files), "; do",
              '[ -f "$f" ] || continue; p=$(mdsl_project "$f") || continue;',
              'for k in $(cd -- "$(dirname -- "$f")" && mdsl_compose -f "$f" config --volumes 2>/dev/null); do',
              'if [ "${p}_$k" =', Arg(volume), ']; then',
              f'mdsl_labels="--label {COMPOSE_PROJECT_LABEL}=$p --label {COMPOSE_VOLUME_LABEL}=$k"; break 2;',
              "fi; done; done;")


def ensure_volume(v: Volume, compose_files: Sequence[str]) -> Tuple[Part, ...]:
    """Create the volume when it is missing, labelled for the Compose project that declares it; ends in `&&`."""
    name = Arg(v.docker)
    return sh("{ docker volume inspect --", name, ">/dev/null 2>&1 || {", *_volume_labels(compose_files, v.docker),
              "docker volume create $mdsl_labels --", name, ">/dev/null; }; } &&")


def mountpoint(v: Volume, var: str) -> Tuple[Part, ...]:
    """Set `var` to the volume's mountpoint (failing clearly when it cannot be reached); ends in `&&`."""
    why = (f"mdsl: cannot reach the files of docker volume {v.docker}: it does not exist, or its mountpoint "
           "is not readable by this user (Docker's data root is root's: `sudo = true` on the host)")
    return sh("{", f"{var}=$(docker volume inspect --format '{{{{.Mountpoint}}}}' --", Arg(v.docker), ")",
              f'&& [ -d "${var}" ] && [ -x "${var}" ] || {{ echo', Arg(why), ">&2; exit 1; }; } &&")


def compose_files_on(ctx: CompileContext, host: str) -> Tuple[str, ...]:
    """The Compose files of the plan's services on `host`, in declaration order (where a volume's labels come from)."""
    files = [r.compose for r in ctx.bound.resources.values()
             if isinstance(r, Service) and r.host == host and r.compose]
    return tuple(dict.fromkeys(files))


def dir_root(ctx: CompileContext, d: Dir, var: str, create: bool = False) -> Tuple[Tuple[Part, ...], Part]:
    """(shell that finds the dir, the word that names it): a dir's quoted path, or a volume's mountpoint in `var`.

    `create`: the step fills it, so a missing volume is created first (with Compose's labels).
    """
    if not isinstance(d, Volume):
        return (), Arg(d.path)
    pre = ensure_volume(d, compose_files_on(ctx, d.host)) if create else ()
    return pre + mountpoint(d, var), Lit(f'"${var}"')


def remote_rsync_path(ctx: CompileContext, v: Volume, sudo: bool, create: bool) -> str:
    """rsync's `--rsync-path` for a volume at the far end: the remote rsync runs in its mountpoint (path `.`)."""
    pre = ensure_volume(v, compose_files_on(ctx, v.host)) if create else ()
    script = " ".join(p.render() for p in pre + mountpoint(v, "mdsl_dir")) + ' cd "$mdsl_dir" && exec rsync "$@"'
    return ("sudo -n " if sudo else "") + "sh -c " + shlex.quote(script) + " mdsl-rsync"


def remote_in_volume(v: Volume, sudo: bool, program: str) -> str:
    """A remote shell line prefix that runs `program ARGS...` in the volume's mountpoint, ARGS following it."""
    script = " ".join(p.render() for p in mountpoint(v, "mdsl_dir")) + f' cd "$mdsl_dir" && exec {program} "$@"'
    return ("sudo -n " if sudo else "") + "sh -c " + shlex.quote(script) + " mdsl"


def is_volume(d: Dir) -> bool:
    """True for a Docker volume (its files keep numeric owners: tar --numeric-owner, rsync --numeric-ids)."""
    return isinstance(d, Volume)


# ---------------------------------------------------------------- programs inside a container


def in_container(container: str, parts: Tuple[Part, ...], *, stdin: bool = True,
                 env_file: Optional[str] = None) -> Tuple[Part, ...]:
    """`docker exec -i CONTAINER PROGRAM ARGS...`: a store's client program run inside its container.

    `env_file`: an environment variable holding the path of a 0600 file of `NAME=value` lines (a
    password) for `docker exec --env-file`; the variable is expanded by a shell of its own, since the
    command sets it for itself (`VAR=path cmd "$VAR"` would expand it before it is set).
    The mysql store (stores12) should call this the same way for `container = "..."`.
    """
    head = sh("docker exec", *(("-i",) if stdin else ()))
    if env_file:
        return sh("sh -c", Arg(f'exec docker exec {"-i " if stdin else ""}--env-file "${env_file}" "$@"'),
                  "mdsl-exec", Arg(container)) + tuple(parts)
    return head + (Arg(container),) + tuple(parts)
