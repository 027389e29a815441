"""Real Docker daemons for end-to-end tests: one dockerd per test host, images made from this machine's binaries.

Plain Python (no pytest); conftest.py's docker fixtures wrap these.

- `Dockerd`: `dockerd --iptables=false --bridge=none --storage-driver=vfs` with its own data root,
  exec root, pid file and socket, started in a few seconds without systemd. Its containers run
  with no network (`network_mode: none`, or another container's: `service:NAME`). `stop()`
  stops every container it ran and the daemon by pid (with containerd and its shims, which it
  starts), kills what is left of them by pid, and unmounts what dockerd leaves under its roots
  (a bind mount of the data root, netns files under the exec root) before the dirs are removed.
- `build_rootfs` / `Dockerd.import_image`: there is no registry here, so images are `docker
  import`ed from a directory holding the host's own binaries and the libraries `ldd` names: one
  image with PostgreSQL 15 (server and clients), python3 (the stdlib modules a small app needs)
  and a shell, which the Compose projects of the tests use for their database and their app.

Every process is recorded in hosts.REGISTRY, so the session's leak check covers it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hosts import REGISTRY, ProcRef, descendants

DOCKERD = Path("/usr/sbin/dockerd")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_LIB = Path("/usr/lib/postgresql/15/lib")
PG_SHARE = Path("/usr/share/postgresql/15")
HOST_PYTHON = Path("/usr/bin/python3")  # Debian's, not a pyenv shim
IMAGE = "mdsl-e2e/pg-python:15"
# The uids of the image's users, as an official image has them: postgres is 999, the app 1000.
PG_UID, APP_UID = 999, 1000

_PROGRAMS = ["/bin/sh", "/bin/cat", "/bin/rm", "/bin/mkdir", "/bin/ls", "/bin/sleep", "/bin/chmod", "/bin/chown",
             "/bin/id", "/usr/bin/env", "/bin/mktemp", "/usr/bin/head", "/usr/bin/wc", str(HOST_PYTHON)]
_PG_PROGRAMS = ["postgres", "initdb", "pg_ctl", "psql", "pg_dump", "pg_restore", "createdb", "dropdb", "pg_isready"]
# What the app imports (tests/e2e/compose_app.py), and what python3 itself loads at start-up.
_PY_MODULES = "__future__, os, sys, time, signal, subprocess, encodings.idna, encodings.utf_8, encodings.ascii"

ENTRYPOINT = """#!/bin/sh
# The database container: initdb on first start (as uid 999), then the server in the foreground.
set -e
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
  initdb -D "$data" -U postgres -A trust --locale=C -E UTF8 >/dev/null
  echo "host all all 127.0.0.1/32 trust" >> "$data/pg_hba.conf"
fi
exec postgres -D "$data" -c listen_addresses=127.0.0.1 -c unix_socket_directories=/var/run/postgresql \\
  -c fsync=off -c full_page_writes=off "$@"
