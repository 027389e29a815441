"""Logs: secret values are redacted in every field before rendering."""

from __future__ import annotations

import io
import json

import structlog

from mdsl.run import log


def test_known_secret_values_are_redacted_from_events(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    log.configure("json", level="info")
    log.add_secret("hunter2-secret")
    log.bind(plan="p", step="3", host="db")
    log.get_logger().info("command.failed", stderr="psql: password hunter2-secret rejected",
                          extra=["x", "hunter2-secret"])
    log.clear()
    rec = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert rec["stderr"] == "psql: password *** rejected" and rec["extra"] == ["x", "***"]
    assert (rec["plan"], rec["step"], rec["host"]) == ("p", "3", "db")
    assert log.redact_text("a hunter2-secret b") == "a *** b"
    structlog.reset_defaults()
