"""What a route leaves on its hosts is journaled, replayed, and removed by exactly its marker or path."""

from __future__ import annotations

import os

from mdsl.model import Host
from mdsl.run import journal as J
from mdsl.run.executor import Executor
from mdsl.run.local import LocalBackend
from mdsl.run.routes import remove_dir, remove_key
from mdsl.run.secrets import SecretStore


def test_route_records_replay_until_removed_and_survive_restart(tmp_path):
    path = str(tmp_path / "j.jsonl")
    j = J.Journal(path)
    j.route_placed("b", "key", "mdsl-route:0123456789abcdef")
    j.route_placed("a", "dir", "/tmp/mdsl-route.AbCd1234")
    j.route_placed("a", "dir", "/tmp/mdsl-route.Other567")
    j.route_removed("a", "dir", "/tmp/mdsl-route.Other567")
    j.reset()  # --restart forgets steps, not what is left on the hosts
    j.close()
    st = J.read_journal(path)
    assert set(st.routes) == {("b", "key", "mdsl-route:0123456789abcdef"), ("a", "dir", "/tmp/mdsl-route.AbCd1234")}


HERE = Host("here", local=True)


def _executor():
    return Executor({"here": LocalBackend(Host("here", local=True))}, SecretStore())


def test_remove_key_removes_only_the_marked_line_and_keeps_the_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.parent.mkdir()
    keys.write_text("ssh-ed25519 AAAA1 admin\nrestrict ssh-ed25519 AAAA2 mdsl-route:0123456789abcdef\n"
                    "ssh-ed25519 AAAA3 other\n")
    keys.chmod(0o600)
    assert remove_key(_executor(), "here", "mdsl-route:0123456789abcdef")
    assert keys.read_text() == "ssh-ed25519 AAAA1 admin\nssh-ed25519 AAAA3 other\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path / ".ssh") == ["authorized_keys"]  # no temp file left
    # the last line going leaves an empty file, not an error
    keys.write_text("restrict ssh-ed25519 AAAA2 mdsl-route:0123456789abcdef\n")
    assert remove_key(_executor(), "here", "mdsl-route:0123456789abcdef") and keys.read_text() == ""


def test_removal_refuses_what_is_not_of_the_routes_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    victim = tmp_path / "keep"
    victim.mkdir()
    assert not remove_dir(_executor(), HERE, str(victim))
    assert not remove_key(_executor(), "here", "ssh-ed25519")  # would remove every key
    assert victim.exists()
    made = tmp_path / "mdsl-route.AbCd1234"
    made.mkdir()
    (made / "key").write_text("x")
    assert remove_dir(_executor(), HERE, str(made)) and not made.exists()
    assert os.listdir(tmp_path) == ["keep"]