"""


def _run(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", "input" not in kw or isinstance(kw.get("input"), str))
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, **kw)


def _libraries(program: str) -> list[str]:
    out = _run(["ldd", program], check=False).stdout
    libs = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/") and os.path.exists(word):
                libs.append(word)
    return libs


def _copy(src: str, root: Path) -> None:
    dst = root / src.lstrip("/")
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(src), dst)


def copy_programs(root: Path, programs) -> Path:
    """Host programs and the libraries `ldd` names, at their paths under `root` (a small image's content)."""
    for p in programs:
        _copy(p, root)
        for lib in _libraries(p):
            _copy(lib, root)
    return root


def build_rootfs(root: Path, app_script: Path) -> Path:
    """A directory to `docker import`: sh and a few tools, PostgreSQL 15, python3 and the app, their libraries."""
    copy_programs(root, list(_PROGRAMS) + [str(PG_BIN / p) for p in _PG_PROGRAMS])
    for so in PG_LIB.glob("*.so"):  # plpgsql, dict_snowball, the encoding conversions initdb loads
        if so.name.startswith("llvmjit"):  # JIT: 100 MB of LLVM that a test database never uses
            continue
        _copy(str(so), root)
        for lib in _libraries(str(so)):
            _copy(lib, root)
    shutil.copytree(PG_SHARE, root / str(PG_SHARE).lstrip("/"), dirs_exist_ok=True)
    for zone in ("UTC", "Etc/UTC"):
        _copy(f"/usr/share/zoneinfo/{zone}", root)
    files = _run([str(HOST_PYTHON), "-c", f"import sys, {_PY_MODULES}\n"
                  "print('\\n'.join(sorted({m.__file__ for m in list(sys.modules.values()) "
                  "if getattr(m, '__file__', None)})))"]).stdout.split()
    (root / "usr/lib/python3.11/lib-dynload").mkdir(parents=True, exist_ok=True)
    for f in files:
        _copy(f, root)
        if f.endswith(".so"):
            for lib in _libraries(f):
                _copy(lib, root)
    bindir = root / "usr/local/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for p in _PG_PROGRAMS:  # on PATH, as in the official image
        link = bindir / p
        if not link.exists():
            link.symlink_to(PG_BIN / p)
    link = bindir / "python3"
    if not link.exists():
        link.symlink_to(HOST_PYTHON)
    (bindir / "db-entry").write_text(ENTRYPOINT)
    (bindir / "db-entry").chmod(0o755)
    (root / "app").mkdir(exist_ok=True)
    shutil.copy2(app_script, root / "app" / app_script.name)
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\n"
                                f"postgres:x:{PG_UID}:{PG_UID}::/var/lib/postgresql:/bin/sh\n"
                                f"app:x:{APP_UID}:{APP_UID}::/app:/bin/sh\n")
    (etc / "group").write_text(f"root:x:0:\npostgres:x:{PG_UID}:\napp:x:{APP_UID}:\n")
    for d, mode, uid in (("tmp", 0o1777, 0), ("var/run/postgresql", 0o775, PG_UID),
                         ("var/lib/postgresql/data", 0o700, PG_UID), ("root", 0o700, 0),
                         ("cache", 0o755, APP_UID), ("library", 0o755, APP_UID)):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d).chmod(mode)
        os.chown(root / d, uid, uid)
    return root


