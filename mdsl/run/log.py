"""structlog, configured once per apply: stderr, console on a TTY, JSON with `--log-format json`.

Context (plan, step, host) is bound with contextvars; a parallel block's
threads get a copy of it (`contextvars.copy_context().run`). Every event
passes through `redact` before rendering, which replaces the value of every
secret read so far with `***`. An exception attached to an event is turned
into text (console) or a dict (JSON) *before* `redact`, so its message and
traceback are redacted too; tracebacks never show locals (a frame's locals
could hold a secret before it was known as one). `format_exception` and
`install_thread_hook` do the same for internal errors outside structlog.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Iterable, Optional, Set

MASK = "***"

_secrets: Set[str] = set()
_secrets_lock = threading.Lock()


def add_secret(value: str) -> None:
    """Remember a secret value so that no log line, error message or journal record shows it."""
    if value and len(value) >= 3:
        with _secrets_lock:
            _secrets.add(value)
            # Also what a command echoing it would show: its first line.
            first = value.splitlines()[0] if value.splitlines() else ""
            if len(first) >= 3:
                _secrets.add(first)


def clear_secrets() -> None:
    """Forget every remembered secret (end of an apply; tests)."""
    with _secrets_lock:
        _secrets.clear()


def redact_text(text: str) -> str:
    """`text` with every known secret value replaced by `***`."""
    if not text:
        return text
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for s in known:
        if s in text:
            text = text.replace(s, MASK)
    return text


def _redact_value(v):
    if isinstance(v, str):
        return redact_text(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_redact_value(i) for i in v)
    if isinstance(v, dict):
        return {k: _redact_value(i) for k, i in v.items()}
    return v


def redact(logger, method_name, event_dict):
    """structlog processor: secret values out of every field (nested lists and dicts too)."""
    return {k: _redact_value(v) for k, v in event_dict.items()}


def format_exception(exc: BaseException, with_traceback: bool) -> str:
    """`Type: message`, or the whole traceback (chained exceptions included), secrets redacted."""
    import traceback

    if with_traceback:
        return redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return redact_text(f"{type(exc).__name__}: {exc}")


def install_thread_hook() -> None:
    """Report an exception escaping a thread as one redacted line (traceback with MDSL_DEBUG), not Python's dump."""
    import threading as _threading

    def hook(args) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        text = format_exception(args.exc_value, bool(os.environ.get("MDSL_DEBUG")))
        try:
            sys.stderr.write(f"internal error in thread {name}: {text.rstrip()}\n")
        except (OSError, ValueError):
            pass

    _threading.excepthook = hook


_format: Optional[str] = None


def log_format() -> Optional[str]:
    """`console` or `json` once configured."""
    return _format


_configured = False


def configure(log_format: Optional[str] = None, level: Optional[str] = None) -> None:
    """Set structlog up (idempotent): console on a TTY, else JSON (`log_format` decides when given).

    Console shows warnings and errors (the narrative on stdout says the rest);
    JSON carries info and up, for machines. MDSL_LOG_LEVEL overrides both.
    """
    global _configured, _format
    import structlog
    from structlog.tracebacks import ExceptionDictTransformer

    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    lvl_name = (level or os.environ.get("MDSL_LOG_LEVEL") or ("info" if fmt == "json" else "warning")).upper()
    lvl = getattr(logging, lvl_name, logging.INFO)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Exceptions become data before `redact` sees the event, so their text is redacted too.
    if fmt == "json":
        processors += [structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
                       redact, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.processors.format_exc_info, redact,
                       structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True
    _format = fmt


def get_logger():
    """The mdsl logger (configured on first use if `configure` was not called)."""
    import structlog

    if not _configured:
        configure()
    return structlog.get_logger("mdsl")


def bind(**kv) -> None:
    """Bind context (plan, step, host) for this thread's events."""
    import structlog

    structlog.contextvars.bind_contextvars(**kv)


def unbind(*keys: Iterable[str]) -> None:
    """Drop context keys."""
    import structlog

    structlog.contextvars.unbind_contextvars(*keys)


def clear() -> None:
    """Drop all bound context."""
    import structlog

    structlog.contextvars.clear_contextvars()
