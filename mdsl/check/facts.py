"""What the walk resolves about one step before the rules judge it: the data the
step reads, copies, writes into and destroys, against the state before it runs.
A rule reads these (and asks the walk about the state); it changes nothing."""

from __future__ import annotations

from typing import List, Optional, Set, Tuple

from mdsl.check.state import Piece, Place, PlaceKey, Provisional
from mdsl.syntax import ast as A

USED, SOURCE_GONE, FINAL_EXCLUDES = "used", "source gone", "final excludes"


class BrokenLivePass:
    """A live sync's provisional copy that a step ends before a final sync completed it: the step
    uses the copy (USED), takes its source away (SOURCE_GONE), or is the final sync but leaves out
    what the live pass copied (FINAL_EXCLUDES). `what` says what the step does, for the message."""

    __slots__ = ("prov", "how", "what")

    def __init__(self, prov: Provisional, how: str, what):
        self.prov, self.how, self.what = prov, how, what


class Survivors:
    """What a destroying step leaves of the data one place held: for each piece (first seen
    there), the places still holding a copy afterwards."""

    __slots__ = ("place", "copies")

    def __init__(self, place: Place, copies: List[Tuple[Piece, Set[PlaceKey]]]):
        self.place, self.copies = place, copies


class StepFacts:
    """One step, resolved against the state before it runs. (What a step does not have keeps the
    class's default: most steps set two or three of these.)"""

    copied = None  # the declared data it copies (dump, archive, sync, transfer of a resource)
    into = None  # the declared data it writes into (restore, extract, sync, transfer to a resource)
    src: Optional[Place] = None  # the place it reads
    src_ref = None  # ... as written in the step
    pieces: Set[Piece] = frozenset()  # ... and the pieces it finds there
    dst: Optional[Place] = None  # the place it writes (dump, archive, transfer, move)
    fmt: Optional[str] = None  # the format of the dump it writes, when its kind has formats
    unverified: Optional[A.Option] = None  # `verify = false` of a transfer
    destroys: List[Tuple[Place, Set[Piece]]] = ()  # what it deletes, drops or replaces
    survivors: List[Survivors] = ()  # ... and where copies of it remain

    def __init__(self, step: Optional[A.Step]):
        self.step = step
        self.broken: List[BrokenLivePass] = []  # live passes it breaks (H201)
        # (service, [(data, the later step bringing it)]) for each service it starts before its data
        self.late: List[Tuple[str, List[Tuple[str, A.Step]]]] = []
        # `replicate`: the replication this step finds running into its target (None: none), and for
        # a `run` the replications whose source it writes (logical replication carries no DDL)
        self.replication: Optional[Provisional] = None
        self.writes_replicated: List[Provisional] = []
        self.effects: list = []  # (function, args): the state change, applied after the rules judged

    def then(self, fn, *args) -> None:
        """Change the state this way once the rules have judged the step."""
        self.effects.append((fn, args))
