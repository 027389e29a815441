"""What runs leave on hosts beyond their commands, as the journal records it (mdsl.run.journal): a
host-to-host copy's route pieces, a `replicate ... live`'s objects. Removed by mdsl.run.leftovers."""

from __future__ import annotations

from typing import Tuple

from attrs import frozen


@frozen
class RouteLeftover:
    """What a host-to-host copy's route put on a host for the run (mdsl.run.routes): removed afterwards.

    `kind` "dir": the route's directory on the source (its key pair, known_hosts, ssh_config), `value`
    its path; "key": the line in the target's ~/.ssh/authorized_keys, `value` the marker it carries.
    """

    host: str
    kind: str
    value: str


@frozen
class ReplicationLeftover:
    """What a `replicate ... live` made on its servers (mdsl.compile.actions.ReplicationObjects), until its
    final pass removed it: `cleanup`, the commands that remove it, as JSON (mdsl.run.command_json)."""

    name: str
    cleanup: Tuple[dict, ...]

    @property
    def hosts(self) -> Tuple[str, ...]:
        """The hosts its clean-up runs on."""
        return tuple(dict.fromkeys(str(c.get("host")) for c in self.cleanup))
