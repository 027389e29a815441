"""How a copy between two SSH hosts reaches the target: the route, chosen per copy (`route = ...`).

rsync and scp between two SSH hosts run on the source and log in to the target
from there. The control machine's identity file and known_hosts are not on the
source, so mdsl arranges the source's access for the run (mdsl/run/routes.py):

- `direct`: the source connects to the target's address with a key pair made
  for this copy (private half in a 0600 file on the source, public half in the
  target's authorized_keys with `restrict`), checking the target's host key
  against a known_hosts holding the key the control machine already trusts.
- `relay`: the same key and host key, through a tunnel the control machine
  opens (`ssh -R` to the source, forwarding to the target's sshd): for a
  target the source cannot reach. rsync still runs end to end (delta, --delete).
- `agent`: the control's ssh-agent forwarded to the source (only when the
  plan asks: the source's root could use the agent while the copy runs).
- `auto` (the default): direct when preflight finds that the source reaches
  the target, else relay (bench/routes.py: direct is the faster of the two).

The commands compiled here name the target `mdsl-route-target` and read an
ssh_config the run writes on the source, in the directory `$MDSL_ROUTE_DIR`
(set by the run for that command only): HostName, Port, User, IdentityFile,
UserKnownHostsFile, HostKeyAlias. So the compiled text, its fingerprint and
`mdsl plan` are the same whatever route preflight picks.
"""

from __future__ import annotations

from attrs import frozen

from mdsl.model import Host

ROUTES = ("auto", "direct", "relay", "agent")
ROUTE_DIR_VAR = "MDSL_ROUTE_DIR"
TARGET_ALIAS = "mdsl-route-target"


@frozen
class Route:
    """A copy between two SSH hosts: the source logs in to the target on `mode`."""

    source: str
    target: str
    mode: str = "auto"

    def describe(self) -> str:
        """A line for `mdsl plan`."""
        how = {
            "auto": "direct if the source reaches the target's address, else relayed through this machine",
            "direct": "the source connects to the target's address",
            "relay": "through a tunnel from this machine (ssh -R to the source, forwarding to the target's sshd)",
            "agent": "the source connects to the target's address with this machine's ssh-agent forwarded",
        }[self.mode]
        return (f"[route] {self.source} -> {self.target}: route = {self.mode} ({how}); a key pair for this copy "
                f"only, the target's host key as this machine knows it; both removed afterwards")


def needs_route(source: Host, target: Host) -> bool:
    """A copy between two hosts both reached over SSH: the source logs in to the target."""
    return not source.local and not target.local


def route_ssh() -> str:
    """The ssh command (shell text, expanded by the source's shell) reaching the target on the route."""
    return f'ssh -F "${ROUTE_DIR_VAR}/config"'


def rsync_rsh() -> str:
    """rsync's `--rsh` option for the route (one shell word; rsync splits it, the dir has no blanks)."""
    return f'--rsh="ssh -F ${ROUTE_DIR_VAR}/config"'


def route_remote(path: str) -> str:
    """`mdsl-route-target:PATH` for rsync/scp (the user, address and port are in the route's config)."""
    return f"{TARGET_ALIAS}:{path}"