class Dockerd:
    """One Docker daemon of a test host: its own data root, exec root, pid file and socket."""

    def __init__(self, state: Path, name: str) -> None:
        self.name = name
        # Short paths: a unix socket path has a 107-byte limit, and containerd's sockets live under exec-root.
        self.dir = state
        self.data_root = state / "data"
        self.exec_root = state / "x"
        self.pidfile = state / "dockerd.pid"
        self.sock = state / "docker.sock"
        self.log = state / "dockerd.log"
        self._ref: ProcRef | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        """DOCKER_HOST for the docker CLI."""
        return f"unix://{self.sock}"

    @property
    def env(self) -> dict:
        """The environment a docker CLI talking to this daemon needs."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def start(self, timeout: float = 60.0) -> "Dockerd":
        """Start the daemon and wait until it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        argv = [str(DOCKERD), "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs",
                f"--data-root={self.data_root}", f"--exec-root={self.exec_root}", f"--pidfile={self.pidfile}",
                f"--host=unix://{self.sock}", "--userland-proxy=false"]
        # containerd, started by dockerd before dockerd points TMPDIR at its data root, writes its
        # stack dumps (containerd.PID.stacks.log, on SIGUSR1) into TMPDIR: keep them in our state dir.
        env = {**os.environ, "TMPDIR": str(self.dir)}
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                          start_new_session=True)
        self._ref = REGISTRY.record(self._proc.pid, f"dockerd {self.name}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.sock.exists() and self.docker("version", check=False).returncode == 0:
                self._record_children()
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dockerd {self.name} did not start:\n{self.log.read_text()[-3000:]}")

    def _record_children(self) -> None:
        """containerd and its shims: the daemon's children, and the shims that left it (found by our exec root)."""
        if self._ref is None:
            return
        for pid in descendants(self._ref.pid) + self._ours_by_cmdline():
            REGISTRY.record(pid, f"dockerd {self.name} child")

    def _ours_by_cmdline(self) -> list[int]:
        """Pids whose command line names this daemon's exec root (containerd, containerd-shim)."""
        needle = str(self.exec_root).encode()
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        out.append(int(entry))
            except OSError:
                continue
        return out

    def docker(self, *args: str, check: bool = True, input=None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run the docker CLI against this daemon."""
        kw = {"input": input} if input is not None else {}
        return _run(["docker", *args], check=check, env=self.env, timeout=timeout, **kw)

    def compose(self, project_dir: Path, *args: str, check: bool = True, timeout: float = 180.0):
        """Run docker-compose (v1) in a project directory against this daemon."""
        return _run(["docker-compose", *args], check=check, env=self.env, cwd=project_dir, timeout=timeout)

    def import_image(self, rootfs: Path, name: str = IMAGE) -> None:
        """`docker import` a directory as an image (no registry: what the tests run is built here)."""
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run(["docker", "import", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                            "--change", "ENV TZ=UTC", "-", name], stdin=tar.stdout, env=self.env, check=True,
                           capture_output=True, timeout=300)
        finally:
            tar.stdout.close()
            tar.wait()

    def container_pids(self) -> list[int]:
        """The main pids of this daemon's running containers."""
        ids = self.docker("ps", "-q", check=False).stdout.split()
        if not ids:
            return []
        out = self.docker("inspect", "--format", "{{.State.Pid}}", *ids, check=False).stdout.split()
        return [int(p) for p in out if p.isdigit() and int(p) > 0]

    def remove_all(self) -> None:
        """Between tests: every container and volume gone (images stay)."""
        ids = self.docker("ps", "-a", "-q", check=False).stdout.split()
        self._kill_containers()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False)
        vols = self.docker("volume", "ls", "-q", check=False).stdout.split()
        if vols:
            self.docker("volume", "rm", "-f", *vols, check=False)

    def _kill_containers(self) -> None:
        refs = [REGISTRY.record(p, f"container of dockerd {self.name}") for p in self.container_pids()]
        for ref in refs:
            for child in descendants(ref.pid):
                REGISTRY.record(child, f"container process of dockerd {self.name}")
        ids = self.docker("ps", "-q", check=False).stdout.split()
        if ids:
            self.docker("kill", *ids, check=False)
        for ref in refs:
            ref.stop(signal.SIGKILL, timeout=5.0)

    def stop(self) -> None:
        """Stop every container and the daemon by pid; kill what is left; unmount what dockerd leaves."""
        if self._ref is not None and self._ref.alive():
            try:
                self._kill_containers()
            except (OSError, subprocess.SubprocessError):
                pass
            self._record_children()
            children = [REGISTRY.record(p, f"dockerd {self.name} child") for p in descendants(self._ref.pid)]
            shims = [REGISTRY.record(p, f"dockerd {self.name} shim") for p in self._ours_by_cmdline()]
            self._ref.stop(signal.SIGTERM, timeout=20.0)
            for ref in children + shims:
                ref.stop(signal.SIGTERM, timeout=5.0)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._ref = self._proc = None
        self.unmount()

    def unmount(self) -> None:
        """Unmount everything under the daemon's roots, deepest first (lazily when busy)."""
        roots = (str(self.data_root), str(self.exec_root))
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        ours = sorted({p for p in points if p.startswith(roots)}, key=len, reverse=True)
        for p in ours:
            if subprocess.run(["umount", p], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", p], capture_output=True)

    def destroy(self) -> None:
        """Stop, then remove its directories."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
