"""Copies between two SSH hosts compile to rsync/scp reading the route's ssh_config (issue 11), never the
control machine's identity file or known_hosts, which the source host does not have."""

from __future__ import annotations

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import CopyArtifact, Shell
from mdsl.compile.parts import CompileError
from mdsl.compile.routes import Route
from mdsl.syntax.parser import parse_text

HOSTS = """
host a { ssh = "root@10.0.0.1"  identity = "/home/me/.ssh/control_key"  known_hosts = "/home/me/kh" }
host b { ssh = "deploy@10.0.0.2"  port = 2222  identity = "/home/me/.ssh/control_key"  known_hosts = "/home/me/kh" }
host here { local = true }
dir old on a { path = "/srv/old" }
dir new on b { path = "/srv/new"  owner = "git:git" }
dir mine on here { path = "/srv/mine"  owner = "git:git" }
file blob on a { path = "/srv/blob.bin" }
"""


def compiled(steps: str):
    bound = resolve(parse_text(HOSTS + "steps {\n" + steps + "\n}\n", "routes.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def actions(cp):
    return [a for s in cp.leaves() for a in s.actions]


def test_sync_between_two_ssh_hosts_reads_the_routes_config():
    (sync,) = actions(compiled("  sync old to new"))
    assert isinstance(sync, Shell) and sync.route == Route("a", "b", "auto")
    text = sync.command.render()
    assert '--rsh="ssh -F $MDSL_ROUTE_DIR/config"' in text
    assert "mdsl-route-target:/srv/new/" in text
    assert "control_key" not in text and "/home/me/kh" not in text
    assert sync.command.host == "a"  # the source pushes
    assert "[route] a -> b: route = auto" in sync.describe()[0]


def test_live_pass_marks_through_the_route_too():
    live, final = actions(compiled("  sync old to new live\n  sync old to new"))
    text = live.command.render()
    assert text.count('ssh -F "$MDSL_ROUTE_DIR/config"') == 1 and "control_key" not in text
    assert final.route == live.route


@pytest.mark.parametrize("via", ["rsync", "scp"])
def test_transfer_via_rsync_or_scp_takes_the_route(via):
    (copy,) = actions(compiled(f'  transfer blob to b:"/srv/blob.bin" via = {via} route = relay'))
    assert isinstance(copy, CopyArtifact) and copy.route == Route("a", "b", "relay")
    text = copy.push.render()
    assert "mdsl-route-target:/srv/blob.bin.part" in text and "control_key" not in text
    assert any("route = relay" in line for line in copy.describe())


def test_a_local_end_needs_no_route():
    (sync,) = actions(compiled("  sync old to mine"))
    assert sync.route is None and "control_key" in sync.command.render()  # this machine has its own key


def test_route_on_a_copy_with_a_local_end_is_refused():
    with pytest.raises(CompileError, match="two SSH hosts"):
        compiled("  sync old to mine route = relay")


def test_route_on_a_streamed_transfer_is_refused():
    with pytest.raises(CompileError, match="via = rsync"):
        compiled('  transfer blob to b:"/srv/x" route = direct')


def test_an_unknown_route_is_e106():
    bound = resolve(parse_text(HOSTS + "steps {\n  sync old to new route = sideways\n}\n", "routes.plan"))
    assert any(f.code == "E106" and "auto, direct, relay, agent" in f.message for f in bound.findings)
