"""Services: systemd units (`systemctl`), or the operator's start/stop/status commands."""

from __future__ import annotations

from typing import List

from mdsl.check.resolve import Service
from mdsl.compile.actions import Poll, Shell
from mdsl.compile.context import SERVICE_TIMEOUT, CompileContext, step_timeout
from mdsl.compile.parts import Arg, Lit, sh
from mdsl.syntax import ast as A


def _units(s: Service):
    return [Arg(u) for u in s.systemd]


def stop(ctx: CompileContext, step: A.Step, s: Service) -> List:
    """Stop, then (for a command service with `status`) wait until the status command fails."""
    t = step_timeout(step, SERVICE_TIMEOUT)
    if s.systemd:
        # systemctl stop waits for the units to stop; is-active afterwards must say so.
        return [Shell(ctx.command(s.host, sh("systemctl stop --", *_units(s)), tools=("systemctl",)),
                      f"stop {s.name}", t),
                Poll(ctx.command(s.host, sh("systemctl is-active --quiet --", *_units(s)), tools=("systemctl",)),
                     f"{s.name} stopped", want_ok=False, timeout=t)]
    out = [Shell(ctx.command(s.host, (Lit(s.stop),)), f"stop {s.name}", t)]
    if s.status:
        out.append(Poll(ctx.command(s.host, (Lit(s.status),)), f"{s.name} stopped", want_ok=False, timeout=t))
    return out


def start(ctx: CompileContext, step: A.Step, s: Service) -> List:
    """Start, then wait until it reports running (systemctl is-active, or the status command)."""
    t = step_timeout(step, SERVICE_TIMEOUT)
    if s.systemd:
        return [Shell(ctx.command(s.host, sh("systemctl start --", *_units(s)), tools=("systemctl",)),
                      f"start {s.name}", t),
                Poll(ctx.command(s.host, sh("systemctl is-active --quiet --", *_units(s)), tools=("systemctl",)),
                     f"{s.name} running", want_ok=True, timeout=t)]
    out = [Shell(ctx.command(s.host, (Lit(s.start),)), f"start {s.name}", t)]
    if s.status:
        out.append(Poll(ctx.command(s.host, (Lit(s.status),)), f"{s.name} running", want_ok=True, timeout=t))
    return out


def restart(ctx: CompileContext, step: A.Step, s: Service) -> List:
    """systemctl restart, or stop then start for a command service."""
    if s.systemd:
        t = step_timeout(step, SERVICE_TIMEOUT)
        return [Shell(ctx.command(s.host, sh("systemctl restart --", *_units(s)), tools=("systemctl",)),
                      f"restart {s.name}", t),
                Poll(ctx.command(s.host, sh("systemctl is-active --quiet --", *_units(s)), tools=("systemctl",)),
                     f"{s.name} running", want_ok=True, timeout=t)]
    return stop(ctx, step, s) + start(ctx, step, s)
