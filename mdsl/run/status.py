"""What `mdsl status` says: each step done, running, failed or pending, from the journal and the lock.

Steps are counted as the progress of `mdsl apply` counts them (`[3/8]`: a
parallel block is one step), and counting each parallel member too where that
differs, so the numbers agree with what apply printed.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Dict, List, Optional, Tuple

from attrs import frozen

from mdsl.compile.plan import CompiledPlan, CompiledStep
from mdsl.run import journal as J
from mdsl.run.console import human_bytes
from mdsl.run.schedule import Schedule, tally


@frozen
class StatusReport:
    """The text `mdsl status` prints, and how many steps failed (its exit status is 1 when any did)."""

    text: str
    failed: int


def status_report(compiled: CompiledPlan, state: J.JournalState, jpath: str, sched: Schedule,
                  live: Optional[dict] = None) -> StatusReport:
    """The report; `live` is what the lock says while an apply of the plan runs (J.running_apply), else None."""
    lines = [f"journal: {jpath}" + ("" if os.path.exists(jpath) else " (none yet: nothing has run)")]
    if live is not None:
        lines.append("an apply of this plan is running"
                     + (f" (pid {live.get('pid')}, started {live.get('started', '?')})" if live else
                        " (it has only just started)"))
    if state.runs:
        lines.append(f"runs: {state.runs}, last started {state.last_run_at}"
                     + (", finished ok" if state.finished_ok and live is None else ""))
    if state.torn_lines:
        lines.append(f"note: {state.torn_lines} torn journal line(s) ignored (a crash mid-write)")
    tops: Counter = Counter()
    leaves: Counter = Counter()
    for top in compiled.steps:
        words = _top_lines(top, state, sched, (live or {}).get("started"), lines)
        leaves.update(words)
        tops[_block_word(words)] += 1
    n_tops, n_leaves = len(compiled.steps), sum(leaves.values())
    summary = tally(tops, n_tops)
    if n_tops != n_leaves:
        summary += f" ({tally(leaves, n_leaves)}, counting each parallel member)"
    lines.append(summary)
    return StatusReport("\n".join(lines), leaves["failed"])


def _block_word(words: List[str]) -> str:
    """A top-level step's state from its members': any failed or running says so; done when all are."""
    for word in ("failed", "running"):
        if word in words:
            return word
    return "done" if all(w == "done" for w in words) else "pending"


def _top_lines(top: CompiledStep, state: J.JournalState, sched: Schedule, live_since: Optional[str],
               lines: List[str]) -> List[str]:
    """Append the lines of one top-level step (a block's header, its lanes' headers, its leaves); their states."""
    if top.is_parallel:
        lines.append(f"[{top.id}] {top.title}")
    groups: Dict[Tuple[int, ...], CompiledStep] = {}  # a block's lanes and inner blocks, headed like the block
    todo, shown = list(top.members), set()
    while todo:
        m = todo.pop()
        if m.members:
            groups[m.path] = m
            todo.extend(m.members)
    words = []
    for leaf in top.leaves():
        for k in range(2, len(leaf.path)):
            g = groups.get(leaf.path[:k])
            if g is not None and g.path not in shown:
                shown.add(g.path)
                lines.append("  " * (k - 1) + f"[{g.id}] {g.title}")
        word, detail = _leaf_state(leaf, state, sched.status.get(leaf.id, "pending"), live_since)
        words.append(word)
        lines.append("  " * (len(leaf.path) - 1) + f"[{leaf.id}] {word:<8} {leaf.title}"
                     + (f"    -- {detail}" if detail else ""))
    return words


def _leaf_state(leaf: CompiledStep, state: J.JournalState, st: str, live_since: Optional[str]) -> Tuple[str, str]:
    """(done | running | failed | pending, what the journal adds); `live_since`: when the running apply began."""
    rec = state.steps.get(leaf.id)
    if st == "done":
        detail = f"{rec.at}, {rec.seconds or 0:.1f}s"
        if rec.artifacts:
            detail += "; " + ", ".join(
                f'{a.host}:"{a.path}" {human_bytes(a.size)}'
                + (f" sha256 {a.sha256[:12]}" if a.sha256 else " (secret: size only)")
                for a in rec.artifacts)
        return "done", detail
    if rec is not None and rec.status == "failed" and rec.fingerprint == leaf.fingerprint:
        return "failed", f"{rec.at}: {rec.error}" + (f" (host {rec.host})" if rec.host else "")
    if rec is not None and rec.status == "started":
        # started by the apply running now, not by an earlier one that was killed (UTC ISO 8601 compares as text)
        if live_since is not None and rec.at >= live_since:
            return "running", f"since {rec.at}"
        return "pending", f"started {rec.at} and never finished (interrupted?)"
    if rec is not None and rec.status == "rolled-back":
        return "pending", "undone by a rollback: it runs again"
    if st == "changed":
        return "pending", "the step changed since it ran: it runs again"
    return "pending", ""
