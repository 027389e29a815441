"""`mdsl graph`: the plan's data lineage (which step copies what where) as DOT or Mermaid.

Nodes are declared data (databases, dirs, files) and artifacts (a path on a
host); an edge is a step that moves data from one to the other, labelled with
the step's number and keyword. A subpath a copy excludes gets a node of its
own with what becomes of it: left behind, or rebuilt where the data goes by
its `derived` command (what the seed lost was exactly such a subpath). Pure:
built from the bound plan, no I/O.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from mdsl.model import BoundPlan
from mdsl.syntax import ast as A

Edge = Tuple[str, str, str]  # (from node, to node, label)
# Where data ends that no host keeps: drawn without a box, and the edges into them in red / dashed.
DELETED, LEFT_BEHIND, REBUILT = "(deleted)", "(left behind)", "(rebuilt)"
SINKS = (DELETED, LEFT_BEHIND, REBUILT)


def _steps(steps, prefix=""):
    for i, step in enumerate(steps, 1):
        sid = f"{prefix}{i}"
        if isinstance(step, (A.Parallel, A.Sequence)):
            yield from _steps(step.steps, sid + ".")
        else:
            yield sid, step


def lineage(bound: BoundPlan) -> Tuple[Dict[str, Tuple[str, str]], List[Edge]]:
    """Nodes (id -> (label, host)) and edges of the plan's data flow."""
    graph = _Lineage(bound)
    for sid, step in _steps(bound.steps):
        graph.step(sid, step)
    for sink, label in ((DELETED, "deleted"), (LEFT_BEHIND, "left behind"), (REBUILT, "rebuilt where the data goes")):
        if any(e[1] == sink for e in graph.edges):
            graph.nodes[sink] = (label, "")
    return graph.nodes, graph.edges


class _Lineage:
    def __init__(self, bound: BoundPlan):
        self.bound = bound
        self.nodes: Dict[str, Tuple[str, str]] = {}
        self.edges: List[Edge] = []

    def res(self, name: str) -> str:
        r = self.bound.resources[name]
        path = getattr(r, "path", "") or getattr(r, "database", "")
        self.nodes.setdefault(name, (f"{name}\n{r.kind} {path}".rstrip(), r.host))
        return name

    def loc(self, target: A.Target) -> str:
        place = self.bound.place(target)
        if place.resource is not None:
            node = self.res(place.resource)
            if place.subpath:
                sub = f"{place.resource}/{place.subpath}"
                self.nodes.setdefault(sub, (f"{sub}\n{place.path}", place.host))
                return sub
            return node
        key = f"{place.host}:{place.path}"
        self.nodes.setdefault(key, (f"{place.host}:{place.path}", place.host))
        return key

    def excluded(self, step, sid: str, name: str, what: str) -> str:
        """Edges for the subpaths `step` leaves out of dir `name`; the copy's label says which."""
        opt = step.option("exclude")
        if opt is None:
            return what
        d = self.bound.resources[name]
        rebuilds = {derived.subpath: derived.rebuild for derived in d.derived}
        subs = [v.value for v in opt.value.items]
        for sub in subs:
            node = f"{name}/{sub}"
            self.nodes.setdefault(node, (f"{node}\n{d.path}/{sub}", d.host))
            rebuild = rebuilds.get(sub)
            if rebuild is None:
                self.edges.append((node, LEFT_BEHIND, f"{sid} {step.keyword}: excluded, not copied"))
            else:
                self.edges.append((node, REBUILT, f"{sid} {step.keyword}: excluded; rebuilt by `{rebuild}`"))
        return what + " (without " + ", ".join(subs) + ")"

    def step(self, sid: str, s: A.Step) -> None:
        what = f"{sid} {s.keyword}"
        if isinstance(s, A.Dump):
            self.edges.append((self.res(s.db.name), self.loc(s.to), what))
        elif isinstance(s, A.Archive):
            what = self.excluded(s, sid, s.dir.name, what)
            self.edges.append((self.res(s.dir.name), self.loc(s.to), what))
        elif isinstance(s, (A.Restore, A.Extract)):
            into = s.db if isinstance(s, A.Restore) else s.dir
            self.edges.append((self.loc(s.source), self.res(into.name), what))
        elif isinstance(s, A.Sync):
            what = self.excluded(s, sid, s.source.name, what + (" live" if s.live else ""))
            self.edges.append((self.res(s.source.name), self.res(s.dest.name), what))
        elif isinstance(s, A.Replicate):
            self.edges.append((self.res(s.source.name), self.res(s.dest.name), what + (" live" if s.live else "")))
        elif isinstance(s, (A.Transfer, A.Move)):
            self.edges.append((self.loc(s.source), self.loc(s.dest), what))
        elif isinstance(s, A.Delete):
            self.edges.append((self.loc(s.target), DELETED, what))
        elif isinstance(s, A.Drop):
            self.edges.append((self.res(s.db.name), DELETED, what))


def _q(text: str) -> str:
    return json.dumps(text)  # a DOT string literal: quotes and backslashes escaped


def to_dot(bound: BoundPlan) -> str:
    """Graphviz DOT, one cluster per host."""
    nodes, edges = lineage(bound)
    title = bound.plan.title.value if bound.plan.title else bound.plan.path
    out = ["digraph mdsl {", f"  label={_q(title)};", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    by_host: Dict[str, List[str]] = {}
    for nid, (_, host) in nodes.items():
        by_host.setdefault(host, []).append(nid)
    for i, (host, ids) in enumerate(sorted(by_host.items())):
        if host:
            out.append(f"  subgraph cluster_{i} {{ label={_q(host)};")
        for nid in ids:
            label = nodes[nid][0]
            shape = ", shape=none" if nid in SINKS else ""
            out.append(f"    {_q(nid)} [label={_q(label)}{shape}];")
        if host:
            out.append("  }")
    for a, b, what in edges:
        style = {DELETED: ", color=red", LEFT_BEHIND: ", color=red, style=dashed",
                 REBUILT: ", style=dashed"}.get(b, "")
        out.append(f"  {_q(a)} -> {_q(b)} [label={_q(what)}{style}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _mid(nid: str, ids: Dict[str, str]) -> str:
    return ids.setdefault(nid, f"n{len(ids)}")


def _mq(text: str) -> str:
    # Mermaid labels: quotes become #quot; and line breaks <br/>
    return '"' + text.replace('"', "#quot;").replace("\n", "<br/>") + '"'


def to_mermaid(bound: BoundPlan) -> str:
    """A Mermaid flowchart, one subgraph per host."""
    nodes, edges = lineage(bound)
    ids: Dict[str, str] = {}
    out = ["flowchart LR"]
    by_host: Dict[str, List[str]] = {}
    for nid, (_, host) in nodes.items():
        by_host.setdefault(host, []).append(nid)
    for i, (host, members) in enumerate(sorted(by_host.items())):
        if host:  # an id of our own: a host may be called `end`, a Mermaid keyword
            out.append(f"  subgraph host{i}[{_mq(host)}]")
        for nid in members:
            out.append(f"    {_mid(nid, ids)}[{_mq(nodes[nid][0])}]")
        if host:
            out.append("  end")
    for a, b, what in edges:
        out.append(f"  {_mid(a, ids)} -->|{_mq(what)}| {_mid(b, ids)}")
    return "\n".join(out) + "\n"


def render_graph(bound: BoundPlan, fmt: Optional[str] = "dot") -> str:
    """The lineage in `fmt` (`dot` or `mermaid`)."""
    return to_mermaid(bound) if fmt == "mermaid" else to_dot(bound)
