"""What a compiled step does, as data: the runner interprets these, `mdsl plan` prints them.

Most actions are a shell `Command` on one host. A few are performed by the
runner itself because they span hosts or the control machine: copying an
artifact between hosts (`CopyArtifact`), an HTTP or DNS check, a manual gate.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from attrs import field, frozen

from mdsl.compile.parts import Arg, Command
from mdsl.compile.routes import Route


@frozen
class Location:
    """A path on a host."""

    host: str
    path: str

    def __str__(self) -> str:
        return f'{self.host}:"{self.path}"'


@frozen
class Artifact:
    """A file or directory a step produces, hashed into the journal after the step."""

    host: str
    path: str
    secret: bool = False  # a secret file's hash is not journaled, only its size

    @property
    def location(self) -> Location:
        """Where it is."""
        return Location(self.host, self.path)


@frozen
class Destination:
    """A place that receives data (for preflight: free disk P404, writable P407)."""

    host: str
    path: str
    run_as: Optional[str] = None  # the OS user that writes it; None = the connecting user
    size_of: Optional[Union[str, Location]] = None  # a resource name, or the location copied


@frozen
class Shell:
    """Run a command; a non-zero exit fails the step."""

    command: Command
    what: str
    timeout: Optional[float] = None
    watch: Optional[Location] = None  # a file whose growth shows progress (dump, archive)
    show_output: bool = False  # print its stdout in the narrative (`verify run`)
    # "rsync": its stdout is rsync's `--info=progress2 --stats` (progress shown, totals read: mdsl.run.rsync_meter)
    meter: str = ""
    between_hosts: bool = False  # what it moves goes from one declared host to another (the summary counts it)
    route: Optional[Route] = None  # a copy from one SSH host to another: how the source reaches the target

    def commands(self) -> Tuple[Command, ...]:
        """The commands, for display and fingerprints."""
        return (self.command,)

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        route = (self.route.describe(),) if self.route else ()
        return (*route, f"[{self.command.host}] $ {self.command.render(masked=True)}")


@frozen
class ReplicationObjects:
    """What a `replicate ... live` makes on its servers (a slot, a publication, a subscription; a MariaDB
    replication connection), by name, and the commands that remove them. The runner journals it before the
    action that makes them runs, so that the next apply removes them from the journal alone when the plan
    no longer has that replication (mdsl.run.leftovers)."""

    name: str
    cleanup: Tuple[Command, ...] = field(converter=tuple)


@frozen
class Feed:
    """Run `command` with a script on its stdin: its own `stdin` text (which may hold secrets), then what
    `source` printed, when there is one (a command on another host: the grants a login has there).

    The script is shown, secrets masked, in `mdsl plan` and in the step's fingerprint; what `source`
    prints is read when the step runs, and is not shown.
    """

    command: Command
    what: str
    source: Optional[Command] = None
    timeout: Optional[float] = None
    limit: int = 4 << 20  # bytes `source` may print: a script of statements, not data
    creates: Optional[ReplicationObjects] = None  # journaled before it runs (see ReplicationObjects)
    removes: str = ""  # the name of the ReplicationObjects this feed removes: journaled as gone once it ran

    def commands(self) -> Tuple[Command, ...]:
        """The commands, for display and fingerprints."""
        return tuple(c for c in (self.source, self.command) if c is not None)

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`: the commands, then the script fed to the last one."""
        lines = []
        if self.source is not None:
            lines.append(f"[{self.source.host}] $ {self.source.render(masked=True)}    "
                         f"# prints statements, fed to the command below after its script")
        lines.append(f"[{self.command.host}] $ {self.command.render(masked=True)} <<'EOF'")
        script = self.command.stdin.masked() if self.command.stdin is not None else ""
        lines += [f"  {line}" for line in script.splitlines()]
        if self.source is not None:
            lines.append(f"  -- what the command on {self.source.host} printed")
        lines.append("EOF")
        return tuple(lines)


@frozen
class Poll:
    """Run a command until it succeeds (`want_ok`) or fails, e.g. a service's status after start."""

    command: Command
    what: str
    want_ok: bool = True
    timeout: float = 60.0
    interval: float = 0.5

    def commands(self) -> Tuple[Command, ...]:
        """The commands, for display and fingerprints."""
        return (self.command,)

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        until = "succeeds" if self.want_ok else "fails"
        return (f"[{self.command.host}] $ {self.command.render(masked=True)}    "
                f"# repeated until it {until}, up to {self.timeout:g}s",)


