"""`mdsl explain APP`: a profile as a page, every fact followed by its source."""

from __future__ import annotations

import textwrap
from typing import List

from mdsl.apps.profile import Layout, Place, Profile, Source

_WIDTH = 92


def _fact(out: List[str], text: str, source: Source, indent: int = 2) -> None:
    pad = " " * indent
    out.append(textwrap.fill(text, _WIDTH, initial_indent=pad, subsequent_indent=pad + "  "))
    out.append(textwrap.fill(source.show(), _WIDTH, initial_indent=pad + "  ", subsequent_indent=pad + "    "))


def page(p: Profile) -> str:
    """The profile of one app: its data, secrets, invariants, commands and layouts, with sources."""
    out = [f"{p.title} (`app = \"{p.name}\"`): what a move must carry", "", f"Docs: {p.docs}",
           f"Profile: {p.file}", "", "## Data", ""]
    for role in p.roles.values():
        kind = role.kind + (f" ({', '.join(role.stores)})" if role.stores else "")
        extra = " (may be absent)" if role.optional else ""
        inside = f" (inside {role.inside})" if role.inside else ""
        _fact(out, f"{role.name}: a {kind}{inside}{extra}: {role.holds}. Without it: {role.lost}.", role.source)
        for d in role.derived:
            how = ("the app rebuilds it by itself" if d.automatic
                   else f"rebuilt with {d.rebuild}" if d.rebuild else "not rebuilt by any command")
            _fact(out, f"{role.name}/{d.subpath} is derived: {d.holds}; {how}. Until then: {d.lost}.",
                  d.source, indent=4)
    if p.secrets:
        out += ["", "## Secrets", ""]
        for s in p.secrets.values():
            _fact(out, f"{s.key}: lost or new, {s.lost}.", s.source)
    if p.invariants:
        out += ["", "## Invariants", ""]
        for inv in p.invariants:
            scope = f" (between {', '.join(inv.layouts)} layouts)" if inv.layouts else ""
            _fact(out, f"{inv.id} ({inv.kind}){scope}: {inv.broken}.", inv.source)
    if p.commands:
        out += ["", "## Commands around the move", ""]
        for cmd in p.commands:
            _fact(out, f"{cmd.id}, {cmd.when} ({cmd.severity}): `{cmd.run}`: {cmd.why}.", cmd.source)
    out += ["", "## Layouts", ""]
    for name, layout in p.layouts.items():
        _layout(out, name, layout)
    return "\n".join(out).rstrip("\n") + "\n"


def _layout(out: List[str], name: str, layout: Layout) -> None:
    _fact(out, f'layout = "{name}": {layout.title}.', layout.source)
    for what, items in (("units", layout.units), ("compose services", layout.compose_services),
                        ("runs by itself", layout.does)):
        if items:
            out.append(f"    {what}: {', '.join(items)}")
    for role, place in layout.places.items():
        _fact(out, f"{role}: {_place(place)}", place.source, indent=4)
    out.append("")


def _place(place: Place) -> str:
    where = [x for x in (place.path, place.database and f"database {place.database}",
                         place.user and f"user {place.user}") if x]
    if not place.path and place.match:
        where.append("paths like " + ", ".join(place.match))
    text = "; ".join(where) or "(anywhere)"
    if place.auth:
        text += f"; login: {place.auth}"
    if place.fixed:
        text += "; fixed by the layout"
    if place.generated:
        text += f"; when missing: {place.generated}"
    return text
