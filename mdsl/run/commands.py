"""The `plan`, `apply`, `rollback` and `status` subcommands, as functions of the arguments mdsl.cli parsed.

Each returns an exit status: 0 success, 1 failed or refused, 2 unusable plan
(syntax or check errors). An unexpected exception is mdsl.cli's to report.
"""

from __future__ import annotations

import sys
from typing import List

from mdsl.findings import Severity


def _load(plan_path: str, verb: str):
    """(compiled plan, findings), or the exit status when the plan cannot be used (reasons printed)."""
    from mdsl.run.load import Unusable, load_plan

    try:
        return load_plan(plan_path, lambda text: print(text, file=sys.stderr), verb)
    except Unusable as exc:
        return exc.code


def plan_command(args) -> int:
    """`mdsl plan PLAN`: every step with the exact commands it will run, secrets masked."""
    from mdsl.run.load import render_findings

    loaded = _load(args.plan, "show the plan")
    if isinstance(loaded, int):
        return loaded
    compiled, findings = loaded
    warnings = [f for f in findings if f.severity == Severity.WARNING]
    if warnings:
        print(render_findings(warnings), file=sys.stderr)
    print(format_plan(compiled))
    return 0


def format_plan(compiled) -> str:
    """The text `mdsl plan` prints."""
    from mdsl.run.rollback import describe_every_step

    rollback_text = describe_every_step(compiled)
    bound = compiled.bound
    lines: List[str] = []
    title = bound.plan.title.value if bound.plan.title else bound.plan.path
    lines.append(f"plan: {title}")
    lines.append("hosts: " + ", ".join(h.display for h in bound.hosts.values()))
    lines.append("")
    def add(step, depth: int) -> None:
        lines.append("  " * depth + _step_header(step))
        if step.is_parallel or step.is_sequence:
            for m in step.members:
                add(m, depth + 1)
        else:
            if step.implicit:
                lines.append("  " * depth + "    # " + step.implicit_why)
            lines.extend("  " * depth + "    " + x for x in step.describe())
            said = rollback_text.get(step.id)
            if said:
                lines.append("  " * depth + "    # " + said)

    for top in compiled.steps:
        add(top, 0)
    return "\n".join(lines)


def _step_header(s) -> str:
    flags = "    DESTRUCTIVE: asks for confirmation" if s.destructive else (
        "    POINT OF NO RETURN: asks for confirmation" if s.cutover else "")
    return f"[{s.id}] {s.title}    ({s.kind}, line {s.line}){flags}"


def apply_command(args) -> int:
    """`mdsl apply PLAN`: check, preflight, run with a journal; see mdsl.run.apply."""
    from mdsl.run.apply import ApplyOptions, apply_plan
    from mdsl.run.log import install_thread_hook

    opts = ApplyOptions(plan=args.plan, dry_run=args.dry_run, yes=args.yes, from_label=args.from_label,
                        log_format=args.log_format, accept_new_host_keys=args.accept_new_host_keys,
                        restart=args.restart, rollback=args.rollback)
    # mdsl's own files (journal, lock) are opened 0600 in a 0700 `.mdsl/`; commands that make
    # artifacts set `umask 077` themselves, so the operator's services keep their own umask.
    install_thread_hook()  # an exception escaping a worker thread is reported redacted, too
    return apply_plan(opts)


def rollback_command(args) -> int:
    """`mdsl rollback PLAN`: bring the source back from the journal; see mdsl.run.rollback."""
    from mdsl.run.apply import ApplyOptions
    from mdsl.run.log import install_thread_hook
    from mdsl.run.rollback_command import rollback_plan

    opts = ApplyOptions(plan=args.plan, yes=args.yes, log_format=args.log_format,
                        accept_new_host_keys=args.accept_new_host_keys)
    install_thread_hook()
    return rollback_plan(opts)


def status_command(args) -> int:
    """`mdsl status PLAN`: done / running / failed / pending per step; exit status 1 when a step failed."""
    from mdsl.run import journal as J
    from mdsl.run.schedule import make_schedule
    from mdsl.run.status import status_report

    loaded = _load(args.plan, "show the status")
    if isinstance(loaded, int):
        return loaded
    compiled, _ = loaded
    jpath = J.journal_path(args.plan)
    live = J.running_apply(J.lock_path(args.plan))
    state = J.read_journal(jpath)  # after the lock: a step it shows running started in the run that holds it
    report = status_report(compiled, state, jpath, make_schedule(compiled, state), live)
    print(report.text)
    return 1 if report.failed else 0
