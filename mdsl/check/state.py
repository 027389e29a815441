"""The symbolic state `mdsl check` walks: pieces of data, the places that hold
copies of them, and the services that may be running.

A *piece* is the unit of data the checker follows: a database, a file, or one
part of a dir (a dir is split at every subpath the plan names anywhere, so
`old_files/cache` and the rest of `old_files` are two pieces). A *place* is
where copies live: a declared resource, or an artifact path on a host (a dump,
an archive, a transferred copy). Every piece knows the places holding it and
every place the pieces it holds, so each step costs time in proportion to the
data it touches, never to the size of the plan.

Nothing here reports findings: the walk (`walk.py`) asks the state questions,
lets the rules judge, then applies the step's effect.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

from mdsl.model import Resource

# A place is keyed by the resource's name, or by (host, path) for an artifact.
PlaceKey = Union[str, Tuple[str, str]]

# What an artifact holds, so a restore of an archive or an extract of a dump is caught; a database
# dump is named by its store kind (StoreKind.artifact).
ARCHIVE, DIR_COPY = "an archive", "a directory copy"

NEVER = -1  # `written_at` of data that was there before the plan started


def covers(subpath: Optional[str], sub: str) -> bool:
    """True when a piece at `subpath` lies at or under `sub` (a piece with no subpath is the rest)."""
    return subpath is not None and (subpath == sub or subpath.startswith(sub + "/"))


def show_pieces(pieces: Iterable["Piece"], pieces_of: Dict[str, Tuple["Piece", ...]]) -> str:
    """Pieces as messages name them: a whole resource by its name, else each piece."""
    by_res: Dict[str, List[Piece]] = {}
    for p in pieces:
        by_res.setdefault(p.resource.name, []).append(p)
    out: List[str] = []
    for name in sorted(by_res):
        ps = by_res[name]
        if len(ps) == len(pieces_of[name]):
            out.append(name)
        else:
            out.extend(sorted(p.name for p in ps))
    return ", ".join(out)


class Piece:
    """One unit of data followed through the walk: a database, a file, or a part of a dir."""

    __slots__ = ("resource", "subpath", "rebuild", "name", "holders", "origin", "copied", "lost")

    def __init__(self, resource: Resource, subpath: Optional[str], rebuild: Optional[str], rest: bool):
        self.resource = resource
        self.subpath = subpath
        # the `derived ... rebuild` command when this piece can be rebuilt where the data goes
        self.rebuild = rebuild
        if subpath is not None:
            self.name = f"{resource.name}/{subpath}"
        else:
            self.name = f"{resource.name} (outside its named subpaths)" if rest else resource.name
        self.holders: Set[PlaceKey] = set()
        self.origin: Optional[PlaceKey] = None  # the place holding the original, until destroyed
        self.copied = False  # ever copied anywhere (for H101's note)
        self.lost = False  # destroyed as its only copy (reported H101; H102 stays quiet)

    def __repr__(self) -> str:
        return f"<Piece {self.name}>"


class Place:
    """Where copies of pieces live: a declared resource, or an artifact at (host, path)."""

    __slots__ = ("key", "host", "path", "resource", "holds", "exists", "kind", "fmt", "producer",
                 "written_at", "verified", "consumed", "gone")

    def __init__(self, key: PlaceKey, host: str, path: str, resource: Optional[Resource] = None):
        self.key = key
        self.host = host
        self.path = path
        self.resource = resource
        self.holds: Set[Piece] = set()
        self.exists = resource is not None  # a declared resource is always there
        self.kind: Optional[str] = None  # what an artifact is (StoreKind.artifact, ARCHIVE, ...); None: unknown
        self.fmt: Optional[str] = None  # a PostgreSQL dump's format
        self.producer = None  # the step that last wrote this artifact
        self.written_at = NEVER  # position of the last step that changed the content
        self.verified = True  # False when it arrived by a transfer with `verify = false`
        self.consumed = False  # read or copied since it was last written (H104)
        self.gone = None  # (step, "deleted" | "moved away") once an artifact is removed

    def show(self) -> str:
        """How messages name this place: `old_files (ubuntu:/srv/x)` or `ubuntu:/root/x.dump`."""
        r = self.resource
        if r is None:
            return f"{self.host}:{self.path}"
        if self.path:
            return f"{r.name} ({self.host}:{self.path})"
        return f"{r.name} (on {self.host})"


class Provisional:
    """A dir's copy made by a `sync ... live` while writers of its source ran: torn until a
    final (not live) sync of the same source, taken while none of them runs, completes it.
    A database a `replicate ... live` follows (`replication`) is provisional the same way until
    the final `replicate` (H206 judges it, not H201)."""

    __slots__ = ("step", "source", "dest", "writers", "why", "excludes", "replication")

    def __init__(self, step, source: str, dest: str, writers: Tuple[str, ...], why: Tuple[str, ...],
                 excludes: Tuple[str, ...], replication: bool = False):
        self.step = step  # the live sync, where a missing final sync is reported
        self.source = source  # the dir copied
        self.dest = dest  # the dir holding the provisional copy
        self.writers = writers  # the services that may have written the source during the pass
        self.why = why  # (writer, the step that started it, in the same block?) as of the live pass
        self.excludes = excludes  # subpaths the live pass left out
        self.replication = replication  # a `replicate ... live`: the source's changes still flow into dest


class State:
    """Services that may run, every place's content, and when each host was last verified."""

    def __init__(self, resources: Iterable[Resource], pieces: Dict[str, Tuple[Piece, ...]]):
        self.places: Dict[PlaceKey, Place] = {}
        self.pieces = pieces  # data resource name -> its pieces
        for r in resources:
            if not r.is_data:
                continue
            place = Place(r.name, r.host, getattr(r, "path", "") or "", r)
            self.places[r.name] = place
            if not r.fresh:  # a fresh resource's current content is disposable: it holds no data
                for p in pieces[r.name]:
                    place.holds.add(p)
                    p.holders.add(r.name)
                    p.origin = r.name
        self.running: Set[str] = set()
        self.started_by: Dict[str, object] = {}  # service -> the step that started it (None: initially)
        self.checked_at: Dict[str, int] = {}  # host -> position of the last verify that checked it
        self.http_via: Set[str] = set()  # hosts a `verify http ... via = HOST` passed for
        # dir -> its provisional copy (a `sync ... live` not yet completed by a final sync); database -> the
        # replication following its source (a `replicate ... live` not yet finished by the final pass)
        self.provisional: Dict[str, Provisional] = {}

    # ---------------------------------------------------------------- places

    def artifact(self, host: str, path: str) -> Place:
        """The place at an undeclared (host, path), created empty on first use."""
        key = (host, path)
        place = self.places.get(key)
        if place is None:
            place = self.places[key] = Place(key, host, path)
        return place

    def content(self, place: Place, sub: str) -> Set[Piece]:
        """The pieces a dir holds under its subpath `sub`."""
        return {p for p in place.holds if covers(p.subpath, sub)}

    def checked(self, place: Place) -> bool:
        """True when a verify step checked this place's host after its content was written."""
        at = self.checked_at.get(place.host)
        return at is not None and place.written_at < at

    # ---------------------------------------------------------------- effects

    def remove(self, place: Place, pieces: Iterable[Piece]) -> None:
        """Take pieces out of a place (destroyed, moved away or overwritten)."""
        key = place.key
        holds = place.holds
        for p in list(pieces):
            holds.discard(p)
            p.holders.discard(key)
            if p.origin == key:
                p.origin = None

    def put(self, place: Place, pieces: Iterable[Piece], at: int, replace: bool = False) -> None:
        """Copy pieces into a place (replacing what it held when `replace`)."""
        if replace and place.holds:
            pieces = set(pieces)
            # what comes back into its own place (an extract of the dir's own archive) stays the original
            self.remove(place, place.holds - pieces)
        key = place.key
        for p in pieces:
            place.holds.add(p)
            p.holders.add(key)
            p.copied = True
        place.exists = True
        place.written_at = at
        place.consumed = False

    def relocate(self, src: Place, dst: Place, pieces: List[Piece], at: int) -> None:
        """`move`: the pieces leave `src` and live at `dst`; an original stays an original."""
        origins = [p for p in pieces if p.origin == src.key]
        self.remove(src, pieces)
        self.put(dst, pieces, at)
        for p in origins:
            p.origin = dst.key
