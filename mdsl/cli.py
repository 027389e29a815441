"""The `mdsl` command line: check, explain, fmt, plan, apply, rollback, status, graph, init.

`check`, `explain` and `fmt` import only the syntax and check stages, so they
start fast (editors, pre-commit); `plan`, `apply` and `status` import the
runner lazily, inside their dispatch function.

Exit codes: 0 clean; 1 findings at or above `--fail-on`; 2 unusable input (a
file that cannot be read or parsed, an E1xx finding), a usage error, or an
internal error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130

_SEVERITIES = ("error", "warning", "info")

_CHECK_EPILOG = """\
exit status: 0 no findings at or above --fail-on; 1 findings at or above it;
2 a plan could not be read, parsed or resolved (E1xx), or a usage error.

--format json prints a list of objects with the keys code, severity, message,
file, line, column, end_line, end_column (exclusive), label, notes, help;
columns count Unicode code points from 1. --format sarif prints SARIF 2.1.0;
--format github prints GitHub Actions workflow commands (::error ...).
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with `mdsl: error:` messages and exit status 2 for usage errors."""

    def error(self, message):  # noqa: D401 - argparse's hook
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNUSABLE, f"{self.prog}: error: {message}\n")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mdsl")
    except Exception:  # running from a checkout that was never installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (DESIGN.md's CLI table)."""
    p = _Parser(prog="mdsl", description="Move a running self-hosted service between machines without losing data.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="prove a plan loses no data; report findings",
                       description="Report every finding about the plans "
                                   "(syntax, names, data loss, order, operations).",
                       epilog=_CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("plans", nargs="+", metavar="PLAN", help="plan files (`-` reads standard input)")
    c.add_argument("--format", choices=("text", "json", "sarif", "github"), default="text",
                   help="output format (default: text)")
    c.add_argument("--fail-on", choices=_SEVERITIES, default="warning",
                   help="exit 1 when a finding is at least this severe (default: warning)")
    c.add_argument("--rollback", action="store_true",
                   help="the plan runs with rollback (`apply --rollback-on-failure`): also report the steps a "
                        "rollback cannot undo (H310)")
    c.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="color the text format (auto: on a terminal, unless NO_COLOR is set)")
    c.set_defaults(handler=_check)

    e = sub.add_parser("explain", help="show the documentation page of a finding code",
                       description="Show what a finding means, a bad plan and the fixed plan. "
                                   "Without CODE, list the codes.")
    e.add_argument("code", nargs="?", metavar="CODE",
                   help="a finding code, e.g. H101, or an app, e.g. mastodon")
    e.set_defaults(handler=_explain)

    f = sub.add_parser("fmt", help="lay out a plan canonically (comments kept)",
                       description="Rewrite plans in the canonical layout, keeping comments.")
    f.add_argument("plans", nargs="+", metavar="PLAN",
                   help="plan files (`-` formats standard input to standard output)")
    f.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 if a plan is not formatted, listing it")
    f.add_argument("--diff", action="store_true", help="change nothing; print a unified diff")
    f.set_defaults(handler=_fmt)

    pl = sub.add_parser("plan", help="show each step's exact commands (secrets masked)",
                        description="Print the resolved steps with the exact commands each will run; secrets masked.")
    pl.add_argument("plan", metavar="PLAN")
    pl.set_defaults(handler=_runner("plan"))

    a = sub.add_parser("apply", help="check, preflight, then run a plan",
                       description="Check the plan, run preflight checks on every host, then run the steps.")
    a.add_argument("plan", metavar="PLAN")
    a.add_argument("--dry-run", action="store_true",
                   help="check, connect and preflight, print the commands, run nothing")
    a.add_argument("-y", "--yes", action="store_true",
                   help="answer yes to warnings, destructive steps and confirm gates")
    a.add_argument("--from", dest="from_label", metavar="LABEL", help="start at the step with this label")
    _add_connection_options(a)
    a.add_argument("--restart", action="store_true", help="ignore the journal and run every step again")
    rb = a.add_mutually_exclusive_group()
    rb.add_argument("--rollback-on-failure", dest="rollback", action="store_const", const=True, default=None,
                    help="when a step fails, a question is answered no or Ctrl-C is pressed before the point of no "
                         "return, bring the source back (start what the plan stopped, run the `undo`s) without "
                         "asking; the plan is checked as `mdsl check --rollback` (default: ask on a terminal)")
    rb.add_argument("--no-rollback", dest="rollback", action="store_const", const=False,
                    help="never roll back (nor ask); the failure says what is stopped and how to bring it back")
    a.set_defaults(handler=_runner("apply"))

    r = sub.add_parser("rollback", help="bring the source back after a run that stopped before the point of no return",
                       description="From the journal: start again what the plan stopped (in reverse order) and run "
                                   "the `undo` of each `run` step that declared one; the target is left as it is. "
                                   "Refused once the point of no return has run.")
    r.add_argument("plan", metavar="PLAN")
    r.add_argument("-y", "--yes", action="store_true", help="do not ask before rolling back")
    _add_connection_options(r)
    r.set_defaults(handler=_runner("rollback"))

    g = sub.add_parser("graph", help="the plan's data lineage as DOT or Mermaid",
                       description="Print which step copies which data where, as Graphviz DOT or a Mermaid flowchart.")
    g.add_argument("plan", metavar="PLAN")
    g.add_argument("--format", choices=("dot", "mermaid"), default="dot", help="output format (default: dot)")
    g.set_defaults(handler=_graph)

    s = sub.add_parser("status", help="what the journal says: done, failed, pending",
                       description="Show the state of the plan's journal: which steps are done, failed or pending.")
    s.add_argument("plan", metavar="PLAN")
    s.set_defaults(handler=_runner("status"))

    i = sub.add_parser("init", help="write the plan for the app a host runs (reads both hosts, changes nothing)",
                       description="Connect to both hosts (host keys checked), find the app installed on the "
                                   "source by its profile's fingerprints, read its config, measure its data, look "
                                   "at the target, and write a commented plan that `mdsl check` passes. "
                                   "Exit 1 when no known app is found (what was seen is printed).")
    i.add_argument("--from", dest="source", required=True, metavar="ssh://USER@HOST[:PORT]", help="the old host")
    i.add_argument("--to", dest="target", required=True, metavar="ssh://USER@HOST[:PORT]", help="the new host")
    i.add_argument("--identity", metavar="FILE", help="the SSH key for both hosts")
    i.add_argument("--known-hosts", metavar="FILE",
                   help="host keys are checked against it (default ~/.ssh/known_hosts)")
    i.add_argument("-o", "--output", metavar="PLAN",
                   help="write the plan here (several apps: PLAN-APP.plan each); default: standard output")
    i.add_argument("--app", metavar="NAME", help="only this app, when the host runs several")
    i.add_argument("--presync-above", metavar="SIZE",
                   help="pre-sync dirs at least this big while the app runs (default 1G)")
    i.set_defaults(handler=_init)
    return p


