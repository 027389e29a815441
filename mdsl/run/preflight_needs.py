"""What preflight needs to ask, derived without I/O from the compiled steps and the AST: the programs
each host must have, where data lands (and what decides its size), the databases to log in to, the
services to find, and which dump each restore reads (for P403)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

from attrs import define, field, frozen

from mdsl.compile.actions import Location
from mdsl.compile.context import option_value
from mdsl.model import BoundPlan, Database, Service
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
        return ("dir" if r.kind == "dir" else "file"), r.name, r.host, r.path


def leaves_by_top(compiled) -> List[tuple]:
    """(index of its top-level step, step) for every runnable step; a parallel block's members share the index."""
    tops = compiled.steps if hasattr(compiled, "steps") else compiled
    return [(i, leaf) for i, s in enumerate(tops) for leaf in (s.leaves() if hasattr(s, "leaves") else [s])]


def plan_needs(bound: BoundPlan, leaves) -> Needs:
    n = Needs(resources=dict(bound.resources))
    res = bound.resources

    def key(t: A.Target) -> Tuple[str, str]:
        p = bound.place(t)
        return p.host, p.path

    dumped_by: Dict[Tuple[str, str], Tuple[Database, A.Step]] = {}
    made: Dict[Tuple[str, str], None] = {}  # artifacts an earlier step writes
    ran_commands = False  # after a `run`, an artifact may be its work: not asked for before the plan runs

    def read(t: A.Target, step: A.Step, is_dir: bool) -> None:
        place = bound.place(t)
        if place.resource is not None and place.subpath is None:
            if place.resource not in n.written:
                n.sources.append(SourceNeed(place.host, place.path, is_dir, step, place.resource))
        elif place.resource is None and not ran_commands and (place.host, place.path) not in made:
            n.sources.append(SourceNeed(place.host, place.path, is_dir, step, place.path))

    for order, leaf in leaves:
        step = leaf.step
        db = res.get(step.db.name) if isinstance(step, (A.Dump, A.Restore, A.Drop)) else None
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
        if isinstance(step, (A.Stop, A.Start, A.Restart)):
            for s in step.services:
                svc = res.get(s.name)
                if isinstance(svc, Service):
                    n.services.setdefault(svc.name, svc)
        # provenance of artifacts, followed through transfers and renames
        for artifact in getattr(leaf, "artifacts", ()):
            made[(artifact.host, artifact.path)] = None
        if isinstance(step, A.Transfer) and isinstance(step.dest, A.Ident):
            n.written[step.dest.name] = None
        if isinstance(step, A.Dump):
            n.origins[key(step.to)] = step.db.name
            if db.name not in n.written:
                n.dumped[db.name] = None
            n.dumps.append((db, step))
            dumped_by[key(step.to)] = (db, step)
        elif isinstance(step, A.Archive):
            read(step.dir, step, True)
            n.origins[key(step.to)] = step.dir.name
        elif isinstance(step, A.Sync):
            read(step.source, step, True)
            n.written[step.dest.name] = None
        elif isinstance(step, A.Extract):
            n.written[step.dir.name] = None
        elif isinstance(step, (A.Transfer, A.Move)):
            read(step.source, step, False)  # a file, or a directory copied whole
            src, dst = key(step.source), key(step.dest)
            if src in n.origins:
                n.origins[dst] = n.origins[src]
            n.copied_from[dst] = n.copied_from.get(src, src)
            if src in dumped_by:
                dumped_by[dst] = dumped_by[src]
        elif isinstance(step, A.Run):
            ran_commands = True
            n.written.update(dict.fromkeys(option_value(step, "writes", ()) + option_value(step, "deletes", ())))
        elif isinstance(step, A.Restore):
            n.written[db.name] = None
            src = dumped_by.get(key(step.source))
            if src is not None and src[0].kind == db.kind:
                plain = option_value(src[1], "format", "custom") == "plain"
                n.pairs.append(RestorePair(src[0], src[1], db, step, plain))
    return n
