"""`mdsl init --from ssh://USER@HOST[:PORT] --to ssh://USER@HOST[:PORT]`: connect to both hosts
(host keys checked as apply does), find the installed app on the source, write its plan, and
prove it with `mdsl check` before handing it over. Changes nothing on either host.
"""

from __future__ import annotations

import os
import re
import sys
from typing import List, Optional, Tuple

from mdsl.check import check_plan
from mdsl.findings import PlanError, Severity
from mdsl.init.discover import DiscoveryError, HostFacts, all_fingerprints, host_facts, installed, read_app
from mdsl.init.writer import PRESYNC_ABOVE, Endpoint, write_plan
from mdsl.model import Host
from mdsl.run.backend import BackendError

EXIT_OK, EXIT_NOTHING, EXIT_UNUSABLE = 0, 1, 2
_URL = re.compile(r"ssh://(?:(?P<user>[^@/\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^:/@\s\[\]]+)(?::(?P<port>\d+))?/?")


class UsageError(Exception):
    """An argument that cannot be used."""


def parse_url(text: str, identity: Optional[str], known_hosts: Optional[str]) -> Endpoint:
    """`ssh://USER@HOST[:PORT]` as an Endpoint; UsageError saying what is wrong."""
    m = _URL.fullmatch(text.strip())
    if not m:
        raise UsageError(f"`{text}` is not ssh://USER@HOST[:PORT]")
    port = int(m.group("port") or 22)
    if not 0 < port < 65536:
        raise UsageError(f"`{text}`: port {port} is out of range")
    return Endpoint(m.group("user"), m.group("host").strip("[]"), port,
                    os.path.abspath(os.path.expanduser(identity)) if identity else None,
                    os.path.abspath(os.path.expanduser(known_hosts)) if known_hosts else None)


def _backend(name: str, e: Endpoint):
    from mdsl.run.ssh import SshBackend

    backend = SshBackend(Host(name, user=e.user, address=e.address, port=e.port, identity=e.identity,
                              known_hosts=e.known_hosts), command_timeout=120)
    backend.connect()
    return backend


def _saw(facts: HostFacts) -> str:
    lines = [f"on {facts.name} ({facts.os}) mdsl found no app it knows ({', '.join(_apps())}). It saw:"]
    lines.append("  units in /etc/systemd/system: " + (", ".join(facts.own_units) or "none"))
    lines.append("  containers: " + (", ".join(facts.containers) or ("none" if facts.docker else "no docker")))
    lines.append("  listening TCP: " + (", ".join(facts.listening) or "nothing (or `ss` is missing)"))
    return "\n".join(lines)


def _apps() -> List[str]:
    from mdsl.apps import profile

    return profile.names()


def _checked(text: str, file: str) -> List[str]:
    """The problems `mdsl check` has with the written plan (errors and warnings), as text."""
    from mdsl import render
    from mdsl.syntax.parser import parse_text

    try:
        findings = check_plan(parse_text(text, file)).findings
    except PlanError as exc:
        findings = exc.findings
    bad = [f for f in findings if f.severity >= Severity.WARNING]
    if not bad:
        return []
    sources = render.Sources()
    sources.add(file, text.encode())
    return [render.render(bad, "text", sources, color=False, version="0")]


def _outputs(out: Optional[str], apps: List[str]) -> List[Optional[str]]:
    if out is None or len(apps) == 1:
        return [out] * len(apps)
    stem, ext = os.path.splitext(out)
    return [f"{stem}-{a}{ext or '.plan'}" for a in apps]


def init_command(args) -> int:
    """Run `mdsl init`; returns the exit status."""
    try:
        source = parse_url(args.source, args.identity, args.known_hosts)
        target = parse_url(args.target, args.identity, args.known_hosts)
        presync = _size(args.presync_above) if args.presync_above else PRESYNC_ABOVE
    except UsageError as exc:
        print(f"mdsl init: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    backends = []
    try:
        src = _backend("old", source)
        backends.append(src)
        dst = _backend("new", target)
        backends.append(dst)
        fps = all_fingerprints()
        sfacts, tfacts = host_facts(src, fps), host_facts(dst, fps)
        found = installed(sfacts)
        if args.app:
            found = [(p, lay) for p, lay in found if p.name == args.app]
        if not found:
            print(_saw(sfacts) if not args.app else f"{args.app} is not installed on old ({source.login})",
                  file=sys.stderr)
            return EXIT_NOTHING
        if len(found) > 1 and args.output is None:
            print("mdsl init: old runs " + ", ".join(p.name for p, _ in found) + ": write one plan per app with "
                  "`-o PLAN` (PLAN-APP.plan each), or pick one with `--app NAME`", file=sys.stderr)
            return EXIT_UNUSABLE
        texts: List[Tuple[str, str]] = []
        for p, layout in found:
            app = read_app(src, dst, p, layout, sfacts, tfacts)
            if not app.units:
                raise DiscoveryError(f"old: found {p.title} ({layout.title}) but none of its units "
                                     f"({', '.join(layout.units + (p.discover.units if p.discover else ())) or '-'}) "
                                     "has a unit file; which service runs it?")
            texts.append((p.name, write_plan(app, source, target, sfacts, tfacts, presync_above=presync)))
    except (BackendError, DiscoveryError) as exc:
        print(f"mdsl init: {exc}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        if hint:
            print(f"  help: {hint}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        for backend in backends:
            backend.close()
    status = EXIT_OK
    for (name, text), path in zip(texts, _outputs(args.output, [n for n, _ in texts]), strict=True):
        problems = _checked(text, path or f"<{name}.plan>")
        if problems:
            print(f"mdsl init: the plan written for {name} does not check clean (a bug in mdsl init):\n"
                  + "".join(problems), file=sys.stderr)
            status = EXIT_UNUSABLE
        if path is None:
            sys.stdout.write(text)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {path}: {name}; next: `mdsl check {path}`, then `mdsl apply {path}`", file=sys.stderr)
    return status


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMGT]i?B?|B)?", text.strip(), re.I)
    if not m:
        raise UsageError(f"--presync-above `{text}` is not a size (e.g. 500M, 2G)")
    unit = (m.group(2) or "B")[0].upper()
    return int(m.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
