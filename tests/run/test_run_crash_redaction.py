"""An internal error during apply whose message or traceback holds a secret shows it redacted:
on the console, with MDSL_DEBUG=1's traceback, in the JSON log (which carries the traceback as
data, without frame locals), and for an exception escaping a worker thread.

The error is injected in-process: preflight raises, after apply has read the plan's secrets,
an exception quoting one (chained to another that quotes it too).
"""

from __future__ import annotations

import json
import threading

import pytest
import structlog

from mdsl import cli
from mdsl.run import apply as apply_mod
from mdsl.run import log

SECRET = "s3cret-Crash-7f1d"


def _plan(tmp_path):
    plan = tmp_path / "crash.plan"
    plan.write_text('host a { local = true  sudo = true  sudo_password = env("MDSL_TEST_CRASH_PW") }\n'
                    f'steps {{\n  run a "touch {tmp_path}/ran"\n}}\n')
    return plan


def _boom(self, compiled, needs=None):
    try:
        raise KeyError(f"inner detail {SECRET}")
    except KeyError as exc:
        raise RuntimeError(f"could not frob the host with {SECRET}") from exc


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "MDSL_DEBUG"])
@pytest.mark.parametrize("fmt", ["console", "json"])
def test_an_internal_error_quoting_a_secret_is_redacted_everywhere(tmp_path, monkeypatch, capsys, fmt, debug):
    monkeypatch.setenv("MDSL_TEST_CRASH_PW", SECRET)
    if debug:
        monkeypatch.setenv("MDSL_DEBUG", "1")
    else:
        monkeypatch.delenv("MDSL_DEBUG", raising=False)
    monkeypatch.setattr(apply_mod.Apply, "_preflight", _boom)
    plan = _plan(tmp_path)
    code = cli.main(["apply", "--yes", "--log-format", fmt, str(plan)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert SECRET not in out + err
    assert "internal error during `mdsl apply`: RuntimeError: could not frob the host with ***" in err, err
    assert not (tmp_path / "ran").exists()
    if debug:
        assert "Traceback (most recent call last)" in err and "inner detail ***" in err, err
        assert "_boom" in err  # the real traceback, only redacted
    else:
        assert "Traceback" not in err and "MDSL_DEBUG=1" in err
    assert "`mdsl apply` resumes" in err
    events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    if fmt == "json":
        crash = [e for e in events if e.get("event") == "apply.internal_error"]
        assert len(crash) == 1, events
        text = json.dumps(crash[0])
        assert "could not frob the host with ***" in text and "inner detail ***" in text
        frames = [f for exc in crash[0]["exception"] for f in exc["frames"]]
        assert frames and not any("locals" in f for f in frames)  # a frame's locals could hold the secret
    else:
        assert not events


def test_the_cli_redacts_an_error_that_escapes_the_subcommand(tmp_path, monkeypatch, capsys):
    """The outermost handler too (mdsl.cli), once apply has taught the log its secrets."""
    monkeypatch.setenv("MDSL_DEBUG", "1")
    log.add_secret(SECRET)

    def handler(args):
        raise ValueError(f"escaped with {SECRET}")

    monkeypatch.setattr(cli, "_runner", lambda name: handler)
    code = cli.main(["status", str(tmp_path / "x.plan")])
    err = capsys.readouterr().err
    assert code == 2 and "escaped with ***" in err and "Traceback" in err, err
    assert SECRET not in err


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "MDSL_DEBUG"])
def test_an_exception_escaping_a_worker_thread_is_redacted(monkeypatch, capsys, debug):
    if debug:
        monkeypatch.setenv("MDSL_DEBUG", "1")
    else:
        monkeypatch.delenv("MDSL_DEBUG", raising=False)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored afterwards
    log.add_secret(SECRET)
    log.install_thread_hook()

    def work():
        raise RuntimeError(f"worker saw {SECRET}")

    t = threading.Thread(target=work, name="mdsl-test-worker")
    t.start()
    t.join()
    err = capsys.readouterr().err
    assert "internal error in thread mdsl-test-worker" in err and "worker saw ***" in err, err
    assert SECRET not in err
    assert ("Traceback (most recent call last)" in err) == debug
