"""What preflight needs to ask, derived without I/O from the compiled steps and the AST: the programs
each host must have, where data lands (and what decides its size), the databases to log in to, the
services to find, and which dump each restore reads (for P403)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

from attrs import define, field, frozen

from mdsl.compile.actions import Location
from mdsl.compile.context import option_value
from mdsl.model import BoundPlan, Database, Login, Service, Volume
from mdsl.run.docker import DockerNeeds
from mdsl.stores.postgres.commands import RestorePart
from mdsl.stores.registry import probes_of
from mdsl.syntax import ast as A

FILE_LIKE = ("dump", "archive", "transfer", "move")  # the step writes PATH: its parent must be writable


@frozen
class ToolNeed:
    host: str
    word: str  # what is looked up: a name on PATH, or `BIN/name` for a database with `bin`
    name: str
    step: A.Step


@frozen
class DestNeed:
    host: str
    path: str
    run_as: Optional[str]
    size_of: Optional[Union[str, Location]]
    step: A.Step
    file_like: bool
    order: int = 0  # the plan's top-level step it belongs to (a parallel block's members share one)
    temporary: bool = False  # removed when its step ends (a restore's decompressed dump): counts at the peak
    if_zstd: bool = False  # written only if the file at size_of turns out to be a zstd dump


@frozen
class RestorePair:
    dump_db: Database
    dump_step: A.Step
    restore_db: Database
    restore_step: A.Step
    plain: bool


@frozen
class SourceNeed:
    """Data a step reads that was there before the plan ran: it must exist, and look like data (P408)."""

    host: str
    path: str
    is_dir: bool  # a dir's source must be a directory; a transfer or move copies a file or a whole dir
    step: A.Step
    name: str  # the declared dir or file, or the path of an artifact made outside the plan


@define
class Needs:
    tools: List[ToolNeed] = field(factory=list)
    databases: Dict[str, Database] = field(factory=dict)
    dumped: Dict[str, None] = field(factory=dict)  # databases a step reads before any step writes them: must exist
    written: Dict[str, None] = field(factory=dict)  # data some `run ... writes`/`restore` fills (may not exist yet)
    services: Dict[str, Service] = field(factory=dict)
    dests: List[DestNeed] = field(factory=list)
    pairs: List[RestorePair] = field(factory=list)
    dumps: List[Tuple[Database, A.Step]] = field(factory=list)
    origins: Dict[Tuple[str, str], str] = field(factory=dict)  # artifact -> the resource it holds a copy of
    # artifact -> the file it is a copy of, for copies of files the plan did not make (measured there)
    copied_from: Dict[Tuple[str, str], Tuple[str, str]] = field(factory=dict)
    resources: Dict[str, object] = field(factory=dict)  # the plan's declarations, by name
    sources: List[SourceNeed] = field(factory=list)
    docker: DockerNeeds = field(factory=DockerNeeds)
    logins: List[Login] = field(factory=list)  # every declared login of an app: made by the plan, or proven (P411)
    replications: List[Tuple[A.Replicate, Database, Database]] = field(factory=list)  # live passes (P413)

    def size_source(self, d: DestNeed) -> Optional[Tuple[str, str, str, str]]:
        """(kind, key, host, path) of what decides how much lands at `d`.

        kind "zstd": the file's size if it is a zstd dump, else 0 (a restore's decompressed copy of a
        dump made outside the plan: the step looks at the file when it runs, and so does preflight).
        """
        name = d.size_of
        if isinstance(name, Location):
            name = self.origins.get((name.host, name.path))
            if name is None:  # an artifact that exists before the plan runs (or a copy of one): measure it
                host, path = self.copied_from.get((d.size_of.host, d.size_of.path),
                                                        (d.size_of.host, d.size_of.path))
                if d.if_zstd:
                    return "zstd", f"@zstd@{host}:{path}", host, path
                return "file", f"@{host}:{path}", host, path
        if not name:
            return None
        r = self.resources.get(name)
        if r is None:
            return None
        if r.is_database:
            return "database", r.name, r.host, ""
        if isinstance(r, Volume):
            return "volume", r.name, r.host, r.docker
        return ("dir" if r.kind == "dir" else "file"), r.name, r.host, r.path


def leaves_by_top(compiled) -> List[tuple]:
    """(index of its top-level step, step) for every runnable step; a parallel block's members share the index."""
    tops = compiled.steps if hasattr(compiled, "steps") else compiled
    return [(i, leaf) for i, s in enumerate(tops) for leaf in (s.leaves() if hasattr(s, "leaves") else [s])]


def plan_needs(bound: BoundPlan, leaves, every_login: bool = True) -> Needs:
    """What preflight asks for the `(top-level index, compiled step)` pairs of a plan, in plan order.

    `every_login`: P411 proves every declared login; without it (a resume: only the steps still to run)
    only those on the databases those steps use."""
    walk = _NeedsWalk(bound)
    for order, leaf in leaves:
        walk.step(order, leaf)
    if not every_login:
        walk.needs.logins = [x for x in walk.needs.logins if x.database in walk.needs.databases]
    return walk.needs


def needed_secrets(needs: Needs, hosts) -> List[A.Secret]:
    """The secrets preflight reads on `hosts` for these needs: the passwords of the databases it logs in to
    and of the logins it proves (so apply asks for them with the steps' own, before anything connects)."""
    out: List[A.Secret] = []
    for r in list(needs.databases.values()) + list(needs.logins):
        password = getattr(r, "password", None)
        if r.host in hosts and isinstance(password, A.Secret):
            out.append(password)
    return out


