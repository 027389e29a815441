"""parse_text pauses the collector but leaves nothing frozen: a long-lived process (an editor
integration, the test suite) still frees every cycle, and a caller's own frozen objects stay frozen."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest

from mdsl.findings import PlanError
from mdsl.syntax.parser import parse_text

PLAN = 'host a { local = true }\nsteps {\n  run a "true"\n}\n'


class _Node:
    pass


def _garbage_cycle() -> weakref.ref:
    """An unreachable reference cycle the collector has not seen yet; a weak reference to it."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.mark.parametrize("text", [PLAN, "steps { run a \"x\""], ids=["ok", "syntax-error"])
def test_parse_freezes_nothing_and_cycles_made_before_it_are_still_collected(text):
    gc.collect()
    assert gc.get_freeze_count() == 0
    dead = _garbage_cycle()
    with contextlib.suppress(PlanError):
        parse_text(text, "t.plan")
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    gc.collect()
    assert dead() is None, "a cycle that was garbage during the parse was frozen and never freed"


def test_a_callers_frozen_objects_stay_frozen():
    gc.collect()
    keep = [_Node() for _ in range(10)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= 10
        parse_text(PLAN, "t.plan")
        # (frozen objects freed by reference counting meanwhile leave the count: it only must not empty)
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()
    del keep
