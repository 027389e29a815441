"""`mdsl rollback PLAN`: the rollback an apply did not do (it was killed, or the operator said no), from the
journal. Refused after the point of no return, saying which writes would be lost (mdsl.run.rollback)."""

from __future__ import annotations

from mdsl.run import journal as J
from mdsl.run.apply import Apply, ApplyOptions
from mdsl.run.errors import Refused
from mdsl.run.executor import Executor
from mdsl.run.leftovers import stop_leftovers
from mdsl.run.load import Unusable, load_plan
from mdsl.run.rollback import RollbackRunner, state_now, what_to_undo


class RollbackCommand(Apply):
    """One `mdsl rollback` invocation: the plan's lock, its journal, the hosts the undos run on."""

    def run(self) -> int:
        """Roll back; the exit status (0 rolled back or nothing to do, 1 refused or failed, 2 unusable plan)."""
        try:
            compiled, _ = load_plan(self.opts.plan, self.console.warn, "roll back")
        except Unusable as exc:
            return exc.code
        self.hosts = compiled.bound.hosts
        lock = J.PlanLock(J.lock_path(self.opts.plan))
        if not self._lock(lock):
            return 1
        try:
            return self._roll_back(compiled)
        except Refused as exc:
            self.console.warn(f"refused: {exc}")
            return 1
        finally:
            self._release(lock)

    def _roll_back(self, compiled) -> int:
        plan = self.opts.plan
        jpath = J.journal_path(plan)
        state = J.read_journal(jpath)
        todo = what_to_undo(compiled, state)
        if todo.refused:
            self.console.warn(f"refused: no rollback of {plan}: {todo.refused}")
            lines = state_now(compiled, state, plan)
            if lines:
                self.console.warn("\n".join(lines))
            return 1
        if not todo.undos:
            self.console.say(f"nothing to roll back: the journal ({jpath}) has no step that stopped a service "
                             "or declared an `undo` still to undo")
            return 0
        self.console.say(f"mdsl rollback {plan}: the run stopped at step {todo.last.id} `{todo.last.summary}`; "
                         "this brings the source back (the target is left as it is):")
        for line in todo.lines():
            self.console.say(f"  {line}")
        self.console.ask("Roll back?", "the rollback")
        needed = [secret for _, undo, _ in todo.undos for action in undo.every_action
                  for command in action.commands() for secret in command.secrets]
        for sec in needed + [
                compiled.bound.hosts[h].sudo_password for h in todo.hosts
                if compiled.bound.hosts[h].sudo_password is not None]:
            try:
                self.secrets.lookup(sec)
            except KeyError as exc:
                raise Refused(f"a secret the rollback needs is missing: {sec.masked()}: {exc.args[0]}") from None
        # what a killed run left running (a dump, a restore) is stopped first, as the next apply would
        leftover_hosts = {r.host for r in state.running} | {f.host for f in state.secret_files.values()}
        hosts = list(dict.fromkeys([*todo.hosts, *sorted(h for h in leftover_hosts if h in self.hosts)]))
        self._connect(compiled.bound, hosts)
        self.journal = J.Journal(jpath)
        executor = Executor(self.backends, self.secrets)
        executor.journal = self.journal
        stop_leftovers(state, executor, self.hosts, self.console, self.journal)
        ok = RollbackRunner(executor, self.journal, self.console).run(todo)
        lines = state_now(compiled, J.read_journal(jpath), plan, rolled_back=ok)
        if lines:
            self.console.warn("\n".join(lines))
        if ok:
            self.console.say("rolled back: the old app serves again")
        return 0 if ok else 1


def rollback_plan(opts: ApplyOptions, **kw) -> int:
    """Run `mdsl rollback` with these options; returns the exit status."""
    from mdsl.run import log

    log.configure(opts.log_format)
    return RollbackCommand(opts, **kw).run()
