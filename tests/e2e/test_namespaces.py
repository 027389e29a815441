"""The e2e hosts share nothing: what one host writes is invisible to the other and to the control machine."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from namespaces import _control_paths

PRIVATE = ("/tmp", "/root", "/home", "/srv", "/var/lib", "/etc/ssh")


def _sh(ssh_hosts, host, script: str) -> str:
    return ssh_hosts.ssh(host, script).stdout


def test_a_file_written_on_one_host_is_invisible_elsewhere(ssh_hosts):
    a, b = ssh_hosts.a, ssh_hosts.b
    name = "mdsl-isolation-probe"
    paths = [f"{d}/{name}" for d in PRIVATE]
    before = {p: Path(p).exists() for p in paths}
    assert not any(before.values()), before
    _sh(ssh_hosts, a, "; ".join(f"echo a > {shlex.quote(p)}" for p in paths))
    # host a sees its own files; b and the control machine see none of them
    assert _sh(ssh_hosts, a, "cat " + " ".join(map(shlex.quote, paths))) == "a\n" * len(paths)
    each = " ".join(map(shlex.quote, paths))
    seen_on_b = _sh(ssh_hosts, b, f'for p in {each}; do test -e "$p" && echo "$p"; done; true')
    assert seen_on_b == ""
    assert [p for p in paths if Path(p).exists()] == []
    # the test reads host a's files where its namespace keeps them
    assert all(a.path(p).read_text() == "a\n" for p in paths)
    assert not any(b.path(p).exists() for p in paths)


def test_host_roots_and_control_keys_are_hidden(ssh_hosts):
    a, b = ssh_hosts.a, ssh_hosts.b
    (a.root / "only-a").write_text("a")
    assert _sh(ssh_hosts, a, f"cat {shlex.quote(str(a.root / 'only-a'))}") == "a"
    # b cannot see a's root, nor the control machine's client key, known_hosts or ssh_config
    hidden = [a.root / "only-a", ssh_hosts.client_key, ssh_hosts.known_hosts, ssh_hosts.ssh_config, a.confdir]
    quoted = " ".join(shlex.quote(str(p)) for p in hidden)
    assert _sh(ssh_hosts, b, f'for p in {quoted}; do test -e "$p" && echo "$p"; done; true') == ""
    assert _sh(ssh_hosts, a, f"test -e {shlex.quote(str(ssh_hosts.client_key))} && echo visible; true") == ""
    # the interpreter the tests start services with is there, read-only, though pyenv keeps it in /root
    assert _sh(ssh_hosts, a, f"{shlex.quote(sys.executable)} -c 'print(1)'") == "1\n"
    # each host has a name of its own
    assert _sh(ssh_hosts, a, "hostname").strip() == a.name
    assert _sh(ssh_hosts, b, "hostname").strip() == b.name


def test_reset_keeps_hosts_working(ssh_hosts):
    """Emptying a host's private dirs between tests must not detach its view of the base dir."""
    a = ssh_hosts.a
    ssh_hosts.reset()
    (a.root / "after-reset").write_text("x")
    assert _sh(ssh_hosts, a, f"cat {shlex.quote(str(a.root / 'after-reset'))}") == "x"
    # the host's /tmp was emptied, but for the mount point of the e2e base dir (bound back for its sockets)
    # and those of the control's paths bound back (the checkout and its venv, when a CI clone is under /tmp)
    bound = {Path(p).relative_to("/tmp").parts[0] for p in _control_paths() if Path("/tmp") in Path(p).parents}
    assert sorted(_sh(ssh_hosts, a, "ls -A /tmp").split()) == sorted({ssh_hosts.base.name} | bound)
