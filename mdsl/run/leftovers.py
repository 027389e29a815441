"""What an interrupted `mdsl apply` left on its hosts: commands still running, 0600 temp files.

A SIGKILLed apply (or one whose connection dropped) leaves the command it was
running alive on its host: sshd's session, or the local backend's own session,
outlives mdsl. A re-run would start the same step again alongside it (two
`pg_dump`s writing one `.part`, an orphaned dump renaming its file while the
re-run writes it). It also leaves the 0600 PGPASSFILE of that command in the
host's TMPDIR.

Apply journals each step command's process group as soon as it is known, with
the backend's per-run token (mdsl.run.backend.run_marker), and each temp file's
path. Before the first step of the next run (after connect and preflight),
`stop_leftovers` runs one script per host that:

- for each recorded group, reads its leader's /proc/PID/cmdline and goes on
  only if the recorded run's marker is in it (a pid the host reused for
  another process never matches, nor a process of another run);
- when the leader is gone (the command's shell ended, what it started goes
  on), goes on with the processes still in that group whose environment
  carries the run's token (`MDSL_RUN`, set by the wrapper and inherited);
  the kernel does not hand out a pid that is still some group's id, so such
  a group is the one the command made;
- sends TERM to those process groups, waits up to 5 s for their leaders (or
  the members found) to end, then sends KILL to the groups;
- prints which pids it found, one line each.

and removes the temp files with `rm -f` as the user that created them (only
paths named like mktemp's `.../mdsl-secret.XXXXXXXX`, each one quoted word).
`--dry-run` reports what would be stopped and changes nothing.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from mdsl.model import Host
from mdsl.compile.parts import Arg, Command, sh
from mdsl.run import journal as J
from mdsl.run import log
from mdsl.run.backend import RUN_ENV, run_marker
from mdsl.run.command_json import from_json as command_from_json
from mdsl.run.console import Console
from mdsl.run.errors import Refused
from mdsl.run.executor import Executor
from mdsl.run.log import redact_text
from mdsl.run.routes import remove_dir, remove_key

SECRET_PATH_RE = re.compile(r"/(?:[^\n\0]*/)?mdsl-secret\.[A-Za-z0-9]{8}")
GRACE_TICKS = 25  # times 0.2 s between TERM and KILL

# $1...: "PID:TOKEN" words. Prints "found PID" for each recorded group it goes on to stop.
_STOP = r"""members() {
  g=$1 t=$2 out=
  for d in /proc/[0-9]*; do
    read -r s 2>/dev/null < "$d/stat" || continue
    s=${s##*") "}
    set -- $s
    [ "$3" = "$g" ] || continue
    case "$(tr '\0' '\n' < "$d/environ" 2>/dev/null)" in
      *"ENV=$t"*) out="$out ${d#/proc/}" ;;
    esac
  done
  echo $out
}
found= watch=
for e in "$@"; do
  p=${e%%:*}; t=${e#*:}
  case "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" in
    *"MARK$t"*) found="$found $p"; watch="$watch $p"; echo "found $p"; continue ;;
  esac
  s=$(cat /proc/$p/stat 2>/dev/null); s=${s##*") "}
  case "$s" in ""|Z*|X*) ;; *) continue ;; esac
  m=$(members $p $t)
  [ -n "$m" ] || continue
  found="$found $p"; watch="$watch $m"; echo "found $p"
done
[ -n "$found" ] || exit 0
STOP || exit 0
for p in $found; do kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; done
i=0
while [ $i -lt TICKS ]; do
  left=
  for p in $watch; do
    s=$(cat /proc/$p/stat 2>/dev/null); s=${s##*") "}
    case "$s" in ""|Z*|X*) ;; *) left="$left $p" ;; esac
  done
  [ -n "$left" ] || break
  sleep 0.2 2>/dev/null || sleep 1
  i=$((i + 1))