def _add_connection_options(command: argparse.ArgumentParser) -> None:
    """The options of every command that connects to the plan's hosts and logs what it does."""
    command.add_argument("--log-format", choices=("console", "json"), default=None,
                         help="log format on stderr (default: console on a terminal, json otherwise)")
    command.add_argument("--accept-new-host-keys", action="store_true",
                         help="trust and record SSH host keys not yet in known_hosts (changed keys are still refused)")


def _init(args) -> int:
    from mdsl.init.command import init_command

    return init_command(args)


# ---------------------------------------------------------------- output helpers


def _err(message: str) -> None:
    sys.stderr.write(f"mdsl: {message}\n")


def _out(text: str) -> None:
    sys.stdout.write(text)


def _forgiving_streams() -> None:
    """Never die on a character the terminal's encoding lacks."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError, OSError):
            pass


# ---------------------------------------------------------------- check


def _check(args) -> int:
    from mdsl import render
    from mdsl.check import check_plan
    from mdsl.findings import PlanError, Severity
    from mdsl.syntax.parser import parse_bytes, parse_file

    sources = render.Sources()
    findings = []
    unusable = False
    seen = set()
    for path in args.plans:
        if path in seen:
            continue
        seen.add(path)
        try:
            if path == "-":
                data = sys.stdin.buffer.read() if sys.stdin is not None else b""
                path = "<stdin>"
                sources.add(path, data)
                plan = parse_bytes(data, path)
            else:
                plan = parse_file(path)
        except PlanError as exc:
            unusable = True
            batch = exc.findings
        else:
            batch = check_plan(plan, rollback=args.rollback).findings
        batch = sorted(batch, key=lambda f: (f.span.line, f.span.col, f.code))
        findings.extend(batch)
    if any(f.severity == Severity.ERROR and f.code.startswith("E") for f in findings):
        unusable = True

    color = args.color == "always" or (args.color == "auto" and render.use_color(sys.stdout))
    _out(render.render(findings, args.format, sources, color=color,
                       version=_version() if args.format == "sarif" else "0"))
    if unusable:
        return EXIT_UNUSABLE
    threshold = Severity.parse(args.fail_on)
    return EXIT_FINDINGS if any(f.severity >= threshold for f in findings) else EXIT_OK


# ---------------------------------------------------------------- explain


def _explain(args) -> int:
    from mdsl.check import catalog

    rules = list(catalog.RULES)
    codes = [r.code for r in rules]
    if args.code is None:
        width = max((len(c) for c in codes), default=4)
        for r in rules:
            _out(f"{r.code:<{width}}  {r.severity.label:<7}  {r.title}\n")
        from mdsl.apps import profile as app_profiles

        _out("\nrun `mdsl explain CODE` for a code's page, `mdsl explain APP` for an app's profile ("
             + ", ".join(app_profiles.names()) + ")\n")
        return EXIT_OK
    code = args.code.strip().upper()
    if code not in codes:
        from mdsl.apps import page as app_page, profile as app_profiles

        prof = app_profiles.load(args.code.strip().lower())
        if prof is not None:  # `mdsl explain mastodon`: the app's profile, each fact with its source
            _out(app_page.page(prof))
            return EXIT_OK
        import difflib

        from mdsl.render import safe

        close = difflib.get_close_matches(code, codes, n=3, cutoff=0.5) or difflib.get_close_matches(
            args.code.strip().lower(), app_profiles.names(), n=1, cutoff=0.6)
        _err(f"unknown finding code `{safe(args.code)}`")
        if close:
            names = [f"`{c}`" for c in close]
            words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
            sys.stderr.write(f"  help: did you mean {words}?\n")
        sys.stderr.write("  help: `mdsl explain` lists every code\n")
        return EXIT_UNUSABLE
    page = catalog.page(code)
    _out(page if page.endswith("\n") else page + "\n")
    return EXIT_OK


# ---------------------------------------------------------------- fmt


def _fmt(args) -> int:
    from mdsl import render
    from mdsl.findings import PlanError
    from mdsl.syntax.format import format_plan
    from mdsl.syntax.parser import parse_bytes

    status = EXIT_OK
    sources = render.Sources()
    problems = []
    for path in args.plans:
        from_stdin = path == "-"
        name = "<stdin>" if from_stdin else path
        try:
            if from_stdin:
                data = sys.stdin.buffer.read() if sys.stdin is not None else b""
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
        except OSError as exc:
            _err(f"cannot read {render.safe(path)}: {exc.strerror}")
            status = EXIT_UNUSABLE
            continue
        try:
            plan = parse_bytes(data, name)
        except PlanError as exc:
            problems.extend(exc.findings)
            sources.add(name, data)
            status = EXIT_UNUSABLE
            continue
        original = data.decode("utf-8")  # it parsed, so it decodes
        formatted = format_plan(plan, original[1:] if original.startswith("\ufeff") else original)
        if from_stdin and not (args.check or args.diff):
            _out(formatted)  # a filter, for editors: plan in, formatted plan out
            continue
        if formatted == original:
            continue
        if args.diff:
            import difflib

            _out("".join(difflib.unified_diff(original.splitlines(True), formatted.splitlines(True),
                                              fromfile=name, tofile=name)))
            status = max(status, EXIT_FINDINGS)
        elif args.check:
            _out(f"would reformat {render.safe(name)}\n")
            status = max(status, EXIT_FINDINGS)
        else:
            _write_atomically(path, formatted)
            _out(f"reformatted {render.safe(path)}\n")
    if problems:
        sys.stderr.write(render.render_text(problems, sources, color=render.use_color(sys.stderr)))
    return status


def _write_atomically(path: str, text: str) -> None:
    """Replace `path` with `text` so a crash never leaves half a plan; keep its mode."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=".mdsl-fmt-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- graph


