"""Services: systemd units (`systemctl`), the operator's start/stop/status commands, or Docker
(a Compose project or one container: mdsl/docker/commands.py)."""

from __future__ import annotations

from typing import List

from mdsl.model import Service
from mdsl.compile.actions import Poll, Shell
from mdsl.compile.context import SERVICE_TIMEOUT, CompileContext, step_timeout
from mdsl.compile.parts import Arg, Lit, sh
from mdsl.compile import docker
from mdsl.syntax import ast as A


def _units(s: Service):
    return [Arg(u) for u in s.systemd]


def _control(ctx: CompileContext, step: A.Step, s: Service, verb: str, running: bool) -> List:
    """`verb` the service, then wait until systemctl is-active (or its status command) says `running`."""
    t = step_timeout(step, SERVICE_TIMEOUT)
    state = f"{s.name} {'running' if running else 'stopped'}"
    if s.compose or s.container:
        return docker.control(ctx, step, s, verb)
    if s.systemd:
        # systemctl start/stop waits for the units; is-active afterwards must agree.
        return [Shell(ctx.command(s.host, sh(f"systemctl {verb} --", *_units(s)), tools=("systemctl",)),
                      f"{verb} {s.name}", t),
                Poll(ctx.command(s.host, sh("systemctl is-active --quiet --", *_units(s)), tools=("systemctl",)),
                     state, want_ok=running, timeout=t)]
    out = [Shell(ctx.command(s.host, (Lit(getattr(s, verb)),)), f"{verb} {s.name}", t)]
    if s.status:
        out.append(Poll(ctx.command(s.host, (Lit(s.status),)), state, want_ok=running, timeout=t))
    return out


def stop(ctx: CompileContext, step: A.Step, s: Service) -> List:
    """Stop, then wait until it reports stopped (systemctl is-active, or the status command, fails)."""
    return _control(ctx, step, s, "stop", running=False)


def start(ctx: CompileContext, step: A.Step, s: Service) -> List:
    """Start, then wait until it reports running (systemctl is-active, or the status command)."""
    return _control(ctx, step, s, "start", running=True)


def restart(ctx: CompileContext, step: A.Step, s: Service) -> List:
    """systemctl restart, or stop then start for a command service."""
    if s.systemd:
        t = step_timeout(step, SERVICE_TIMEOUT)
        return [Shell(ctx.command(s.host, sh("systemctl restart --", *_units(s)), tools=("systemctl",)),
                      f"restart {s.name}", t),
                Poll(ctx.command(s.host, sh("systemctl is-active --quiet --", *_units(s)), tools=("systemctl",)),
                     f"{s.name} running", want_ok=True, timeout=t)]
    return stop(ctx, step, s) + start(ctx, step, s)
