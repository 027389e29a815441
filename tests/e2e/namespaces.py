"""Test hosts that share nothing: each e2e host's sshd runs in a mount namespace of its own.

Every e2e "host" is an sshd on a loopback address of this one machine. Run
plainly, all of them and the control machine (pytest, mdsl) share one file
system, so a copy between two hosts that quietly uses a path only the control
machine has (its identity file, its known_hosts) passes here and fails between
real servers. A `HostNamespace` starts the host's sshd under `unshare --mount
--uts` after bind-mounting per-host directories over the paths a machine keeps
to itself, so what one host writes there is invisible to the others and to
the control machine (tests read it through `HostNamespace.path`):

    /root /home /srv /var/lib /etc/ssh /tmp   <- BASE/ns/<addr>/{root,home,srv,var/lib,etc/ssh,tmp}

/tmp is bound last, which hides the e2e base directory (it lives in the
control machine's /tmp); it is then bound back at the same path, because the
hosts reach the test's servers through it (PostgreSQL, MariaDB, Redis and
dockerd sockets, like services on a network), and the parts of it that belong
to the control machine or to the other hosts are masked with an empty tmpfs:
`ssh/` (the control's client key, known_hosts, ssh_config) except the host's
own sshd directory and the shared authorized_keys, `hosts/` except the host's
own root, and `ns/` (every host's private directories).

The bind mounts are made by a shell running in the new namespace before it
execs the command; its working directory stays on the unmasked base, so the
paths it binds back are reached relative to it after /tmp is covered. The
namespace dies with its last process (sshd and its sessions), so nothing is
left mounted when the host stops; the control machine's own directories are
never written (only their per-host stand-ins under BASE/ns).

Directories that hold a mount point in a host's namespace must never be
removed on the control machine (the kernel would detach the host's mount):
`HostNamespace.reset` and `SshHost.reset_root` empty them instead.

Plain Python (no pytest), so other test helpers can reuse it.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

UNSHARE = "unshare"
# the paths a machine keeps to itself; /tmp separately, last (it hides the base dir)
PRIVATE_DIRS = ("/root", "/home", "/srv", "/var/lib", "/etc/ssh")
TMP = "/tmp"
REPO = Path(__file__).resolve().parents[2]

# Runs inside the new namespace: $1 base dir, $2 per-host dir (relative to base), $3 hostname,
# $4 the control's paths to bind back inside the private dirs (colon-separated: the Python the
# tests run, when it lives under /root), then "mask:REL" / "keep:REL" / "keepfile:REL" operations
# (REL relative to base), "--", argv. A bound-back path is first bound (read-only) into the host's
# stand-in dir, which is then bound recursively over the private dir, carrying it along.
_SETUP = r"""
set -eu
base=$1 ns=$2 name=$3 shared=$4
shift 4
hostname "$name"
cd "$base"
IFS=:
for p in $shared; do
  [ -n "$p" ] || continue
  mkdir -p "$ns$p"
  mount --no-canonicalize --bind "$p" "$ns$p"
  mount -o remount,bind,ro "$ns$p"
done
unset IFS
for d in %(private)s; do
  mount --no-canonicalize --rbind "$ns$d" "$d"
done
mount --no-canonicalize --rbind "$ns/tmp" /tmp
mkdir -p "$base"
mount --no-canonicalize --bind . "$base"
while [ "$1" != "--" ]; do
  case $1 in
    mask:*) mount -t tmpfs -o mode=0755,size=1m mdsl-e2e-mask "$base/${1#mask:}" ;;
    keep:*) mkdir -p "$base/${1#keep:}"; mount --no-canonicalize --bind "${1#keep:}" "$base/${1#keep:}" ;;
    keepfile:*) : > "$base/${1#keepfile:}"; mount --no-canonicalize --bind "${1#keepfile:}" "$base/${1#keepfile:}" ;;
    *) echo "namespace setup: unknown operation $1" >&2; exit 2 ;;
  esac
  shift
