"""P412: every copy between two SSH hosts has a route that works, proven before any step runs."""

from __future__ import annotations

from typing import List

from mdsl.check.rules.p_preflight import P412
from mdsl.findings import Finding
from mdsl.run.routes import Routes


def prove_routes(routes: Routes, compiled) -> List[Finding]:
    """Open each route of the plan's host-to-host copies once and log in through it; P412 where that fails.

    A route whose hosts this run does not connect (their steps are done) is not needed and not tried.
    """
    findings: List[Finding] = []
    seen = set()
    for leaf in compiled.leaves():
        for action in leaf.actions:
            route = getattr(action, "route", None)
            if route is None or (route.source, route.target, route.mode) in seen:
                continue
            if route.source not in routes.backends or route.target not in routes.backends:
                continue
            seen.add((route.source, route.target, route.mode))
            why = routes.prove(route)
            if why is not None:
                findings.append(P412.finding(
                    f"step {leaf.id} copies from {route.source} to {route.target}, and no route works "
                    f"(route = {route.mode})", leaf.step.span, label="no working route",
                    notes=(why,),
                    help=("let the source reach the target's address and port (route = direct), or this "
                          "machine reach the target with TCP forwarding allowed on the source's sshd "
                          "(route = relay); `auto` tries both")))
    return findings
