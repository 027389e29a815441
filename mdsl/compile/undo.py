"""What a rollback runs for each step it undoes (mdsl.check.cutover says which): the commands, no I/O."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from attrs import frozen

from mdsl.check.cutover import Path, Rollback
from mdsl.compile import services
from mdsl.compile.actions import Action, Poll, Shell
from mdsl.compile.context import RUN_TIMEOUT, SERVICE_TIMEOUT, CompileContext, step_timeout
from mdsl.compile.parts import Command, Lit
from mdsl.syntax import ast as A


@frozen
class ServiceBack:
    """Start one service again: `running` succeeds when it runs already (then nothing is done)."""

    service: str
    host: str
    actions: Tuple[Action, ...]
    running: Optional[Command] = None


@frozen
class CompiledUndo:
    """What undoing one step runs: its services started again, or its `run`'s declared `undo`."""

    path: Path
    text: str  # as plan text: `start old_app`, `run old "..."`
    services: Tuple[ServiceBack, ...] = ()
    actions: Tuple[Action, ...] = ()

    @property
    def every_action(self) -> Tuple[Action, ...]:
        """What undoing the step runs, in order: each service's start, then the declared `undo`."""
        return (*(action for back in self.services for action in back.actions), *self.actions)

    def describe(self):
        """The exact commands, secrets masked."""
        return [line for action in self.every_action for line in action.describe()]


def compile_undos(ctx: CompileContext, rollback: Rollback, step_at) -> Dict[Path, CompiledUndo]:
    """Per step a rollback may undo, its commands; `step_at(path)`: the AST step there (for its timeout)."""
    out: Dict[Path, CompiledUndo] = {}
    for path, u in rollback.undo.items():
        step = step_at(path)
        if u.services:
            backs = []
            for name in u.services:
                svc = ctx.bound.resources[name]
                acts = tuple(services.start(ctx, step, svc))
                polls = [a for a in acts if isinstance(a, Poll) and a.want_ok]
                backs.append(ServiceBack(name, svc.host, acts, polls[-1].command if polls else None))
            out[path] = CompiledUndo(path, u.text(), services=tuple(backs))
        else:
            cmd = ctx.command(u.host, (Lit(u.command),), run_as=u.run_as)
            timeout = step_timeout(step, RUN_TIMEOUT) if isinstance(step, A.Run) else SERVICE_TIMEOUT
            out[path] = CompiledUndo(path, u.text(), actions=(Shell(cmd, "undo", timeout),))
    return out