done
shift
exec "$@"
"""


class HostNamespace:
    """The private directories of one test host and the command line that enters them.

    `base` is the e2e base directory; the host's stand-ins for PRIVATE_DIRS and
    /tmp live under base/ns/<address>.
    """

    def __init__(self, base: Path, name: str, address: str) -> None:
        self.base = Path(base)
        self.name = name
        self.address = address
        self.dir = self.base / "ns" / address
        self.masks: list[str] = []  # operations for _SETUP, in order
        # the control's paths every host sees read-only at the same place, although they are in a
        # private dir: the interpreter the tests start services with (pyenv keeps it under /root) and
        # this checkout with its venv (a CI clone may live under /tmp)
        self.shared: list[str] = [p for p in _control_paths() if self._private(Path(p))]
        for d in (*PRIVATE_DIRS, TMP):
            if not Path(d).is_dir():
                raise RuntimeError(f"namespaced test hosts need {d} on this machine to bind over")
            self.path(d).mkdir(parents=True, exist_ok=True)
        (self.base / "ns").chmod(0o755)
        self.path(TMP).chmod(0o1777)
        for d in PRIVATE_DIRS:
            self.path(d).chmod(0o700 if d == "/root" else 0o755)

    def path(self, host_path: str | Path) -> Path:
        """Where the control machine finds the host's `host_path` (one of the private dirs or below)."""
        p = Path(host_path)
        if not p.is_absolute():
            raise ValueError(f"host paths are absolute: {host_path}")
        for d in (*PRIVATE_DIRS, TMP):
            if p == Path(d) or Path(d) in p.parents:
                return self.dir / str(p).lstrip("/")
        raise ValueError(f"{host_path} is not in a host's private directories {(*PRIVATE_DIRS, TMP)}")

    def mask(self, rel: str, keep: tuple[str, ...] = (), keep_files: tuple[str, ...] = ()) -> None:
        """Hide base/rel from the host, except the subdirectories `keep` and files `keep_files` (relative to base)."""
        self.masks.append(f"mask:{rel}")
        self.masks.extend(f"keep:{k}" for k in keep)
        self.masks.extend(f"keepfile:{k}" for k in keep_files)

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside a fresh mount + UTS namespace set up as this host (exec'd: same pid)."""
        script = _SETUP % {"private": " ".join(shlex.quote(d) for d in PRIVATE_DIRS)}
        rel = str(self.dir.relative_to(self.base))
        return [UNSHARE, "--mount", "--uts", "--propagation", "private", "--",
                "sh", "-c", script, "mdsl-e2e-host", str(self.base), rel, self.name, ":".join(self.shared),
                *self.masks, "--", *argv]

    def reset(self) -> None:
        """Empty the host's private directories (keeping the directories: they are mount points)."""
        # the base dir is bound back inside the host's /tmp: its mount point there must stay
        keep = {self.path(p) for p in (self.base, *self.base.parents) if self._private(p)}
        # and so must those of the control's paths bound back (the interpreter)
        keep |= {self.path(p) for s in self.shared for p in (Path(s), *Path(s).parents) if self._private(p)}
        for d in (*PRIVATE_DIRS, TMP):
            empty_dir(self.path(d), keep)

    @staticmethod
    def _private(p: Path) -> bool:
        return any(p == Path(d) or Path(d) in p.parents for d in (*PRIVATE_DIRS, TMP))


def _control_paths() -> list[str]:
    """The installation of the Python running the tests (what a venv's bin/python points into), the
    venv, and the checkout the tests run from; a path inside another listed one is carried by it."""
    real = Path(sys.executable).resolve()
    paths = {str(Path(sys.base_prefix).resolve()), str(Path(sys.prefix).resolve()), str(REPO)}
    paths |= {str(real.parent.parent)} if real.parent.name == "bin" else set()
    paths = {p for p in paths if p != "/" and ":" not in p}
    return sorted(p for p in paths if not any(Path(q) in Path(p).parents for q in paths))


def empty_dir(path: Path, keep: set[Path] = frozenset()) -> None:
    """Remove what is in path, not path itself (it may be a mount point in a host's namespace)."""
    for child in path.iterdir():
        if child in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
