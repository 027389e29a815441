"""The `plan`, `apply` and `status` subcommands, as functions of the arguments mdsl.cli parsed.

Each returns an exit status: 0 success, 1 failed or refused, 2 unusable plan
(syntax or check errors). An unexpected exception is mdsl.cli's to report.
"""

from __future__ import annotations

import os
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
    b = compiled.bound
    lines: List[str] = []
    title = b.plan.title.value if b.plan.title else b.plan.path
    lines.append(f"plan: {title}")
    lines.append("hosts: " + ", ".join(h.display for h in b.hosts.values()))
    lines.append("")
    def add(step, depth: int) -> None:
        lines.append("  " * depth + _step_header(step))
        if step.is_parallel or step.is_sequence:
            for m in step.members:
                add(m, depth + 1)
        else:
            lines.extend("  " * depth + "    " + x for x in step.describe())

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
                        restart=args.restart)
    # mdsl's own files (journal, lock) are opened 0600 in a 0700 `.mdsl/`; commands that make
    # artifacts set `umask 077` themselves, so the operator's services keep their own umask.
    install_thread_hook()  # an exception escaping a worker thread is reported redacted, too
    return apply_plan(opts)


def status_command(args) -> int:
    """`mdsl status PLAN`: done / failed / pending per step, from the journal."""
    from mdsl.run import journal as J
    from mdsl.run.schedule import make_schedule

    loaded = _load(args.plan, "show the status")
    if isinstance(loaded, int):
        return loaded
    compiled, _ = loaded
    jpath = J.journal_path(args.plan)
    state = J.read_journal(jpath)
    print(format_status(compiled, state, jpath, make_schedule(compiled, state)))
    return 0


def format_status(compiled, state, jpath: str, sched) -> str:
    """The text `mdsl status` prints."""
    from mdsl.run.console import human_bytes

    lines = [f"journal: {jpath}" + ("" if os.path.exists(jpath) else " (none yet: nothing has run)")]
    if state.runs:
        lines.append(f"runs: {state.runs}, last started {state.last_run_at}"
                     + (", finished ok" if state.finished_ok else ""))
    if state.torn_lines:
        lines.append(f"note: {state.torn_lines} torn journal line(s) ignored (a crash mid-write)")
    counts = {"done": 0, "failed": 0, "pending": 0}
    for top in compiled.steps:
        if top.is_parallel:
            lines.append(f"[{top.id}] {top.title}")
        groups, todo, shown = {}, list(top.members), set()  # a block's lanes, headed like the block
        while todo:
            m = todo.pop()
            if m.members:
                groups[m.path] = m
                todo.extend(m.members)
        for leaf in top.leaves():
            for k in range(2, len(leaf.path)):
                g = groups.get(leaf.path[:k])
                if g is not None and g.path not in shown:
                    shown.add(g.path)
                    lines.append("  " * (k - 1) + f"[{g.id}] {g.title}")
            rec = state.steps.get(leaf.id)
            st = sched.status.get(leaf.id, "pending")
            indent = "  " * (len(leaf.path) - 1)
            if st == "done":
                word = "done"
                detail = f"{rec.at}, {rec.seconds or 0:.1f}s"
                if rec.artifacts:
                    detail += "; " + ", ".join(
                        f'{a.host}:"{a.path}" {human_bytes(a.size)}'
                        + (f" sha256 {a.sha256[:12]}" if a.sha256 else " (secret: size only)")
                        for a in rec.artifacts)
            elif rec is not None and rec.status == "failed" and rec.fingerprint == leaf.fingerprint:
                word, detail = "failed", f"{rec.at}: {rec.error}" + (f" (host {rec.host})" if rec.host else "")
            elif rec is not None and rec.status == "started":
                word, detail = "pending", f"started {rec.at} and never finished (interrupted?)"
            elif st == "changed":
                word, detail = "pending", "the step changed since it ran: it runs again"
            else:
                word, detail = "pending", ""
            counts["failed" if word == "failed" else word] += 1
            lines.append(f"{indent}[{leaf.id}] {word:<8} {leaf.title}" + (f"    -- {detail}" if detail else ""))
    lines.append(f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending")
    return "\n".join(lines)
