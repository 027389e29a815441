"""Bringing the source back after a failure before the point of no return, and saying what state a run left.

What a rollback at each step undoes is mdsl.check.cutover's (compiled in mdsl.compile.undo); this module
reads the journal to know which steps ran, refuses once the point of no return has started, runs the
undos in reverse order (a service that runs already is left alone), journals each (`undone`, so the next
apply runs that step and every later one again) and the end (`rollback`). The target is left as it is:
nothing there is live before the cutover, and the next apply replaces it.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

from attrs import frozen

from mdsl.compile.actions import Poll, Shell
from mdsl.compile.plan import CompiledPlan, CompiledStep
from mdsl.compile.undo import CompiledUndo
from mdsl.run import journal as J
from mdsl.run.backend import BackendError
from mdsl.run.console import Console
from mdsl.run.errors import StepFailed
from mdsl.run.executor import Executor

_RAN = ("done", "failed", "started")  # a step that ran, whole or in part


@frozen
class RollbackTodo:
    """What a rollback would do now, from the journal: the undos in order, or why it is refused."""

    undos: Tuple[Tuple[CompiledStep, CompiledUndo, Tuple[str, ...]], ...] = ()  # step, its undo, services
    refused: Optional[str] = None
    last: Optional[CompiledStep] = None  # the last step that ran

    @property
    def hosts(self) -> List[str]:
        """The hosts the undos run on."""
        out: Dict[str, None] = {}
        for _, u, services in self.undos:
            out.update(dict.fromkeys(back.host for back in u.services if back.service in services))
            out.update(dict.fromkeys(c.host for a in u.actions for c in a.commands()))
        return list(out)

    def lines(self) -> List[str]:
        """One line per undo: `start old_app (stopped by step 2)`."""
        return [(f"start {', '.join(services)}" if services else u.text)
                + f"  (undoes step {step.id} `{step.summary}`)" for step, u, services in self.undos]


def _ran(compiled: CompiledPlan, state: J.JournalState) -> List[CompiledStep]:
    return [s for s in compiled.leaves() if s.id in state.steps and state.steps[s.id].status in _RAN]


def what_to_undo(compiled: CompiledPlan, state: J.JournalState) -> RollbackTodo:
    """The rollback the journal calls for now (nothing when no step ran, or all was undone already)."""
    rb = compiled.rollback
    ran = _ran(compiled, state)
    if not ran or rb is None:
        return RollbackTodo()
    last = ran[-1]
    cut = [s for s in ran if s.path[0] == rb.cutover_top]
    if rb.cutover_top is not None and (cut or last.path[0] > rb.cutover_top):
        return RollbackTodo(refused=_refusal(compiled, state, cut or [last]), last=last)
    ran_paths = {s.path for s in ran}
    by_path = {s.path: s for s in compiled.leaves()}
    out = []
    for u in rb.at(last.path):
        if u.path in ran_paths and u.path in compiled.undos:
            out.append((by_path[u.path], compiled.undos[u.path], u.services))
    return RollbackTodo(tuple(out), last=last)


def _refusal(compiled: CompiledPlan, state: J.JournalState, cut: List[CompiledStep]) -> str:
    """Why no rollback after the point of no return: which service took which writes since when."""
    bound = compiled.bound
    starts = [s for s in compiled.leaves() if s.cutover] or cut
    words = []
    for s in starts:
        rec = state.steps.get(s.id)
        since = f" since {rec.at}" if rec is not None and rec.at else ""
        for svc in getattr(s.step, "services", ()):
            writes = ", ".join(bound.resources[svc.name].writes) or "its data"
            words.append(f"{svc.name} has been writing {writes} on {bound.resources[svc.name].host}{since}")
    first = starts[0]
    return (f"step {first.id} `{first.summary}` is the point of no return, and it has run: "
            + "; ".join(words) + ". The old host never saw those writes: starting the old app again would serve "
            "without them, and they would be lost. Fix forward (`mdsl apply` resumes), or move the new data "
            "back with a plan of its own.")


def services_stopped_now(compiled: CompiledPlan, state: J.JournalState) -> List[Tuple[str, CompiledStep]]:
    """(service, the step that stopped it) for the plan's services stopped by a step that ran and not started
    again by a later one, per the journal."""
    rb = compiled.rollback
    stopped: Dict[str, CompiledStep] = {}
    for s in _ran(compiled, state):
        u = rb.undo.get(s.path) if rb is not None else None
        if u is not None and u.services:
            for name in u.services:
                stopped[name] = s
        if rb is not None and state.steps[s.id].status == "done":
            for name in rb.started.get(s.path, ()):
                stopped.pop(name, None)
    return list(stopped.items())


def state_now(compiled: CompiledPlan, state: J.JournalState, plan: str, rolled_back: bool = False) -> List[str]:
    """The `state now:` block a failure after a stop prints: what is stopped, how to bring it back, what
    the journal resumes. Empty when no service of the plan is stopped and nothing was rolled back."""
    stopped = services_stopped_now(compiled, state)
    lines = []
    if stopped:
        lines.append("state now:")
        for name, step in stopped:
            svc = compiled.bound.resources[name]
            lines.append(f"  {name} on {svc.host} is stopped (step {step.id} `{step.summary}`)")
        todo = what_to_undo(compiled, state)
        if todo.refused:
            lines.append("  no rollback: " + todo.refused)
        elif todo.undos:
            lines.append(f"  bring it back: `mdsl rollback {plan}` (" + "; ".join(
                u.split("  (")[0] for u in todo.lines()) + ")")
        by_hand = []
        for name, step in stopped:
            u = compiled.undos.get(step.path)
            for back in (u.services if u is not None else ()):
                if back.service == name:
                    by_hand += [f"    {x}" for a in back.actions for x in a.describe()]
        if by_hand:
            lines.append("  or by hand:")
            lines += by_hand
    elif rolled_back:
        lines.append("state now: the source runs as before the plan; the target is left as the run left it")
    resume = next((s for s in compiled.leaves() if s.id not in state.steps
                   or state.steps[s.id].status != "done"), None)
    if lines and resume is not None:
        lines.append(f"  the journal resumes at step {resume.id} `{resume.title}`: once the cause is fixed, "
                     f"`mdsl apply {plan}`")
    return lines


class RollbackRunner:
    """Runs a rollback's undos through an executor, journaling each."""

    def __init__(self, executor: Executor, journal: J.Journal, console: Console):
        self.executor, self.journal, self.console = executor, journal, console

    def run(self, todo: RollbackTodo) -> bool:
        """Every undo in order; False (after saying which) when one failed: the rest are not tried."""
        done = []
        for step, undo, services in todo.undos:
            try:
                for back in undo.services:
                    if back.service in services:
                        self._start_again(back)
                for a in undo.actions:
                    self._action(a)
            except StepFailed as exc:
                self.console.warn(f"rollback: undoing step {step.id} `{step.summary}` failed: {exc.message}"
                                  + (f"\n  command: {exc.command}" if exc.command else "")
                                  + "".join(f"\n    | {x}" for x in (exc.stderr or "").splitlines()[-6:]))
                self.journal.rolled_back(False, done)
                return False
            self.journal.step_undone(step.id)
            done.append(step.id)
            self.console.say(f"rollback: {undo.text if not services else 'start ' + ', '.join(services)} ... ok"
                             f"  (undid step {step.id})")
        self.journal.rolled_back(True, done)
        return True

    def _start_again(self, back) -> None:
        if back.running is not None:
            res = self._run(back.running, 30)
            if res.ok:
                self.console.say(f"rollback: {back.service} runs already")
                return
        for a in back.actions:
            self._action(a)

    def _action(self, a) -> None:
        if isinstance(a, Shell):
            res = self._run(a.command, a.timeout)
            if not res.ok:
                raise StepFailed(f"{a.what}: exit status {res.exit}", host=a.command.host,
                                 command=a.command.render(masked=True), stderr=res.stderr)
        elif isinstance(a, Poll):
            deadline = time.monotonic() + a.timeout
            while True:
                res = self._run(a.command, max(5.0, a.timeout))
                if res.ok == a.want_ok:
                    return
                if time.monotonic() >= deadline:
                    raise StepFailed(f"{a.what}: still not so after {a.timeout:g}s", host=a.command.host,
                                     command=a.command.render(masked=True), stderr=res.stderr)
                time.sleep(a.interval)
        else:  # pragma: no cover - compile.undo makes only these
            raise StepFailed(f"cannot undo with a {type(a).__name__}")

    def _run(self, cmd, timeout):
        try:
            return self.executor.run(cmd, timeout=timeout)
        except BackendError as exc:
            raise StepFailed(exc.message, host=exc.host, command=cmd.render(masked=True)) from None


def describe_every_step(compiled: CompiledPlan) -> Dict[str, str]:
    """Per step id, what `mdsl plan` says a rollback after it fails would do."""
    rb = compiled.rollback
    if rb is None:
        return {}
    at = rb.every_step()
    out = {}
    for leaf in compiled.leaves():
        if leaf.path not in at:
            out[leaf.id] = "rollback if it fails: none (at or after the point of no return)"
        elif not at[leaf.path]:
            out[leaf.id] = "rollback if it fails: nothing to undo"
        else:
            out[leaf.id] = "rollback if it fails: " + "; ".join(u.text() for u in at[leaf.path])
    return out