done
for p in $found; do kill -KILL -$p 2>/dev/null; done
exit 0"""


def stop_command(host: str, records: Iterable[J.RunningCommand], *, dry_run: bool,
                 sudo: bool = False, sudo_password=None) -> Command:
    """The script that finds (and unless `dry_run` stops) the recorded process groups on one host."""
    words = []
    for r in records:
        for pid in r.pids:
            words.append(Arg(f"{int(pid)}:{r.token}"))
    script = (_STOP.replace("MARK", run_marker("")).replace("ENV", RUN_ENV)
              .replace("STOP", "false" if dry_run else "true")
              .replace("TICKS", str(GRACE_TICKS)))
    return Command(host, sh("sh -c", Arg(script), "mdsl-stop", *words), sudo=sudo,
                   sudo_password=sudo_password if sudo else None, tools=("tr", "cat", "kill"))


def parse_found(stdout: str) -> Set[int]:
    """The pids the stop script found running with their run's marker."""
    return {int(m.group(1)) for m in re.finditer(r"^found ([0-9]+)$", stdout, re.M)}


def remove_commands(host: str, files: Iterable[J.SecretFileRecord],
                    sudo_password=None) -> List[Tuple[Command, List[str]]]:
    """`rm -f -- PATH...` per owning user, for the temp files whose path has mktemp's shape."""
    groups: Dict[Tuple, List[str]] = {}
    for f in files:
        if SECRET_PATH_RE.fullmatch(f.path):
            groups.setdefault((f.user, f.sudo), []).append(f.path)
    out = []
    for (user, sudo), paths in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        cmd = Command(host, sh("rm -f --", *[Arg(p) for p in paths]), run_as=user, sudo=sudo,
                      sudo_password=sudo_password if (user or sudo) else None)
        out.append((cmd, paths))
    return out


def stop_leftovers(state: J.JournalState, executor: Executor, hosts: Mapping[str, Host], console: Console,
                   journal: Optional[J.Journal], *, dry_run: bool = False,
                   replicating: Iterable[str] = ()) -> None:
    """Stop what the journal says earlier runs may have left running, remove their temp files.

    `journal` records what was checked and removed (None with `dry_run`, which changes nothing).
    Raises Refused when a host cannot be checked: running a step again beside its orphan is what
    this prevents. A replication's objects (slot, subscription, MariaDB connection) are removed when the
    plan has no live pass of that name any more (`replicating`): one it has finishes or redoes them itself.
    """
    running: Dict[str, List[J.RunningCommand]] = {}
    for r in state.running:
        running.setdefault(r.host, []).append(r)
    files: Dict[str, List[J.SecretFileRecord]] = {}
    for f in state.secret_files.values():
        files.setdefault(f.host, []).append(f)
    for host in sorted(set(running) | set(files) | {r.host for r in state.routes.values()}):
        if host not in executor.backends or host not in hosts:
            console.warn(f"warning: the journal lists commands or temp files an interrupted run may have left on "
                         f"host {host}, which this run does not reach (not in the plan any more?); check that host "
                         f"by hand (`mdsl-secret.*` files in its TMPDIR)")
            continue
        if running.get(host):
            _stop_commands(hosts[host], running[host], executor, console, journal, dry_run)
        for cmd, paths in remove_commands(host, files.get(host, []), hosts[host].sudo_password):
            _remove_files(host, cmd, paths, executor, console, journal, dry_run)
        _remove_routes(hosts[host], [r for r in state.routes.values() if r.host == host], executor, console,
                       journal, dry_run)
    keep = set(replicating)
    for rec in state.replications.values():
        if rec.name not in keep:
            _remove_replication(rec, executor, hosts, console, journal, dry_run)


