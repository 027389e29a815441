"""The `plan`, `apply` and `status` subcommands, as functions of parsed arguments (the CLI wires them).

Each returns an exit status and never lets a traceback reach the operator:
0 success, 1 failed or refused, 2 unusable plan (syntax or check errors).
`add_*_arguments` fill an argparse parser with the options each one reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mdsl.findings import Severity


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mdsl plan`."""
    p.add_argument("plan", help="the .plan file")


def add_apply_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mdsl apply`."""
    p.add_argument("plan", help="the .plan file")
    p.add_argument("--dry-run", action="store_true",
                   help="check, connect and preflight, print the commands, run nothing")
    p.add_argument("--yes", "-y", action="store_true",
                   help="answer yes to warnings, destructive steps and confirm gates")
    p.add_argument("--from", dest="from_label", metavar="LABEL", help="start at the step with this label")
    p.add_argument("--log-format", choices=("console", "json"), default=None,
                   help="log format on stderr (default: console on a terminal, json otherwise)")
    p.add_argument("--accept-new-host-keys", action="store_true",
                   help="trust SSH host keys not yet in known_hosts (changed keys are still refused)")
    p.add_argument("--restart", action="store_true", help="ignore the journal and run every step again")


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mdsl status`."""
    p.add_argument("plan", help="the .plan file")


def _internal_error(exc: BaseException, what: str) -> int:
    """One redacted line on stderr (the redacted traceback with MDSL_DEBUG=1); for apply, also a log event.

    Every secret apply read is redacted from the message and the traceback (chained
    exceptions included). With `--log-format json` the event carries the traceback as
    data (no locals), redacted by the log's processors, so a log collector keeps it.
    """
    from mdsl.run import log

    print(f"internal error during `mdsl {what}`: {log.format_exception(exc, False)}", file=sys.stderr)
    if what == "apply" and log.log_format() == "json":
        try:
            log.get_logger().error("apply.internal_error", exc_info=exc)
        except Exception:  # noqa: BLE001 - the report must not fail in turn
            pass
    if os.environ.get("MDSL_DEBUG"):
        print(log.format_exception(exc, True), file=sys.stderr, end="")
    else:
        print("  set MDSL_DEBUG=1 for the traceback; the journal keeps what is done, `mdsl apply` resumes",
              file=sys.stderr)
    return 1


def _load(plan_path: str, verb: str):
    """(compiled plan, findings), or the exit status when the plan cannot be used (reasons printed)."""
    from mdsl.run.load import Unusable, load_plan

    try:
        return load_plan(plan_path, lambda text: print(text, file=sys.stderr), verb)
    except Unusable as exc:
        return exc.code


def plan_command(args) -> int:
    """`mdsl plan PLAN`: every step with the exact commands it will run, secrets masked."""
    try:
        loaded = _load(args.plan, "show the plan")
        if isinstance(loaded, int):
            return loaded
        compiled, findings = loaded
        from mdsl.run.load import render_findings

        warnings = [f for f in findings if f.severity == Severity.WARNING]
        if warnings:
            print(render_findings(warnings), file=sys.stderr)
        print(format_plan(compiled))
        return 0
    except Exception as exc:  # noqa: BLE001 - the operator sees a message, never a traceback
        return _internal_error(exc, "plan")


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
    try:
        from mdsl.run.apply import ApplyOptions, apply_plan

        opts = ApplyOptions(
            plan=args.plan,
            dry_run=bool(getattr(args, "dry_run", False)),
            yes=bool(getattr(args, "yes", False)),
            from_label=getattr(args, "from_label", None),
            log_format=getattr(args, "log_format", None),
            accept_new_host_keys=bool(getattr(args, "accept_new_host_keys", False)),
            restart=bool(getattr(args, "restart", False)),
        )
        # mdsl's own files (journal, lock) are opened 0600 in a 0700 `.mdsl/`; commands that make
        # artifacts set `umask 077` themselves, so the operator's services keep their own umask.
        from mdsl.run.log import install_thread_hook

        install_thread_hook()  # an exception escaping a worker thread is reported redacted, too
        return apply_plan(opts)
    except Exception as exc:  # noqa: BLE001 - the operator sees a message, never a traceback
        return _internal_error(exc, "apply")


def status_command(args) -> int:
    """`mdsl status PLAN`: done / failed / pending per step, from the journal."""
    try:
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
    except Exception as exc:  # noqa: BLE001
        return _internal_error(exc, "status")


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


def main(argv: Optional[List[str]] = None) -> int:
    """A stand-alone entry for these three subcommands (the real CLI lives in mdsl.cli)."""
    p = argparse.ArgumentParser(prog="mdsl")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_plan_arguments(sub.add_parser("plan"))
    add_apply_arguments(sub.add_parser("apply"))
    add_status_arguments(sub.add_parser("status"))
    args = p.parse_args(argv)
    return {"plan": plan_command, "apply": apply_command, "status": status_command}[args.cmd](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
