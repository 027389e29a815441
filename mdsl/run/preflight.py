"""Preflight (P401-P407): read-only checks on every host, in parallel, before the first step.

What the plan needs is derived without I/O (`preflight_needs`); then one thread
per host asks its questions (`preflight_hosts`); the answers are compared across
hosts last, here (P403 versions, P404 sizes). Nothing on a host changes: the
only file written is the 0600 PGPASSFILE a password check needs, removed right
after (the same path `apply` takes, through its `Executor`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

from mdsl.check.rules.p_preflight import P404
from mdsl.compile.context import CompileContext
from mdsl.findings import Finding
from mdsl.model import BoundPlan, Database, Host
from mdsl.run.backend import Backend
from mdsl.run.console import human_bytes
from mdsl.run.executor import Executor  # the same secret-file and sudo handling as the steps
from mdsl.run.preflight_hosts import CHECK_TIMEOUT, HostChecks, HostFacts, preflight_finding
from mdsl.run.preflight_needs import DestNeed, leaves_by_top, plan_needs
from mdsl.run.secrets import SecretStore
from mdsl.stores.base import DatabaseProbe
from mdsl.stores.postgres.commands import RESTORE_PART_FACTOR
from mdsl.stores.registry import probes_of

MARGIN = 1.2  # free space must exceed the estimate times this...
SLACK = 64 << 20  # ...plus this


class Preflight:
    def __init__(self, bound: BoundPlan, compiled, backends: Dict[str, Backend], secrets, timeout: float,
                 journal=None, needs=None, estimates=None):
        self.bound = bound
        self.estimates = estimates  # filled with (host, path) -> bytes expected to land there
        self.ctx = CompileContext(bound)
        self.needs = needs if needs is not None else plan_needs(bound, leaves_by_top(compiled))
        self.backends = backends
        self.executor = Executor(backends, secrets)
        self.executor.journal = journal  # records the paths of the 0600 files the checks make (LazyJournal)
        self.timeout = timeout

    def run(self) -> List[Finding]:
        hosts = [h for h in self.bound.hosts.values() if h.name in self.backends]
        facts: Dict[str, HostFacts] = {}
        lock = threading.Lock()

        def one(h: Host):
            f = HostChecks(self.needs, self.ctx, self.executor, h, self.backends[h.name]).go()
            with lock:
                facts[h.name] = f

        with ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="mdsl-preflight") as pool:
            for fut in [pool.submit(one, h) for h in hosts]:
                fut.result()
        findings: List[Finding] = []
        for h in hosts:
            findings.extend(facts[h.name].findings)
        findings.extend(self.versions(facts))
        findings.extend(self.space(facts))
        if self.estimates is not None:  # the progress bars' totals while the steps run
            for d in self.needs.dests:
                size = None if d.temporary else self.estimate(d, facts)
                if size:
                    self.estimates[(d.host, d.path)] = size
        findings.sort(key=Finding.sort_key)
        return findings

    # -- P403

    def versions(self, facts: Dict[str, HostFacts]) -> List[Finding]:
        out: List[Finding] = []
        seen = set()

        def ver(host: str, word: str):
            f = facts.get(host)
            return f.versions.get(word) if f else None

        def probe_of(db: Database) -> Optional[DatabaseProbe]:
            f = facts.get(db.host)
            return f.dbs.get(db.name) if f else None

        for db, step in self.needs.dumps:
            out += probes_of(db).dump_findings(db, step, ver, probe_of)
        for p in self.needs.pairs:
            key = (p.dump_db.name, p.restore_db.name, id(p.restore_step))
            if key not in seen:
                seen.add(key)
                out += probes_of(p.dump_db).pair_findings(p.dump_db, p.restore_db, p.restore_step, p.plain, ver,
                                                          probe_of)
        return out

    # -- P404

    def space(self, facts: Dict[str, HostFacts]) -> List[Finding]:
        # What lands on one file system and stays there adds up: the plan's artifacts are all kept
        # (a later `delete` or `move` is not counted: a conservative estimate). A temporary file
        # (a restore's decompressed dump, removed when the step ends) adds only while its step runs:
        # what the file system must hold is the peak, everything written up to and during that
        # step (a parallel block's members all at once) plus the block's temporary files, or
        # everything written by the whole plan, whichever is more. Two restores one after the
        # other need room for one decompressed copy, not two.
        groups: Dict[Tuple[str, str], List[Tuple[int, DestNeed, int]]] = {}
        free: Dict[Tuple[str, str], int] = {}
        for i, d in enumerate(self.needs.dests):
            f = facts.get(d.host)
            if f is None or not f.reachable or i not in f.space:
                continue
            size = self.estimate(d, facts)
            if size is None or (d.temporary and size == 0):
                continue
            size = max(0, size - f.landed.get(i, 0))
            avail, mount = f.space[i]
            groups.setdefault((d.host, mount), []).append((i, d, size))
            free[(d.host, mount)] = avail
        out = []
        for (host, mount), items in groups.items():
            kept = [x for x in items if not x[1].temporary]
            peak, at = kept, None  # at: the temporary file written at the peak, if any
            for order in sorted({d.order for _, d, _ in items if d.temporary}):
                during = [(i, d, n) for i, d, n in items if (d.order == order if d.temporary else d.order <= order)]
                if _total(during) > _total(peak):
                    peak, at = during, next(d for _, d, _ in during if d.temporary)
            total = _total(peak)
            need = int(total * MARGIN) + SLACK
            avail = free[(host, mount)]
            if avail >= need:
                continue
            # Named: where it runs out first, with the kept artifacts already or only with the temporary file.
            first = at if at is not None and avail >= int(_total(kept) * MARGIN) + SLACK else (kept or items)[0][1]
            notes = [f"`{d.path}` ({human_bytes(n)}, from `{d.step.keyword}` at line {d.step.span.line}"
                     + (", removed when that step ends" if d.temporary else "") + ")" for _, d, n in peak]
            more = []
            if at is not None:
                more.append(f"the most at once: while the step at line {at.step.span.line} runs (a restore's "
                            f"decompressed dump counts {RESTORE_PART_FACTOR:g}x a compressed dump found on the "
                            "host, or the database's size for a dump the plan makes)")
            out.append(preflight_finding(
                P404, f"not enough free space on `{host}` for `{first.path}`: {human_bytes(avail)} free on "
                f"{mount}, about {human_bytes(need)} needed "
                f"({human_bytes(total)} estimated x{MARGIN:g} + {human_bytes(SLACK)})",
                first.step.span, "free space on that file system, or write to one with room (a different path)",
                ["lands there: " + "; ".join(notes)] + more, label="file system too small"))
        return out

    def estimate(self, d: DestNeed, facts: Dict[str, HostFacts]) -> Optional[int]:
        src = self.needs.size_source(d)
        if src is None:
            return None
        kind, key, host, _ = src
        f = facts.get(host)
        if f is None:
            return None
        if kind == "database":
            # A dump the plan makes, estimated by its database's size; for a temporary decompressed
            # copy too (the uncompressed archive stays below the database's size: no indexes).
            probe = f.dbs.get(key)
            return probe.size if probe and probe.ok else None
        size = f.sizes.get(key)
        if size is not None and d.temporary:
            # A compressed dump found on a host, measured: its decompressed copy (see RESTORE_PART_FACTOR).
            size = int(size * RESTORE_PART_FACTOR)
        return size


def run_preflight(bound: BoundPlan, compiled=None, backends: Optional[Dict[str, Backend]] = None, *,
                  secrets=None, timeout: float = CHECK_TIMEOUT, journal=None, needs=None,
                  estimates: Optional[dict] = None) -> List[Finding]:
    """P401-P407 for every host in `backends` (connected here if needed), all hosts in parallel; read-only.

    `compiled` is the CompiledPlan (or a list of CompiledSteps); compiled here when None.
    `secrets` has `lookup(A.Secret) -> str` (apply's SecretStore); by default env vars and files
    relative to the plan's directory. `journal` (apply's LazyJournal) records the paths of the 0600
    temp files the database checks make, so a run killed meanwhile leaves none for good. `needs`: what
    to check (`plan_needs` of the steps still to run, on a resume); by default every step's. `estimates`,
when given, is filled with the bytes expected to land at each (host, path) (the progress bars' totals).
    """
    if compiled is None:
        from mdsl.compile import compile_plan

        compiled = compile_plan(bound)
    if backends is None:
        backends = {}
    if secrets is None:
        secrets = SecretStore(base_dir=os.path.dirname(os.path.abspath(bound.plan.path)))
    return Preflight(bound, compiled, backends, secrets, timeout, journal, needs, estimates).run()


def _total(items) -> int:
    """The bytes of (index, destination, bytes) items."""
    return sum(n for _, _, n in items)
