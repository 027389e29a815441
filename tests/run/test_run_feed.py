"""A `Feed` action (an app's login made by a restore): a script on a command's stdin, secrets revealed only
there, followed by what a command on another host printed."""

from __future__ import annotations

import pytest

from mdsl.compile.actions import Feed
from mdsl.compile.parts import Arg, Command, Lit, SecretArg, SecretText
from mdsl.model import Host
from mdsl.run.errors import StepFailed
from mdsl.run.executor import Executor
from mdsl.run.local import LocalBackend
from mdsl.run.secrets import SecretStore
from mdsl.run.steps import Stats, StepRunner
from mdsl.syntax import ast as A

SECRET = A.Secret("env", "MDSL_TEST_FEED")


def _runner(tmp_path):
    backends = {name: LocalBackend(Host(name, local=True)) for name in ("old", "new")}
    executor = Executor(backends, SecretStore(environ={"MDSL_TEST_FEED": "hunter2"}, base_dir=str(tmp_path)))
    return StepRunner(executor, {}, None, None, None, {}, Stats())


def test_the_script_then_what_the_source_printed(tmp_path):
    out = tmp_path / "fed"
    script = SecretText((Lit("CREATE USER u IDENTIFIED BY "), SecretArg(SECRET), Lit(";\n")))
    feed = Feed(Command("new", (Lit("cat >"), Arg(str(out))), stdin=script), "make u",
                Command("old", (Lit("printf 'GRANT a;\\nGRANT b;\\n'"),)))
    _runner(tmp_path)._perform(feed, {}, [])
    assert out.read_text() == "CREATE USER u IDENTIFIED BY hunter2;\nGRANT a;\nGRANT b;\n"
    assert "hunter2" not in "\n".join(feed.describe()) and "IDENTIFIED BY ***" in "\n".join(feed.describe())


def test_a_failing_source_feeds_nothing(tmp_path):
    out = tmp_path / "fed"
    feed = Feed(Command("new", (Lit("cat >"), Arg(str(out)))), "make u",
                Command("old", (Lit("echo 'access denied' >&2; exit 1"),)))
    with pytest.raises(StepFailed, match="make u: exit status 1"):
        _runner(tmp_path)._perform(feed, {}, [])
    assert not out.exists()


def test_a_source_that_prints_too_much_is_refused(tmp_path):
    feed = Feed(Command("new", (Lit("cat >/dev/null"),)), "make u", Command("old", (Lit("head -c 2000 /dev/zero"),)),
                limit=1000)
    with pytest.raises(StepFailed, match="printed more than 1000 bytes"):
        _runner(tmp_path)._perform(feed, {}, [])
