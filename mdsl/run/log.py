"""structlog, configured once per apply: stderr, console on a TTY, JSON with `--log-format json`.

Context (plan, step, host) is bound with contextvars; a parallel block's
threads get a copy of it (`contextvars.copy_context().run`). Every event
passes through `redact` before rendering, which replaces the value of every
secret read so far with `***`. Tracebacks never show locals.
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
    """structlog processor: secret values out of every field."""
    return {k: _redact_value(v) for k, v in event_dict.items()}


_configured = False


def configure(log_format: Optional[str] = None, level: Optional[str] = None) -> None:
    """Set structlog up (idempotent): console on a TTY, else JSON (`log_format` decides when given).

    Console shows warnings and errors (the narrative on stdout says the rest);
    JSON carries info and up, for machines. MDSL_LOG_LEVEL overrides both.
    """
    global _configured
    import structlog

    fmt = log_format or ("console" if sys.stderr.isatty() else "json")
    lvl_name = (level or os.environ.get("MDSL_LOG_LEVEL") or ("info" if fmt == "json" else "warning")).upper()
    lvl = getattr(logging, lvl_name, logging.INFO)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    if fmt == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


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
