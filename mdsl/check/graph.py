"""`mdsl graph`: the plan's data lineage (which step copies what where) as DOT or Mermaid.

Nodes are declared data (databases, dirs, files) and artifacts (a path on a
host); an edge is a step that moves data from one to the other, labelled with
the step's number and keyword. Pure: built from the bound plan, no I/O.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Tuple

from mdsl.model import BoundPlan
from mdsl.syntax import ast as A

Edge = Tuple[str, str, str]  # (from node, to node, label)


def _steps(steps, prefix=""):
    for i, step in enumerate(steps, 1):
        sid = f"{prefix}{i}"
        if isinstance(step, (A.Parallel, A.Sequence)):
            yield from _steps(step.steps, sid + ".")
        else:
            yield sid, step


def lineage(bound: BoundPlan) -> Tuple[Dict[str, Tuple[str, str]], List[Edge]]:
    """Nodes (id -> (label, host)) and edges of the plan's data flow."""
    nodes: Dict[str, Tuple[str, str]] = {}

    def res(name: str) -> str:
        r = bound.resources[name]
        path = getattr(r, "path", "") or getattr(r, "database", "")
        nodes.setdefault(name, (f"{name}\n{r.kind} {path}".rstrip(), r.host))
        return name

    def loc(target: A.Target) -> str:
        place = bound.place(target)
        if place.resource is not None:
            node = res(place.resource)
            if place.subpath:
                sub = f"{place.resource}/{place.subpath}"
                nodes.setdefault(sub, (f"{sub}\n{place.path}", place.host))
                return sub
            return node
        key = f"{place.host}:{place.path}"
        nodes.setdefault(key, (f"{place.host}:{place.path}", place.host))
        return key

    edges: List[Edge] = []
    for sid, s in _steps(bound.steps):
        what = f"{sid} {s.keyword}"
        if isinstance(s, A.Dump):
            edges.append((res(s.db.name), loc(s.to), what))
        elif isinstance(s, A.Archive):
            excl = s.option("exclude")
            if excl is not None:
                what += " (without " + ", ".join(v.value for v in excl.value.items) + ")"
            edges.append((res(s.dir.name), loc(s.to), what))
        elif isinstance(s, A.Restore):
            edges.append((loc(s.source), res(s.db.name), what))
        elif isinstance(s, A.Extract):
            edges.append((loc(s.source), res(s.dir.name), what))
        elif isinstance(s, A.Sync):
            edges.append((res(s.source.name), res(s.dest.name), what + (" live" if s.live else "")))
        elif isinstance(s, (A.Transfer, A.Move)):
            edges.append((loc(s.source), loc(s.dest), what))
        elif isinstance(s, A.Delete):
            node = loc(s.target)
            edges.append((node, "(deleted)", what))
        elif isinstance(s, A.Drop):
            edges.append((res(s.db.name), "(deleted)", what))
    if any(e[1] == "(deleted)" for e in edges):
        nodes["(deleted)"] = ("deleted", "")
    return nodes, edges


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
            shape = ", shape=none" if nid == "(deleted)" else ""
            out.append(f"    {_q(nid)} [label={_q(label)}{shape}];")
        if host:
            out.append("  }")
    for a, b, what in edges:
        style = ", color=red" if b == "(deleted)" else ""
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