@frozen
class CopyArtifact:
    """Copy a file (or directory) between hosts: to `PATH.part`, hash-verified, then renamed.

    `via = stream` is done by the runner through both backends (hashing in the
    same pass); `rsync`/`scp`/`tailscale` run `push` on the source host (or the
    control machine) and `pull` on the target, then the same verify-and-rename.
    """

    source: Location
    dest: Location
    via: str = "stream"
    verify: bool = True
    mode: Optional[str] = None  # applied to the destination after the rename
    owner: Optional[str] = None
    secret: bool = False
    dest_sudo: bool = False
    source_sudo: bool = False
    push: Optional[Command] = None
    pull: Optional[Command] = None
    timeout: Optional[float] = None
    route: Optional[Route] = None  # rsync/scp from one SSH host to another: how the source reaches the target

    def commands(self) -> Tuple[Command, ...]:
        """The external commands (rsync/scp/tailscale), for display and fingerprints."""
        return tuple(c for c in (self.push, self.pull) if c is not None)

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        part = self.dest.path + ".part"
        lines = []
        if self.via == "stream":
            lines.append(f"[{self.source.host}] $ cat < {Arg(self.source.path).render()}    "
                         f"# streamed to {self.dest.host}, sha256 computed in the same pass")
            lines.append(f"[{self.dest.host}] $ umask 077 && cat > {Arg(part).render()}")
        else:
            lines += [self.route.describe()] if self.route else []
            lines += [f"[{c.host}] $ {c.render(masked=True)}" for c in self.commands()]
        if self.verify:
            lines.append(f"[{self.dest.host}] $ sha256sum < {Arg(part).render()}    # must equal the source's")
        lines.append(f"[{self.dest.host}] $ mv -f -T -- {Arg(part).render()} {Arg(self.dest.path).render()}")
        if self.mode:
            lines.append(f"[{self.dest.host}] $ chmod {Arg(self.mode).render()} -- {Arg(self.dest.path).render()}")
        if self.owner:
            lines.append(f"[{self.dest.host}] $ chown {Arg(self.owner).render()} -- "
                         f"{Arg(self.dest.path).render()}")
        return tuple(lines)


@frozen
class HttpCheck:
    """GET a URL from the control machine; `address` (from `via = HOST`) overrides where it connects."""

    url: str
    status: int = 200
    contains: Optional[str] = None
    via: Optional[str] = None  # host name
    address: Optional[str] = None  # where to connect instead of what DNS says
    timeout: float = 30.0

    def commands(self) -> Tuple[Command, ...]:
        """No shell commands: done by the runner."""
        return ()

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        where = f" connecting to {self.via} ({self.address}) with the URL's Host header and SNI" if self.via else ""
        extra = f" and a body containing {self.contains!r}" if self.contains else ""
        return (f"[control] GET {self.url}{where}; expect status {self.status}{extra} "
                f"(retried up to {self.timeout:g}s)",)


@frozen
class DnsCheck:
    """Resolve a name on the control machine and compare with a host's address."""

    name: str
    host: str
    expected: Tuple[str, ...] = field(converter=tuple, default=())
    local: bool = False  # the host is this machine: any loopback or own address matches

    def commands(self) -> Tuple[Command, ...]:
        """No shell commands: done by the runner."""
        return ()

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        want = "this machine" if self.local else (", ".join(self.expected) or "?")
        return (f"[control] resolve {self.name!r}; expect {self.host} ({want})",)


@frozen
class Gate:
    """`confirm "message"`: wait for the operator (`--yes` answers it)."""

    message: str

    def commands(self) -> Tuple[Command, ...]:
        """No shell commands."""
        return ()

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        return (f"[operator] confirm: {self.message}",)


@frozen
class Tunnel:
    """Let `to_host` reach `address:port` as seen from `from_host` at 127.0.0.1:`listen` on `to_host`, through
    mdsl's SSH connections (a forward on `to_host`'s, a channel on `from_host`'s): a database server reaches
    another's port with no port opened to the network. Opened by the runner and kept for later steps
    (a replication lasts from its live pass to its final pass) until a `close` one, or the end of the run;
    opening one already open does nothing."""

    from_host: str
    address: str
    port: int
    to_host: str
    listen: int
    close: bool = False

    def commands(self) -> Tuple[Command, ...]:
        """No shell commands: done by the runner."""
        return ()

    def describe(self) -> Tuple[str, ...]:
        """Lines for `mdsl plan`."""
        if self.close:
            return (f"[control] close the tunnel {self.to_host}:127.0.0.1:{self.listen} -> "
                    f"{self.from_host}:{self.address}:{self.port}",)
        return (f"[control] tunnel {self.to_host}:127.0.0.1:{self.listen} -> {self.from_host}:{self.address}:"
                f"{self.port} through SSH (kept open until the final pass)",)


Action = Union[Shell, Feed, Poll, CopyArtifact, HttpCheck, DnsCheck, Gate, Tunnel]
