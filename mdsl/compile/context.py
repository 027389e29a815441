"""What every engine needs while compiling: the bound plan, per-host sudo, and
what is known about each artifact (which engine and format produced it)."""

from __future__ import annotations

import posixpath
from typing import Dict, Optional, Set, Tuple

import attrs
from attrs import define, frozen

from mdsl.model import BoundPlan, Host
from mdsl.compile.parts import Command, CompileError, Part
from mdsl.syntax import ast as A


@frozen
class ArtifactFormat:
    """What an artifact holds, learned from the step that made it and followed through transfers."""

    engine: str  # "postgres" | "sqlite" | "tar"
    format: str = ""  # postgres: custom/directory/plain
    compress: str = "none"  # gzip/zstd/none


# Step options default timeouts (seconds); `timeout = N` on a step overrides them.
DEFAULT_TIMEOUT = 6 * 3600.0
SERVICE_TIMEOUT = 120.0
RUN_TIMEOUT = 3600.0


@define
class CompileContext:
    """Mutable state of one compile pass (artifact formats seen so far)."""

    bound: BoundPlan
    formats: Dict[Tuple[str, str], ArtifactFormat] = attrs.Factory(dict)
    live_pairs: Set[Tuple[str, str]] = attrs.Factory(set)  # (source, dest) dirs of the `sync ... live` seen so far
    stopped: Set[str] = attrs.Factory(set)  # services a `stop` so far has stopped (and no `start` started again)

    def host(self, name: str) -> Host:
        """The bound host called `name`."""
        return self.bound.hosts[name]

    def command(self, host: str, parts, *, run_as: Optional[str] = None, tools=(), stdin=None,
                secret_files=()) -> Command:
        """A command on `host`, wrapped in sudo when the host says `sudo = true` or a user is named."""
        h = self.host(host)
        return Command(host, parts, run_as=run_as, sudo=h.sudo, sudo_password=h.sudo_password, tools=tools,
                       stdin=stdin, secret_files=secret_files)

    def place(self, target: A.Target) -> Tuple[str, str]:
        """(host, path) of a step's location or of a declared file's name."""
        if isinstance(target, A.Ident):
            r = self.bound.resources[target.name]
            return r.host, r.path
        return target.host.name, normalize(target.path.value, target.span)

    def stopped_writers_of(self, name: str) -> Tuple[str, ...]:
        """The services declared to write `name` when the plan has stopped every one of them by now: a copy
        of `name` then relies on those stops (empty when one may still run: the checker's H201 judges that)."""
        writers = tuple(r.name for r in self.bound.resources.values() if name in getattr(r, "writes", ()))
        return writers if all(w in self.stopped for w in writers) else ()

    def remember(self, host: str, path: str, fmt: ArtifactFormat) -> None:
        """Note what an artifact holds."""
        self.formats[(host, path)] = fmt

    def format_of(self, host: str, path: str) -> Optional[ArtifactFormat]:
        """What an artifact holds, when an earlier step made it."""
        return self.formats.get((host, path))


def normalize(path: str, span: A.Span = A.NOWHERE) -> str:
    """An absolute, normalised path; anything else cannot be compiled safely."""
    if not path or not path.startswith("/") or "\0" in path or "\n" in path:
        raise CompileError(f"path {path!r} must be absolute, without NUL or newline", span)
    n = posixpath.normpath(path)
    return "/" + n.lstrip("/")


def parent(path: str) -> str:
    """The directory holding `path`."""
    return posixpath.dirname(path.rstrip("/")) or "/"


def option_value(step: A.Step, key: str, default=None):
    """A step option's plain value: str/int/bool, a word for enums, a tuple for lists, True for a flag."""
    opt = step.option(key)
    if opt is None:
        return default
    v = opt.value
    if v is None:
        return True
    if isinstance(v, A.ListValue):
        return tuple(getattr(i, "value", getattr(i, "name", None)) for i in v.items)
    if isinstance(v, A.Ref):
        return v.name
    return v.value


def step_timeout(step: A.Step, default: Optional[float]) -> Optional[float]:
    """The step's `timeout = N` option, or the default for its kind."""
    t = option_value(step, "timeout")
    return float(t) if t is not None else default


Parts = Tuple[Part, ...]
