"""Hypothesis strategies for hostile input: random bytes, and valid plans with tokens or
characters deleted, duplicated, swapped or inserted."""

from __future__ import annotations

import re

from hypothesis import strategies as st

TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[a-z_][a-z0-9_]*|[0-9]+|\s+|.', re.S)

# Pieces worth inserting: the language's punctuation and words, and classic troublemakers.
EXTRA_TOKENS = [
    "{", "}", "[", "]", "(", ")", ",", ":", "=", '"', "\\", "#", "\n", " ", "\t", "\r", "\x00", "\ufeff",
    "steps", "parallel", "host", "on", "to", "into", "exclude", "env", "file", "true", "false",
    '"\\q"', '"\x1b[31m"', '"a', "x:", 'h:"/p"', "9" * 30, "é", "日本", "\u202e", "-", "'", "Z",
]


def tokens(text: str):
    """Split plan text into lexical pieces (strings, comments, words, numbers, blanks, single characters)."""
    return TOKEN_RE.findall(text)


@st.composite
def mutated(draw, text: str, max_ops: int = 3):
    """`text` with one to `max_ops` token- or character-level mutations."""
    toks = tokens(text)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "char_delete", "char_insert",
                                   "char_replace"]))
        if op in ("delete", "duplicate", "swap", "insert"):
            if not toks:
                toks = [draw(st.sampled_from(EXTRA_TOKENS))]
                continue
            i = draw(st.integers(0, len(toks) - 1))
            if op == "delete":
                del toks[i]
            elif op == "duplicate":
                toks.insert(i, toks[i])
            elif op == "swap":
                j = draw(st.integers(0, len(toks) - 1))
                toks[i], toks[j] = toks[j], toks[i]
            else:
                toks.insert(i, draw(st.sampled_from(EXTRA_TOKENS + toks)))
        else:
            s = "".join(toks)
            i = draw(st.integers(0, max(len(s) - 1, 0)))
            ch = draw(st.one_of(st.sampled_from(EXTRA_TOKENS), st.characters()))
            if op == "char_delete":
                s = s[:i] + s[i + 1:]
            elif op == "char_insert":
                s = s[:i] + ch + s[i:]
            else:
                s = s[:i] + ch + s[i + 1:]
            toks = tokens(s)
    return "".join(toks)