class _NeedsWalk:
    """Follows the plan once, in order: what each step needs, and where each artifact came from."""

    def __init__(self, bound: BoundPlan):
        self.bound = bound
        self.needs = Needs(resources=dict(bound.resources),
                           logins=[r for r in bound.resources.values() if isinstance(r, Login)])
        self.dumped_by: Dict[Tuple[str, str], Tuple[Database, A.Step]] = {}
        self.made: Dict[Tuple[str, str], None] = {}  # artifacts an earlier step writes
        self.ran_commands = False  # after a `run`, an artifact may be its work: not asked for before the plan runs

    def key(self, t: A.Target) -> Tuple[str, str]:
        place = self.bound.place(t)
        return place.host, place.path

    def read(self, t: A.Target, step: A.Step, is_dir: bool) -> None:
        """A step reads `t`: a source to prove, unless an earlier step put it there."""
        n, place = self.needs, self.bound.place(t)
        if isinstance(self.bound.resources.get(place.resource), Volume):
            return  # Docker's checks prove it (mdsl/run/docker.py)
        if place.resource is not None and place.subpath is None:
            if place.resource not in n.written:
                n.sources.append(SourceNeed(place.host, place.path, is_dir, step, place.resource))
        elif place.resource is None and not self.ran_commands and (place.host, place.path) not in self.made:
            n.sources.append(SourceNeed(place.host, place.path, is_dir, step, place.path))

    def step(self, order: int, leaf) -> None:
        n, step = self.needs, leaf.step
        db = self.bound.resources.get(step.db.name) if isinstance(step, (A.Dump, A.Restore, A.Drop)) else None
        if isinstance(step, A.Replicate):
            self._replicate(step)
        for host, tools in getattr(leaf, "tools", ()):
            for t in tools:
                word = probes_of(db).tool_word(db, t) if db is not None and host == db.host else t
                n.tools.append(ToolNeed(host, word, t, step))
        for d in getattr(leaf, "destinations", ()):
            part = isinstance(d, RestorePart)
            n.dests.append(DestNeed(d.host, d.path, d.run_as, d.size_of, step, part or leaf.kind in FILE_LIKE,
                                    order, temporary=part, if_zstd=part and d.if_zstd))
        if db is not None:
            n.databases.setdefault(db.name, db)
        n.docker.step(order, step, self.bound.resources)
        if isinstance(step, (A.Stop, A.Start, A.Restart)):
            for s in step.services:
                svc = self.bound.resources.get(s.name)
                if isinstance(svc, Service):
                    n.services.setdefault(svc.name, svc)
        for artifact in getattr(leaf, "artifacts", ()):
            self.made[(artifact.host, artifact.path)] = None
        if isinstance(step, A.Transfer) and isinstance(step.dest, A.Ident):
            n.written[step.dest.name] = None
        follow = {A.Dump: self._dump, A.Archive: self._archive, A.Sync: self._sync, A.Extract: self._extract,
                  A.Transfer: self._transfer, A.Move: self._transfer, A.Run: self._run,
                  A.Restore: self._restore}.get(type(step))
        if follow is not None:
            follow(step, db)

    # provenance of artifacts, followed through transfers and renames; what the plan itself fills

    def _dump(self, step: A.Dump, db: Database) -> None:
        n = self.needs
        n.origins[self.key(step.to)] = step.db.name
        if db.name not in n.written:
            n.dumped[db.name] = None
        n.dumps.append((db, step))
        self.dumped_by[self.key(step.to)] = (db, step)

    def _archive(self, step: A.Archive, db) -> None:
        self.read(step.dir, step, True)
        self.needs.origins[self.key(step.to)] = step.dir.name

    def _sync(self, step: A.Sync, db) -> None:
        self.read(step.source, step, True)
        self.needs.written[step.dest.name] = None

    def _replicate(self, step: A.Replicate) -> None:
        """The source is read (it must exist, its login work: P406); the target is filled; a live pass is
        checked for what replication needs (P413)."""
        n = self.needs
        src, dst = self.bound.resources[step.source.name], self.bound.resources[step.dest.name]
        n.databases.setdefault(src.name, src)
        n.databases.setdefault(dst.name, dst)
        if src.name not in n.written:
            n.dumped[src.name] = None
        n.written[dst.name] = None
        if step.live:
            n.replications.append((step, src, dst))

    def _extract(self, step: A.Extract, db) -> None:
        self.needs.written[step.dir.name] = None

    def _transfer(self, step, db) -> None:
        n = self.needs
        self.read(step.source, step, False)  # a file, or a directory copied whole
        src, dst = self.key(step.source), self.key(step.dest)
        if src in n.origins:
            n.origins[dst] = n.origins[src]
        n.copied_from[dst] = n.copied_from.get(src, src)
        if src in self.dumped_by:
            self.dumped_by[dst] = self.dumped_by[src]

    def _run(self, step: A.Run, db) -> None:
        self.ran_commands = True
        self.needs.written.update(dict.fromkeys(option_value(step, "writes", ()) + option_value(step, "deletes", ())))

    def _restore(self, step: A.Restore, db: Database) -> None:
        self.needs.written[db.name] = None
        src = self.dumped_by.get(self.key(step.source))
        if src is not None and src[0].kind == db.kind:
            plain = option_value(src[1], "format", "custom") == "plain"
            self.needs.pairs.append(RestorePair(src[0], src[1], db, step, plain))
