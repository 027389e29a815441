"""Did-you-mean for words the parser reads as something else than the user meant."""

from __future__ import annotations

import difflib
from typing import Iterable, Optional

# The words a step begins with (docs/language.md, "Steps"); `sequence` only opens a lane of `parallel`.
STEP_KEYWORDS = frozenset({
    "stop", "start", "restart", "dump", "restore", "archive", "extract", "sync", "transfer",
    "move", "delete", "drop", "run", "verify", "confirm", "parallel",
})
# The words a top-level item other than a resource declaration begins with.
DECLARATION_KEYWORDS = ("host", "plan", "steps")


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The candidate `word` is most likely a typo of, if any is close enough."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=cutoff)
    return close[0] if close else None


def misspelled_step(word: str) -> Optional[str]:
    """The step keyword `word` (not itself a keyword) is a typo of, if it looks like one."""
    if word in STEP_KEYWORDS:
        return None
    return closest(word, STEP_KEYWORDS, cutoff=0.7)
