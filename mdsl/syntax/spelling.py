"""Did-you-mean for words the parser reads as something else than the user meant."""

from __future__ import annotations

import difflib
from typing import Container, Iterable, Optional

import attrs

from mdsl.syntax import ast as A

# The words a step begins with (docs/language.md, "Steps"); `sequence` only opens a lane of `parallel`.
STEP_KEYWORDS = frozenset({
    "stop", "start", "restart", "dump", "restore", "archive", "extract", "sync", "replicate", "transfer",
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


@attrs.frozen
class MisspelledStep:
    """A misspelled step keyword the parser read as options of the step above it."""

    word: A.Ident  # the misspelled keyword, e.g. `strat`
    keyword: str  # what it looks like, e.g. `start`
    options: range  # indices in the step's options of the word and what follows it on its line

    def message(self) -> str:
        """The finding's message."""
        return unknown_step(self.word.name, self.keyword)


def unknown_step(word: str, keyword: str) -> str:
    """How a misspelled step keyword is reported, by the parser and by the resolver alike."""
    return f"unknown step `{word}`: did you mean `{keyword}`?"


def misspelled_step_in(step: A.Step, known_options: Container[str]) -> Optional[MisspelledStep]:
    """The first bare word starting a line among `step`'s options that is none of `known_options`
    but looks like a step keyword (`strat new_app` under a `restore`), if any."""
    options = step.options
    if all(opt.value is not None or opt.key.name in known_options for opt in options):
        return None  # the common case, and no need to find where the step's head ends
    previous_end = _head_end_line(step)
    for i, opt in enumerate(options):
        line = opt.span.line
        if line > previous_end and opt.value is None and opt.key.name not in known_options:
            keyword = misspelled_step(opt.key.name)
            if keyword:
                end = i + 1
                while end < len(options) and options[end].span.line == line:
                    end += 1
                return MisspelledStep(opt.key, keyword, range(i, end))
        previous_end = opt.span.end_line
    return None


def _head_end_line(step: A.Step) -> int:
    """The line the step's own words (before its options) end on."""
    end = step.span.line
    for name in attrs.fields_dict(type(step)):
        if name in ("label", "options", "span"):
            continue
        value = getattr(step, name)
        for part in value if isinstance(value, tuple) else (value,):
            span = getattr(part, "span", None)
            if span is not None and span is not A.NOWHERE:
                end = max(end, span.end_line)
    return end
