"""Which steps a run has to do: the journal's done steps form a prefix; everything after runs."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from attrs import define, field

from mdsl.compile.plan import CompiledPlan, CompiledStep
from mdsl.run import journal as J


@define
class Schedule:
    """Which steps the journal lets us skip, and where the run starts."""

    status: Dict[str, str] = field(factory=dict)  # leaf id -> done | pending | changed | before-from
    start: int = 0  # index of the first top-level step with work to do

    def pending(self, compiled: CompiledPlan) -> List[CompiledStep]:
        """Leaves still to run, in order."""
        return [s for s in compiled.leaves() if self.status.get(s.id) not in ("done", "before-from")]


def make_schedule(compiled: CompiledPlan, state: J.JournalState, from_label: Optional[str] = None) -> Schedule:
    """Done leaves form a prefix (a partly done parallel block keeps its done members); fingerprints must match."""
    sched = Schedule()
    start_at = None
    if from_label is not None:
        target = compiled.by_label(from_label)
        if target is None:
            raise KeyError(from_label)
        start_at = target.path[0]
    cut = False
    sched.start = len(compiled.steps)
    for i, top in enumerate(compiled.steps):
        if start_at is not None:
            for leaf in top.leaves():
                sched.status[leaf.id] = "before-from" if i < start_at else "pending"
            if i == start_at:
                sched.start = i
            continue
        lane_cut = set()  # a lane's steps run in order: after one still to run, the rest run again too
        lane_of = {m.id: k for k, lane in enumerate(top.lanes()) for m in lane}
        for leaf in top.leaves():
            rec = state.steps.get(leaf.id)
            lane = lane_of[leaf.id]
            if (not cut and lane not in lane_cut and rec is not None and rec.status == "done"
                    and rec.fingerprint == leaf.fingerprint):
                sched.status[leaf.id] = "done"
            elif rec is not None and rec.status == "done":
                sched.status[leaf.id] = "changed" if rec.fingerprint != leaf.fingerprint else "pending"
            else:
                sched.status[leaf.id] = "pending"
            if sched.status[leaf.id] != "done":
                lane_cut.add(lane)
        if not cut and any(sched.status[x.id] != "done" for x in top.leaves()):
            cut = True
            sched.start = i
    return sched


def invalidate_from(compiled: CompiledPlan, sched: Schedule, top_index: int, leaf_id: str) -> None:
    """A done step's artifact no longer matches: that step and every later one run again."""
    # in a lane, the steps after it (which used what it made) too
    later = {m.id for lane in compiled.steps[top_index].lanes() for k, x in enumerate(lane) if x.id == leaf_id
             for m in lane[k:]}
    for i, top in enumerate(compiled.steps):
        for leaf in top.leaves():
            if (i > top_index or leaf.id == leaf_id or leaf.id in later) and sched.status.get(leaf.id) == "done":
                sched.status[leaf.id] = "pending"
    sched.start = min(sched.start, top_index)


def tally(counts: Dict[str, int], total: int) -> str:
    """`5 done, 1 failed, 2 pending of 8 steps` (`running` too while an apply runs)."""
    shown = ("done", "running", "failed", "pending") if counts.get("running") else ("done", "failed", "pending")
    words = [f"{counts.get(k, 0)} {k}" for k in shown]
    return ", ".join(words) + f" of {total} steps"


def steps_of(part: Tuple[int, int], whole: Tuple[int, int]) -> str:
    """`5 of 8 steps`, counted as the progress counts them (a parallel block is one step), and counting each
    parallel member too when that differs: `5 of 8 steps (8 of 11 counting each parallel member)`.
    `part` and `whole` are (top-level steps, leaves)."""
    text = f"{part[0]} of {whole[0]} steps"
    if part[0] == part[1] and whole[0] == whole[1]:
        return text
    return text + f" ({part[1]} of {whole[1]} counting each parallel member)"


def steps(whole: Tuple[int, int]) -> str:
    """`8 steps`, or `8 steps (11 counting each parallel member)`; `whole` is (top-level steps, leaves)."""
    text = f"{whole[0]} steps"
    return text if whole[0] == whole[1] else text + f" ({whole[1]} counting each parallel member)"


def count_steps(compiled: CompiledPlan, which: Optional[Callable[[CompiledStep], bool]] = None) -> Tuple[int, int]:
    """(top-level steps, leaves) of the plan; with `which`, the leaves it accepts and the top-level steps
    all of whose leaves it accepts (a parallel block counts when every member does)."""
    def accepted(leaf: CompiledStep) -> bool:
        return which is None or which(leaf)

    tops = sum(1 for top in compiled.steps if all(accepted(x) for x in top.leaves()))
    return tops, sum(1 for leaf in compiled.leaves() if accepted(leaf))