def _graph(args) -> int:
    from mdsl import render
    from mdsl.check.graph import render_graph
    from mdsl.check.resolve import resolve
    from mdsl.findings import PlanError, Severity
    from mdsl.syntax.parser import parse_file

    try:
        plan = parse_file(args.plan)
    except PlanError as exc:
        _out(render.render_text(exc.findings, render.Sources(), color=False))
        return EXIT_UNUSABLE
    bound = resolve(plan)
    errors = [f for f in bound.findings if f.severity == Severity.ERROR]
    if errors:
        _out(render.render_text(errors, render.Sources(), color=False))
        return EXIT_UNUSABLE
    _out(render_graph(bound, args.format))
    return EXIT_OK


# ---------------------------------------------------------------- plan / apply / status


def _runner(name: str):
    """A handler that imports the runner only when this command runs."""

    def handler(args) -> int:
        from mdsl.run import commands

        return getattr(commands, f"{name}_command")(args)

    handler.__name__ = f"_{name}"
    return handler


# ---------------------------------------------------------------- main


def _parse(argv: Optional[Sequence[str]]):
    """The parsed arguments, or the exit status when there is nothing to run (--help, --version, an error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_UNUSABLE
    if args.version:
        _out(f"mdsl {_version()}\n")
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_UNUSABLE
    return args


def _internal_error(exc: BaseException, command: Optional[str]) -> int:
    """One redacted line on stderr (the redacted traceback with MDSL_DEBUG=1); for apply, also a log event.

    Once apply has read secrets (mdsl.run.log knows them), neither the message nor the traceback
    shows one, chained exceptions included. With `apply --log-format json` the event carries the
    traceback as data (no locals), redacted by the log's processors, so a log collector keeps it.
    """
    from mdsl.run import log

    during = f" during `mdsl {command}`" if command else ""
    _err(f"internal error{during}: {log.format_exception(exc, False)}")
    if command == "apply" and log.log_format() == "json":
        try:
            log.get_logger().error("apply.internal_error", exc_info=exc)
        except Exception:  # noqa: BLE001 - the report must not fail in turn
            pass
    sys.stderr.write("This is a bug in mdsl, not in your plan. Please report it with the plan that caused it.\n")
    if command == "apply":
        sys.stderr.write("The journal keeps every finished step: `mdsl apply` resumes after the last one.\n")
    if os.environ.get("MDSL_DEBUG"):
        sys.stderr.write(log.format_exception(exc, True))
    else:
        sys.stderr.write("Set MDSL_DEBUG=1 to see where it happened.\n")
    return EXIT_UNUSABLE


def _quiet_stdout() -> None:
    """The reader went away (`mdsl plan P | head`): what is still buffered goes nowhere, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    """Run `mdsl` with `argv` (default: sys.argv[1:]); returns the exit status, never raises."""
    _forgiving_streams()
    args = None
    try:
        args = _parse(argv)
        if isinstance(args, int):
            return args
        code = args.handler(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_FINDINGS
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_UNUSABLE
    except ModuleNotFoundError as exc:
        if (exc.name or "mdsl").split(".")[0] == "mdsl":
            return _internal_error(exc, getattr(args, "command", None))
        _err(f"`mdsl {getattr(args, 'command', '')}` needs the Python package `{exc.name}`, which is not installed")
        return EXIT_UNUSABLE
    except Exception as exc:  # the promise: no traceback for any input
        return _internal_error(exc, getattr(args, "command", None))