def _remove_replication(rec: J.ReplicationLeftover, executor: Executor, hosts: Mapping[str, Host],
                        console: Console, journal: Optional[J.Journal], dry_run: bool) -> None:
    """What a `replicate ... live` the plan no longer has left on its servers, by the commands journaled."""
    missing = [h for h in rec.hosts if h not in executor.backends or h not in hosts]
    if missing:
        console.warn(f"warning: the journal lists replication {rec.name} (an earlier `replicate ... live` the plan "
                     f"no longer has), on host(s) {', '.join(missing)} this run does not reach; remove it by hand "
                     "(PostgreSQL: its subscription, slot and publication; MariaDB: STOP SLAVE / RESET SLAVE ALL "
                     "for that connection name)")
        return
    if dry_run:
        console.say(f"would remove replication {rec.name}, left by an earlier `replicate ... live` the plan no "
                    "longer has")
        return
    for raw in rec.cleanup:
        try:
            cmd = command_from_json(raw)
        except (KeyError, TypeError, ValueError, IndexError):
            console.warn(f"warning: the journal's clean-up of replication {rec.name} is unreadable; remove it by hand")
            return
        try:
            res = executor.run(cmd, timeout=600)
        except KeyError as exc:  # a password's env var / file is missing on this machine
            console.warn(f"warning: cannot remove replication {rec.name} on host {cmd.host}: {exc.args[0]}; "
                         "the next apply tries again")
            return
        if not res.ok:
            console.warn(f"warning: cannot remove replication {rec.name} on host {cmd.host}: "
                         f"{redact_text(res.stderr.strip()[-300:])}; the next apply tries again")
            return
    if journal is not None:
        journal.replication_removed(rec.name)
    console.say(f"removed replication {rec.name}, left by an earlier `replicate ... live` the plan no longer has")
    log.get_logger().info("leftover.replication_removed", name=rec.name, hosts=list(rec.hosts))


def _remove_routes(h: Host, recs: List[J.RouteLeftover], executor: Executor, console: Console,
                   journal: Optional[J.Journal], dry_run: bool) -> None:
    """The route keys and dirs (mdsl.run.routes) a killed run left: authorized_keys lines, key dirs."""
    host = h.name
    if not recs:
        return
    if dry_run:
        console.say(f"would remove {len(recs)} copy route key(s) or dir(s) the interrupted run left on host {host}")
        return
    removed = 0
    for r in recs:
        ok = remove_key(executor, host, r.value) if r.kind == "key" else remove_dir(executor, h, r.value)
        if ok:
            removed += 1
            if journal is not None:
                journal.route_removed(host, r.kind, r.value)
        else:
            console.warn(f"warning: cannot remove the copy route's {'authorized_keys line ' if r.kind == 'key' else ''}"
                         f"{r.value} the interrupted run left on host {host}; remove it by hand")
    if removed:
        console.say(f"removed {removed} copy route key(s) or dir(s) the interrupted run left on host {host}")
        log.get_logger().info("leftover.route_removed", host=host, removed=removed)


def _stop_commands(h: Host, recs: List[J.RunningCommand], executor: Executor, console: Console,
                   journal: Optional[J.Journal], dry_run: bool) -> None:
    cmd = stop_command(h.name, recs, dry_run=dry_run, sudo=h.sudo, sudo_password=h.sudo_password)
    res = executor.run(cmd, timeout=60)
    if not res.ok:
        raise Refused(f"cannot check host {h.name} for commands the interrupted run left running "
                      f"(exit {res.exit}): {redact_text(res.stderr.strip()[-300:])}")
    found = parse_found(res.stdout)
    for r in recs:
        if found & set(r.pids):
            verb = "would stop" if dry_run else "stopped"
            console.say(f"{verb} `{r.command}` (pid {r.pid} on host {h.name}), left running by the interrupted run")
            log.get_logger().info("leftover.stopped" if not dry_run else "leftover.found", host=h.name,
                                  pid=r.pid, step=r.step, command=r.command)
    if journal is not None and not dry_run:
        journal.commands_checked(h.name, recs, found)


def _remove_files(host: str, cmd: Command, paths: List[str], executor: Executor, console: Console,
                  journal: Optional[J.Journal], dry_run: bool) -> None:
    if dry_run:
        console.say(f"would remove {len(paths)} private temp file(s) the interrupted run left on host {host}")
        return
    res = executor.run(cmd, timeout=60)
    if not res.ok:
        console.warn(f"warning: cannot remove the private temp files the interrupted run left on host "
                     f"{host}: {redact_text(res.stderr.strip()[-300:])}")
        return
    if journal is not None:
        for p in paths:
            journal.secret_file_removed(host, p)
    console.say(f"removed {len(paths)} private temp file(s) the interrupted run left on host {host}")
    log.get_logger().info("leftover.removed", host=host, files=len(paths))
