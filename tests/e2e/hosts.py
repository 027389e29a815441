"""Real parts for end-to-end tests: sshd daemons, PostgreSQL clusters, a writer service.

Plain Python (no pytest); conftest.py wraps these in fixtures.

Everything lives under one base directory made by `make_base_dir()` (mode
0755, so the `postgres` OS user can traverse it; pytest's own tmp dirs are
0700 under /tmp/pytest-of-root). Every process started here is recorded in
`REGISTRY` with its pid and kernel start time, and stopped by that pid.

Layout under the base directory:

    ssh/client_ed25519(.pub)   the one client key every host accepts
    ssh/known_hosts            [127.0.0.2]:PORT ssh-ed25519 ... per host
    ssh/ssh_config             usable with `ssh -F`; aliases a, b, ... and the addresses
    ssh/<addr>/                sshd_config, host key, sshd.pid, sshd.log per host
    hosts/<addr>/              the host's root: paths in plans must be under it,
                               because every "host" is this same machine
    pg/<name>/data, sock, postgres.log   one PostgreSQL cluster

Nothing is written outside the base directory except /run/sshd (sshd's
privilege separation directory, which sshd requires).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from namespaces import HostNamespace, empty_dir

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SSHD = Path("/usr/sbin/sshd")
WRITER_SCRIPT = Path(__file__).resolve().with_name("writer.py")
DEFAULT_ADDRESSES = ("127.0.0.2", "127.0.0.3")


# ---------------------------------------------------------------- processes


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _ppid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(root_pid: int) -> list[int]:
    """Every live descendant of root_pid, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    out: list[int] = []
    todo = list(children.get(root_pid, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass(frozen=True)
class ProcRef:
    """A process we started, identified by pid and start time (pids get reused)."""

    pid: int
    starttime: int
    label: str

    @classmethod
    def of(cls, pid: int, label: str) -> "ProcRef":
        st = _read_stat(pid)
        return cls(pid, st[1] if st else -1, label)

    def alive(self) -> bool:
        """True while the process runs; a zombie counts as gone (PID 1 here reaps slowly)."""
        st = _read_stat(self.pid)
        if st is None or st[1] != self.starttime:
            return False
        return st[0] not in ("Z", "X")

    def send(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.02)
        return not self.alive()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Send sig, wait, then SIGKILL and wait again."""
        self.send(sig)
        if not self.wait_gone(timeout):
            self.send(signal.SIGKILL)
            self.wait_gone(5.0)


class ProcessRegistry:
    """Every process the e2e infrastructure started, so a leak can be detected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[ProcRef] = []

    def record(self, pid: int, label: str) -> ProcRef:
        ref = ProcRef.of(pid, label)
        with self._lock:
            if ref not in self._procs:
                self._procs.append(ref)
        return ref

    def all(self) -> list[ProcRef]:
        with self._lock:
            return list(self._procs)

    def alive(self) -> list[ProcRef]:
        return [p for p in self.all() if p.alive()]

    def kill_all(self) -> list[ProcRef]:
        """SIGKILL every recorded process still alive; return those that were."""
        leaked = self.alive()
        for ref in leaked:
            ref.stop(signal.SIGKILL, timeout=5.0)
        return leaked


REGISTRY = ProcessRegistry()


def make_base_dir(prefix: str = "mdsl-e2e-") -> Path:
    """A fresh 0755 temp directory (traversable by the postgres user)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port currently free on address (loopback only)."""
    assert address.startswith("127."), address
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def wait_for_tcp(address: str, port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("stdin", subprocess.DEVNULL if "input" not in kw else None)
    return subprocess.run(argv, **kw)


# ---------------------------------------------------------------- ssh


def _keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at path; return the public key line."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


class SshHost:
    """One sshd daemon listening on one loopback address, standing in for one machine."""

    def __init__(self, name: str, address: str, confdir: Path, root: Path, authorized_keys: Path) -> None:
        self.name = name
        self.address = address
        self.user = "root"
        self.confdir = confdir
        self.root = root
        self.config_path = confdir / "sshd_config"
        self.host_key_path = confdir / "ssh_host_ed25519_key"
        self.pid_file = confdir / "sshd.pid"
        self.log_path = confdir / "sshd.log"
        # The host's TMPDIR (mdsl's 0600 secret files go there): inside the e2e base dir, so what
        # a killed apply could not remove is removed with the base dir, never left in /tmp.
        self.tmpdir = confdir / "tmp"
        self.authorized_keys = authorized_keys
        self.env: dict[str, str] = {}  # more variables for the host's sessions (DOCKER_HOST: dockerd.py)
        self.port: int = 0
        self._proc: subprocess.Popen | None = None
        self._ref: ProcRef | None = None
        self._orphans: list[ProcRef] = []
        confdir.mkdir(parents=True, exist_ok=True)
        self.host_public_key = _keygen(self.host_key_path, f"mdsl-e2e-host-{name}")
        self.reset_root()
        # a machine of its own: private /root /home /srv /var/lib /etc/ssh /tmp (namespaces.py); of the
        # base dir it sees its own root and sshd dir, never the control's keys or the other hosts' roots
        base = root.parent.parent
        self.namespace = HostNamespace(base, name, address)
        keep_files = ()
        if authorized_keys.parent == base / "ssh":
            keep_files = (str(authorized_keys.relative_to(base)),)
        (base / "ssh").mkdir(exist_ok=True)
        self.namespace.mask("ssh", keep=(str(confdir.relative_to(base)),), keep_files=keep_files)
        self.namespace.mask("hosts", keep=(str(root.relative_to(base)),))
        self.namespace.mask("ns")

    def path(self, host_path: str | Path) -> Path:
        """Where this machine (the control) reads the host's private `host_path` (/root, /tmp, /etc/ssh ...)."""
        return self.namespace.path(host_path)

    def in_namespace(self, argv: list[str]) -> list[str]:
        """argv run in the host's mount namespace (a mount the host must see is made there, not here)."""
        if not self.running:
            raise RuntimeError(f"host {self.name} is not running")
        return ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt", "--", *argv]

    # -- identity
    @property
    def known_hosts_line(self) -> str:
        keytype, key = self.host_public_key.split()[:2]
        return f"[{self.address}]:{self.port} {keytype} {key}"

    @property
    def ssh_target(self) -> str:
        return f"{self.user}@{self.address}"

    @property
    def pid(self) -> int | None:
        return self._ref.pid if self._ref and self._ref.alive() else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def reset_root(self) -> None:
        """Empty the host's root directory and put its marker file back."""
        # emptied, not removed: it is a mount point in the host's namespace
        if self.root.exists():
            empty_dir(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / ".mdsl-host").write_text(f"{self.name} {self.address}\n")

    # -- daemon
    def _write_config(self) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.tmpdir.chmod(0o1777)  # like /tmp: the sudo test user writes its secret files here too
        self.config_path.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}:{self.port}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.pid_file}",
                    # the shared client key, and the host's own ~/.ssh (where mdsl's run keys go)
                    f"AuthorizedKeysFile {self.authorized_keys} .ssh/authorized_keys",
                    "UsePAM no",
                    # keys live under /tmp (mode 1777), which StrictModes rejects
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    # bash skips ~/.bashrc (pyenv init, ~85 ms) for ssh commands when SHLVL>=2
                    f"SetEnv SHLVL=1 TMPDIR={self.tmpdir}" + "".join(f" {k}={v}" for k, v in self.env.items()),
                    "PrintMotd no",
                    "PrintLastLog no",
                    "X11Forwarding no",
                    "UseDNS no",
                    "MaxStartups 64:30:128",
                    "MaxSessions 64",
                    "LogLevel VERBOSE",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd (foreground -D, so it stays our child) and wait until it accepts TCP."""
        if self.running:
            return
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        last_log = ""
        for attempt in range(5):
            if not self.port or attempt:
                self.port = free_port(self.address)
            self._write_config()
            self.pid_file.unlink(missing_ok=True)
            setup_log = self.confdir / "namespace.log"  # what the namespace setup says if it fails
            with setup_log.open("w") as err:
                proc = subprocess.Popen(
                    self.namespace.wrap([str(SSHD), "-D", "-f", str(self.config_path), "-E", str(self.log_path)]),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            ref = REGISTRY.record(proc.pid, f"sshd {self.name} {self.address}")
            if wait_for_tcp(self.address, self.port, timeout, proc):
                self._proc, self._ref = proc, ref
                return
            ref.stop(timeout=2.0)
            proc.wait(timeout=5)
            last_log = self.log_path.read_text() if self.log_path.exists() else ""
            last_log += setup_log.read_text()
        raise RuntimeError(f"sshd for {self.address} did not start:\n{last_log}")

    def connection_pids(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the daemon)."""
        if not self.running:
            return []
        return [p for p in descendants(self._ref.pid) if _comm(p) == "sshd"]

    def kill_connections(self) -> int:
        """SIGKILL the per-connection sshd processes: the client sees a cut connection.

        Commands those connections were running are left alive, as on a real
        host whose network dropped; they are remembered and killed by stop()
        or reap_orphans(). Returns how many sshd processes were killed.
        """
        if not self.running:
            return 0
        conns: list[ProcRef] = []
        for pid in descendants(self._ref.pid):
            comm = _comm(pid)
            ref = REGISTRY.record(pid, f"{comm} under sshd {self.name}")
            (conns if comm == "sshd" else self._orphans).append(ref)
        for ref in conns:
            ref.send(signal.SIGKILL)
        for ref in conns:
            ref.wait_gone(3.0)
        return len(conns)

    def reap_orphans(self) -> None:
        """Stop commands left running by cut connections."""
        for ref in self._orphans:
            ref.stop(timeout=3.0)
        self._orphans.clear()

    def stop(self) -> None:
        """Stop the daemon and everything its connections run (the host goes down)."""
        if self._ref is not None:
            tree = [REGISTRY.record(p, f"{_comm(p)} under sshd {self.name}") for p in descendants(self._ref.pid)]
            self._ref.stop(signal.SIGTERM, timeout=5.0)
            # sshd's listener exits on SIGTERM but leaves open connections running
            for ref in tree:
                ref.send(signal.SIGKILL)
            for ref in tree:
                ref.wait_gone(3.0)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._proc = self._ref = None
        self.reap_orphans()

    def restart(self) -> None:
        """Stop and start again on the same port with the same host key."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        return f"SshHost({self.name!r}, {self.address}:{self.port}, root={str(self.root)!r})"


class SshCluster:
    """Several SshHosts (one sshd each) sharing a client key, known_hosts and ssh_config."""

    def __init__(self, base: Path, addresses: tuple[str, ...] = DEFAULT_ADDRESSES, names: tuple[str, ...] | None = None) -> None:
        self.base = Path(base)
        self.sshdir = self.base / "ssh"
        self.sshdir.mkdir(parents=True, exist_ok=True)
        self.sshdir.chmod(0o755)
        self.client_key = self.sshdir / "client_ed25519"
        self.client_public_key = _keygen(self.client_key, "mdsl-e2e-client")
        self.authorized_keys = self.sshdir / "authorized_keys"
        self.authorized_keys.write_text(self.client_public_key + "\n")
        self.known_hosts = self.sshdir / "known_hosts"
        self.ssh_config = self.sshdir / "ssh_config"
        names = names or tuple("abcdefghijklmnopqrstuvwxyz"[: len(addresses)])
        self.hosts: list[SshHost] = [
            SshHost(name, addr, self.sshdir / addr, self.base / "hosts" / addr, self.authorized_keys)
            for name, addr in zip(names, addresses, strict=True)
        ]

    # -- access
    def __getitem__(self, key: str | int) -> SshHost:
        if isinstance(key, int):
            return self.hosts[key]
        for h in self.hosts:
            if key in (h.name, h.address):
                return h
        raise KeyError(key)

    def __iter__(self):
        return iter(self.hosts)

    @property
    def a(self) -> SshHost:
        return self.hosts[0]

    @property
    def b(self) -> SshHost:
        return self.hosts[1]

    @property
    def identity(self) -> Path:
        return self.client_key

    # -- lifecycle
    def start(self) -> "SshCluster":
        try:
            for h in self.hosts:
                h.start()
        except BaseException:
            self.stop()
            raise
        self.write_client_files()
        return self

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()

    def reset(self) -> None:
        """Between tests: hosts up (same ports), no connections or orphans, empty roots."""
        for h in self.hosts:
            if h.running:
                h.kill_connections()
                h.reap_orphans()
            else:
                h.start()
            h.reset_root()
            h.namespace.reset()
        self.write_client_files()

    def __enter__(self) -> "SshCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_client_files(self) -> None:
        """(Re)write known_hosts and ssh_config for the current ports."""
        self.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in self.hosts))
        blocks = []
        for h in self.hosts:
            blocks.append(
                f"Host {h.name} {h.address}\n"
                f"  HostName {h.address}\n"
                f"  Port {h.port}\n"
                f"  User {h.user}\n"
                f"  IdentityFile {self.client_key}\n"
                "  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n"
                "  GlobalKnownHostsFile /dev/null\n"
                "  StrictHostKeyChecking yes\n"
                "  UpdateHostKeys no\n"
                "  BatchMode yes\n"
                "  PasswordAuthentication no\n"
                "  ConnectTimeout 5\n"
                "  ControlMaster no\n"
                "  LogLevel ERROR\n"
            )
        self.ssh_config.write_text("\n".join(blocks))

    # -- helpers
    def ssh_argv(self, host: str | SshHost, command: str) -> list[str]:
        h = host if isinstance(host, SshHost) else self[host]
        return ["ssh", "-F", str(self.ssh_config), "-i", str(self.client_key), "-p", str(h.port), h.ssh_target, command]

    def ssh(self, host: str | SshHost, command: str, check: bool = True, timeout: float = 30.0, **kw) -> subprocess.CompletedProcess:
        """Run command on host through the ssh CLI (strict host key checking)."""
        return _run(self.ssh_argv(host, command), check=check, timeout=timeout, **kw)

    def rsh(self) -> str:
        """An `ssh` command line for rsync -e / RSYNC_RSH."""
        return f"ssh -F {shlex.quote(str(self.ssh_config))}"

    def paramiko_client(self, host: str | SshHost, known_hosts: Path | None = None):
        """A connected paramiko SSHClient that rejects unknown host keys."""
        import paramiko

        h = host if isinstance(host, SshHost) else self[host]
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            h.address,
            port=h.port,
            username=h.user,
            key_filename=str(self.client_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
        return client

    def plan_host_decl(self, host: str | SshHost, name: str | None = None, known_hosts: bool = True) -> str:
        """The `host` declaration a .plan needs to reach this host (with our known_hosts, not ~/.ssh's)."""
        h = host if isinstance(host, SshHost) else self[host]
        kh = f"  known_hosts = {plan_str(str(self.known_hosts))}" if known_hosts else ""
        return (f"host {name or h.name} {{ ssh = {plan_str(h.ssh_target)}  port = {h.port}  "
                f"identity = {plan_str(str(self.client_key))}{kh} }}")


# ---------------------------------------------------------------- postgres


@dataclass(frozen=True)
class TableSum:
    """Row count and md5 of a table's rows in a collation-independent order."""

    rows: int
    md5: str


def _require_traversable(path: Path) -> None:
    """The postgres user must be able to reach its data dir: every ancestor needs o+x."""
    for d in [path, *path.parents]:
        if not d.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"{d} is not traversable by the postgres user (mode {oct(stat.S_IMODE(d.stat().st_mode))}); "
                "put clusters under make_base_dir(), not pytest's 0700 tmp_path"
            )


def _chown_postgres(path: Path) -> None:
    shutil.chown(path, "postgres", "postgres")


DATASET_SQL = r"""
\set ON_ERROR_STOP 1
set timezone = 'UTC';
create table schema_migrations (version text primary key);
insert into schema_migrations
  select to_char(timestamp '2016-01-01' + i * interval '9 days', 'YYYYMMDDHH24MISS')
  from generate_series(1, 60) i;

create table accounts (
  id           bigint generated by default as identity primary key,
  username     text not null unique,
  domain       text,
  display_name text not null default '',
  note         text not null default '',
  settings     jsonb not null default '{}',
  created_at   timestamptz not null,
  updated_at   timestamptz not null
);
insert into accounts (id, username, domain, display_name, note, settings, created_at, updated_at)
  select i, 'user' || i,
         case when i % 3 = 0 then 'remote' || (i % 17) || '.example' end,
         'Ünïcødé user ' || i || ' ☕',
         repeat(md5(i::text), 1 + i % 4),
         jsonb_build_object('theme', case when i % 2 = 0 then 'dark' else 'light' end,
                            'langs', jsonb_build_array('en', 'de'), 'n', i),
         timestamptz '2019-03-01 00:00:00+00' + i * interval '3 hours 7 minutes',
         timestamptz '2023-06-01 00:00:00+00' + i * interval '1 minute'
  from generate_series(1, :accounts) i;

create table statuses (
  id             bigint generated by default as identity primary key,
  account_id     bigint not null references accounts (id),
  in_reply_to_id bigint references statuses (id),
  text           text not null,
  language       text,
  visibility     smallint not null default 0,
  sensitive      boolean not null default false,
  created_at     timestamptz not null,
  updated_at     timestamptz not null
);
insert into statuses (id, account_id, in_reply_to_id, text, language, visibility, sensitive, created_at, updated_at)
  select i, 1 + (i::bigint * 7919) % :accounts,  -- bigint: past 271,000 rows i * 7919 overflows int
         case when i % 7 = 0 then i - 1 - (i % 5) end,
         'Post ' || i || ': ' || md5(i::text) || ' — «naïve café» #tag' || (i % 50),
         (array['en', 'de', 'fr', null])[1 + i % 4],
         (i % 4)::smallint, i % 11 = 0,
         timestamptz '2020-01-01 00:00:00+00' + i * interval '17 minutes 3 seconds',
         timestamptz '2020-01-01 00:00:00+00' + i * interval '17 minutes 5 seconds'
  from generate_series(1, :statuses) i;
create index index_statuses_on_account_id_id on statuses (account_id, id desc);

create table media_attachments (
  id                bigint generated by default as identity primary key,
  status_id         bigint references statuses (id) on delete set null,
  account_id        bigint not null references accounts (id),
  file_file_name    text,
  file_content_type text,
  file_file_size    integer,
  file_meta         jsonb,
  shortcode         text unique,
  description       text,
  created_at        timestamptz not null,
  updated_at        timestamptz not null
);
insert into media_attachments (id, status_id, account_id, file_file_name, file_content_type, file_file_size,
                               file_meta, shortcode, description, created_at, updated_at)
  select i, case when i % 13 = 0 then null else 1 + (i * 5) % :statuses end,
         1 + (i * 31) % :accounts,
         md5(i::text) || '.png', 'image/png', 1000 + (i * 37) % 900000,
         jsonb_build_object('width', 100 + i % 1900, 'height', 100 + i % 1000,
                            'blurhash', left(md5((i * 3)::text), 20)),
         'sc' || md5((i * 2)::text), 'Image ' || i,
         timestamptz '2020-01-02 00:00:00+00' + i * interval '1 hour 1 second',
         timestamptz '2020-01-02 00:00:00+00' + i * interval '1 hour 2 seconds'
  from generate_series(1, :media) i;
create index index_media_attachments_on_status_id on media_attachments (status_id);

select setval(pg_get_serial_sequence('accounts', 'id'), :accounts);
select setval(pg_get_serial_sequence('statuses', 'id'), :statuses);
select setval(pg_get_serial_sequence('media_attachments', 'id'), :media);
analyze;
"""


class PgCluster:
    """One PostgreSQL 15 cluster (initdb as the postgres OS user) in its own directory."""

    def __init__(self, base: Path, name: str, *, listen: str = "127.0.0.1", port: int | None = None, bindir: Path = PG_BIN) -> None:
        self.name = name
        self.dir = Path(base) / "pg" / name
        self.datadir = self.dir / "data"
        self.sockdir = self.dir / "sock"
        self.logfile = self.dir / "postgres.log"
        self.listen = listen
        self.port = port or 0
        self.bindir = Path(bindir)
        # what the fixtures put in it: the application database, role and password
        self.db = "postgres"
        self.app_user: str | None = None
        self.app_password: str | None = None
        self.extra_conf = ""  # appended to the generated config, e.g. `wal_level = logical` for replication
        self._ref: ProcRef | None = None

    # -- creation
    def _make_dirs(self) -> None:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.parent.chmod(0o755)
        _require_traversable(self.dir.parent)
        self.dir.mkdir()
        self.dir.chmod(0o755)
        _chown_postgres(self.dir)
        self.sockdir.mkdir()
        self.sockdir.chmod(0o755)
        _chown_postgres(self.sockdir)

    def _as_postgres(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        # initdb and postgres refuse to run as root; cwd must be readable by postgres
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return _run(["runuser", "-u", "postgres", "--", *argv], cwd=str(self.dir), env=env, **kw)

    def initdb(self) -> "PgCluster":
        """Make a new, stopped cluster."""
        self._make_dirs()
        self._as_postgres(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
             "--no-locale", "-E", "UTF8", "--no-sync"]
        )
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\ninclude_if_exists = 'mdsl_test.conf'\n")
        return self

    def clone(self, base: Path, name: str, *, listen: str | None = None) -> "PgCluster":
        """A stopped copy of this (stopped) cluster, e.g. a pristine data set per test."""
        assert not self.running, "stop a cluster before cloning it"
        other = PgCluster(base, name, listen=listen or self.listen, bindir=self.bindir)
        other._make_dirs()
        _run(["cp", "-a", str(self.datadir), str(other.datadir)])
        other.db, other.app_user, other.app_password = self.db, self.app_user, self.app_password
        return other

    def _write_conf(self) -> None:
        addresses = sorted({self.listen, "127.0.0.1"})
        conf = f"""\
port = {self.port}
listen_addresses = '{self.listen}'
unix_socket_directories = '{self.sockdir}'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
max_wal_size = 1GB
# few WAL segments left after a checkpoint: clones copy less
min_wal_size = 32MB
wal_recycle = off
# keep dynamic shared memory in the data dir, not /dev/shm
dynamic_shared_memory_type = mmap
log_line_prefix = '%m [%p] %q%u@%d '
"""
        (self.datadir / "mdsl_test.conf").write_text(conf + self.extra_conf)
        hba = ["local all all trust", "local replication all trust"]
        for addr in addresses:
            hba += [f"host all all {addr}/32 scram-sha-256", f"host replication all {addr}/32 scram-sha-256"]
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        for f in ("mdsl_test.conf", "pg_hba.conf"):
            _chown_postgres(self.datadir / f)

    # -- lifecycle
    @property
    def pid(self) -> int | None:
        return self._ref.pid if self._ref and self._ref.alive() else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> "PgCluster":
        if self.running:
            return self
        last = ""
        for attempt in range(5):
            if not self.port or attempt:
                self.port = free_port(self.listen)
            self._write_conf()
            r = self._as_postgres(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "-s", "start"],
                check=False,
            )
            pidfile = self.datadir / "postmaster.pid"
            if r.returncode == 0 and pidfile.exists():
                self._ref = REGISTRY.record(int(pidfile.read_text().split()[0]), f"postgres {self.name}")
                return self
            last = r.stdout + r.stderr + (self.logfile.read_text()[-2000:] if self.logfile.exists() else "")
            self._kill_leftover()
        raise RuntimeError(f"postgres {self.name} did not start:\n{last}")

    def _kill_leftover(self) -> None:
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            REGISTRY.record(int(pidfile.read_text().split()[0]), f"postgres {self.name}").stop(signal.SIGQUIT, 5.0)

    def compact(self) -> None:
        """Checkpoint twice so WAL no longer needed is removed (makes clones smaller and faster)."""
        self.psql("checkpoint; select pg_switch_wal(); checkpoint;")

    def stop(self, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT) of the postmaster by pid, and wait until it has exited.

        immediate: SIGQUIT instead, for a cluster about to be deleted (no shutdown checkpoint writing
        out what the test changed; the postmaster still stops its children and exits before this returns).
        """
        ref = self._ref
        if ref is None:
            pidfile = self.datadir / "postmaster.pid"
            if not pidfile.exists():
                return
            ref = REGISTRY.record(int(pidfile.read_text().split()[0]), f"postgres {self.name}")
        ref.send(signal.SIGQUIT if immediate else signal.SIGINT)
        if not ref.wait_gone(30.0):
            ref.stop(signal.SIGQUIT, timeout=5.0)
        # a clean shutdown removes postmaster.pid; after a kill it is stale, and pg_ctl copes
        self._ref = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop (immediate shutdown: its data is thrown away) and delete the cluster's directory."""
        self.stop(immediate=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- connection strings
    @property
    def tcp(self) -> str:
        """`addr:port`, as a plan's `tcp = "..."` wants it."""
        return f"{self.listen}:{self.port}"

    def dsn(self, db: str = "postgres", user: str = "postgres", tcp: bool = False) -> str:
        """A libpq conninfo string (never contains a password; use PGPASSWORD/PGPASSFILE)."""
        host = self.listen if tcp else str(self.sockdir)
        return f"host={host} port={self.port} dbname={db} user={user}"

    # -- sql
    def psql(self, sql: str, db: str = "postgres", user: str = "postgres", check: bool = True) -> str:
        """Run SQL over the unix socket (trust); return unaligned, tuples-only output."""
        r = _run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(db, user), "-f", "-"],
            input=sql,
            check=False,
            env={**os.environ, "PGPASSFILE": "/dev/null"},
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed ({r.returncode}) on {self.name}/{db}: {r.stderr}")
        return r.stdout.strip()

    def psql_tcp(self, sql: str, db: str, user: str, password: str | None) -> subprocess.CompletedProcess:
        """Run SQL over TCP with password auth (password passed in the environment, not argv)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = "/dev/null"
        env["PGCONNECT_TIMEOUT"] = "5"
        if password is not None:
            env["PGPASSWORD"] = password
        return _run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(db, user, tcp=True), "-f", "-"],
            input=sql,
            check=False,
            env=env,
        )

    def create_role(self, name: str, password: str | None = None, superuser: bool = False) -> None:
        """A login role; the password travels on psql's stdin, never in argv."""
        pw = f" password {_lit(password)}" if password is not None else ""
        su = " superuser" if superuser else ""
        self.psql(f"create role {_ident(name)} login{su}{pw};")

    def createdb(self, name: str, owner: str | None = None) -> None:
        own = f" owner {_ident(owner)}" if owner else ""
        self.psql(f"create database {_ident(name)}{own} template template0 encoding 'UTF8';")

    def databases(self) -> list[str]:
        return self.psql("select datname from pg_database where not datistemplate order by 1").splitlines()

    def load_dataset(self, db: str, rows: int = 100_000, owner: str = "postgres") -> dict[str, int]:
        """Mastodon-like tables with `rows` statuses, plus accounts and media; returns row counts."""
        counts = {"accounts": max(rows // 50, 10), "statuses": rows, "media": max(rows // 4, 10)}
        script = "".join(f"\\set {k} {v}\n" for k, v in counts.items()) + DATASET_SQL
        self.psql(script, db=db, user=owner)
        return self.row_counts(db)

    def tables(self, db: str) -> list[str]:
        return self.psql(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1",
            db=db,
        ).splitlines()

    def row_counts(self, db: str) -> dict[str, int]:
        return {t: s.rows for t, s in self.table_checksum(db, with_md5=False).items()}

    def table_checksum(self, db: str, with_md5: bool = True) -> dict[str, TableSum]:
        """Per public table: row count and md5 of all rows ordered by their text (C collation, UTC)."""
        tables = self.tables(db)
        if not tables:
            return {}
        md5 = "coalesce(md5(string_agg(t::text, '|' order by (t::text) collate \"C\")), '')" if with_md5 else "''"
        parts = [f"select {_lit(t)}, count(*), {md5} from public.{_ident(t)} t" for t in tables]
        out = self.psql("set timezone = 'UTC'; set datestyle = 'ISO, YMD';\n" + "\nunion all\n".join(parts) + ";", db=db)
        result = {}
        for line in out.splitlines():
            name, count, digest = line.split("|")
            result[name] = TableSum(int(count), digest)
        return result

    def sequences(self, db: str) -> dict[str, int | None]:
        """last_value of every sequence in public (identity columns included)."""
        out = self.psql("select sequencename, last_value from pg_sequences where schemaname = 'public' order by 1", db=db)
        return {n: (int(v) if v else None) for n, v in (line.split("|") for line in out.splitlines())}

    def plan_decl(self, name: str, on: str, *, password_env: str | None = None, socket: bool = False,
                  fresh: bool = False) -> str:
        """A `postgres NAME on HOST { }` declaration for the app database (TCP + password, or the socket)."""
        lines = [f"postgres {name} on {on} {{", f"  database = {plan_str(self.db)}",
                 f"  user     = {plan_str(self.app_user or 'postgres')}"]
        if socket:
            lines.append(f"  socket   = {plan_str(str(self.sockdir))}")
        else:
            lines.append(f"  tcp      = {plan_str(self.tcp)}")
            if password_env:
                lines.append(f'  password = env({plan_str(password_env)})')
        if fresh:
            lines.append("  fresh    = true")
        return "\n".join(lines + ["}"])

    def __repr__(self) -> str:
        return f"PgCluster({self.name!r}, {self.tcp}, sock={str(self.sockdir)!r})"


def plan_str(value: str) -> str:
    """A .plan string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ClonePool:
    """Hands out stopped copies of a template cluster, copying the next one in the background.

    Copying a data dir costs about a second here (file creation is slow on
    this disk: ~0.3 ms per open(O_CREAT), ~1300 files), so the copy for the
    next test overlaps with the current one.
    """

    def __init__(self, template: PgCluster, base: Path, prefix: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.template, self.base, self.prefix = template, Path(base), prefix
        self._n = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"clone-{prefix}")
        self._next = self._executor.submit(self._make)

    def _make(self) -> PgCluster:
        self._n += 1
        return self.template.clone(self.base, f"{self.prefix}-{self._n}")

    def take(self) -> PgCluster:
        """A fresh, stopped clone (the caller starts and destroys it)."""
        cluster = self._next.result()
        self._next = self._executor.submit(self._make)
        return cluster

    def close(self) -> None:
        try:
            self._next.result().destroy()
        except Exception:
            pass
        self._executor.shutdown(wait=True)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------- writer service


class Writer:
    """A real service (tests/e2e/writer.py) that keeps inserting rows and writing files while it runs.

    `start_cmd`, `stop_cmd` and `status_cmd` are shell commands a plan's
    `service w on h { start = "..." stop = "..." status = "..." }` can use;
    status exits 0 while running, 3 when stopped; stop waits for the exit.
    Every tick N inserts a row (seq = N) into `table` and writes file
    `dir/f-000000N.txt`, so after a clean stop rows == files.
    """

    def __init__(self, workdir: Path, dsn: str, files_dir: Path, *, table: str = "writer_events",
                 rate: float = 50.0, python: str = sys.executable, name: str = "writer") -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pidfile = self.workdir / f"{name}.pid"
        self.logfile = self.workdir / f"{name}.log"
        self.dsn = dsn
        self.files_dir = Path(files_dir)
        self.table = table
        self.rate = rate
        self.python = python
        self._refs: list[ProcRef] = []

    def _cmd(self, action: str, *extra: str) -> str:
        argv = [self.python, str(WRITER_SCRIPT), action, "--pidfile", str(self.pidfile), *extra]
        return shlex.join(argv)

    @property
    def start_cmd(self) -> str:
        return self._cmd("start", "--dsn", self.dsn, "--dir", str(self.files_dir), "--table", self.table,
                         "--rate", str(self.rate), "--log", str(self.logfile))

    @property
    def stop_cmd(self) -> str:
        return self._cmd("stop")

    @property
    def status_cmd(self) -> str:
        return self._cmd("status")

    def _sh(self, cmd: str, check: bool) -> subprocess.CompletedProcess:
        return _run(["sh", "-c", cmd], check=check, timeout=60)

    def start(self) -> int:
        self._sh(self.start_cmd, check=True)
        pid = self.pid
        assert pid is not None, self.logfile.read_text() if self.logfile.exists() else "no log"
        return pid

    def stop(self) -> None:
        self.track()
        self._sh(self.stop_cmd, check=True)

    def status(self) -> int:
        return self._sh(self.status_cmd, check=False).returncode

    @property
    def running(self) -> bool:
        return self.status() == 0

    @property
    def pid(self) -> int | None:
        """The daemon's pid (also records it, with its psql child, in REGISTRY)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        self.track(pid)
        return pid

    def track(self, pid: int | None = None) -> None:
        """Record the daemon (e.g. one a plan started over ssh) and its children for leak checks."""
        if pid is None:
            try:
                pid = int(self.pidfile.read_text().strip())
            except (FileNotFoundError, ValueError):
                return
        if _read_stat(pid) is None:
            return
        for p in [pid, *descendants(pid)]:
            ref = REGISTRY.record(p, f"{self.name} {_comm(p)}")
            if ref not in self._refs:
                self._refs.append(ref)

    def files(self) -> list[str]:
        if not self.files_dir.exists():
            return []
        return sorted(p.name for p in self.files_dir.iterdir() if p.name.startswith("f-"))

    def plan_decl(self, name: str, on: str, writes: list[str] = (), initially: str | None = None) -> str:
        """A `service NAME on HOST { start stop status writes }` declaration driving this writer."""
        lines = [f"service {name} on {on} {{", f"  start  = {plan_str(self.start_cmd)}",
                 f"  stop   = {plan_str(self.stop_cmd)}", f"  status = {plan_str(self.status_cmd)}"]
        if writes:
            lines.append(f"  writes = [{', '.join(writes)}]")
        if initially:
            lines.append(f"  initially = {initially}")
        return "\n".join(lines + ["}"])

    def close(self) -> None:
        """Stop the daemon however it was started, then kill anything of it still alive."""
        self.track()
        if self.pidfile.exists():
            self._sh(self.stop_cmd, check=False)
        for ref in self._refs:
            ref.stop(timeout=3.0)


# ---------------------------------------------------------------- file trees


class FileTree:
    """Compare directory trees by content and metadata."""

    @staticmethod
    def snapshot(root: Path | str, follow_symlinks: bool = False) -> dict[str, tuple[str, int, int, int]]:
        """{relpath: (sha256 or 'dir' or 'link:TARGET', mode, uid, gid)} for everything under root."""
        root = Path(root)
        out: dict[str, tuple[str, int, int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                rel = str(p.relative_to(root))
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    digest = "link:" + os.readlink(p)
                elif stat.S_ISDIR(st.st_mode):
                    digest = "dir"
                elif stat.S_ISREG(st.st_mode):
                    h = hashlib.sha256()
                    with p.open("rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                    digest = h.hexdigest()
                else:
                    digest = "special"
                out[rel] = (digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        return out

    @staticmethod
    def diff(a: dict, b: dict) -> dict[str, list[str]]:
        """Paths only in a, only in b, and present in both but different."""
        return {
            "only_a": sorted(set(a) - set(b)),
            "only_b": sorted(set(b) - set(a)),
            "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
        }

    @staticmethod
    def populate(root: Path | str, files: int = 50, seed: int = 0) -> None:
        """Write a small varied tree (nested dirs, modes, a symlink, binary data) for copy tests."""
        root = Path(root)
        for i in range(files):
            d = root / f"d{i % 5}" / f"sub{i % 3}"
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"file-{i}.bin"
            p.write_bytes(hashlib.sha256(f"{seed}-{i}".encode()).digest() * (1 + i * 37 % 200))
            p.chmod(0o640 if i % 2 else 0o644)
        (root / "d0" / "link").symlink_to("sub0")
        (root / "empty-dir").mkdir(exist_ok=True)
