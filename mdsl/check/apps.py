"""The app a plan moves, as the checker sees it: which services run it on the old and the new host
(`app = "..."` and `layout = "..."` on a service), which declarations hold each of the profile's
roles there, and when things happen (first start, stops, `run` steps), read off the walk's
results. The A1xx rules (`rules/a_apps.py`) judge a move from this; nothing here reports.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from mdsl.apps.profile import Layout, Place, Profile, Role
from mdsl.apps.profile import load as load_profile
from mdsl.model import BoundPlan, Resource, Service
from mdsl.syntax import ast as A


class Side:
    """The services running the app on one host, in one layout."""

    def __init__(self, services: List[Service], layout: Layout):
        self.services = services
        self.layout = layout
        self.host = services[0].host
        self.names = {s.name for s in services}


class Timeline:
    """When each step runs (the walk's positions) and what the app-relevant steps are."""

    def __init__(self, bound: BoundPlan, positions: Dict[int, int]):
        self.positions = positions
        self.starts: Dict[str, List[Tuple[int, A.Step]]] = {}
        self.stops: Dict[str, List[Tuple[int, A.Step]]] = {}
        self.runs: List[Tuple[int, str, str, A.Run]] = []  # (position, host, command, step)
        self.restores: List[Tuple[int, A.Restore]] = []
        self.drops: List[Tuple[int, A.Drop]] = []
        for step in A.walk_steps(bound.steps):
            pos = positions.get(id(step))
            if pos is None:
                continue
            if isinstance(step, (A.Start, A.Restart)):
                for ident in step.services:
                    self.starts.setdefault(ident.name, []).append((pos, step))
            elif isinstance(step, A.Stop):
                for ident in step.services:
                    self.stops.setdefault(ident.name, []).append((pos, step))
            elif isinstance(step, A.Run):
                self.runs.append((pos, step.host.name, " ".join(step.command.value.split()), step))
            elif isinstance(step, A.Restore):
                self.restores.append((pos, step))
            elif isinstance(step, A.Drop):
                self.drops.append((pos, step))
        for lists in (self.starts, self.stops):
            for events in lists.values():
                events.sort(key=lambda e: e[0])
        self.runs.sort(key=lambda r: r[0])

    def pos(self, step: A.Step) -> int:
        """The position of a step (parallel members share their block's)."""
        return self.positions[id(step)]

    def first(self, events: Dict[str, List[Tuple[int, A.Step]]], names) -> Optional[Tuple[int, A.Step]]:
        """The earliest event of any of these services."""
        found = [events[n][0] for n in names if n in events]
        return min(found, key=lambda e: e[0]) if found else None


class AppMove:
    """One app moved by the plan: its profile, the old side, the new side (None when no service of
    the app is started), and the declarations holding each role on the old host."""

    def __init__(self, profile: Profile, source: Side, target: Optional[Side], bound: BoundPlan):
        self.profile = profile
        self.source = source
        self.target = target
        self.bound = bound
        self.roles: Dict[str, List[Resource]] = {name: role_decls(bound, profile, role, source)
                                                 for name, role in profile.roles.items()}

    @property
    def title(self) -> str:
        """The app's name as messages show it."""
        return self.profile.title

    def holders(self, role: str) -> List[Resource]:
        """The declarations carrying a role: its own, else those of the role it lives inside, else
        a declared dir that holds the path the old side's layout keeps it at (Gitea's release
        binary keeps its repositories in data/gitea-repositories: the data dir carries them)."""
        own = self.roles.get(role, [])
        inside = self.profile.roles[role].inside
        if own:
            return own
        if inside is not None:
            return self.roles.get(inside, [])
        place = self.place(self.source, role)
        if place is None or not place.path:
            return []
        return [d for other, decls in self.roles.items() if other != role for d in decls
                if d.is_dir and getattr(d, "path", "") and place.path.startswith(d.path.rstrip("/") + "/")]

    def place(self, side: Side, role: str) -> Optional[Place]:
        """Where the side's layout keeps a role."""
        return side.layout.places.get(role)

    def where(self, side: Side, role: str) -> str:
        """The role's default path or database name in the side's layout, for messages."""
        place = self.place(side, role)
        if place is None:
            return ""
        if place.path:
            return place.path
        if place.database:
            return f"database `{place.database}`"
        return " or ".join(place.match)


def app_moves(bound: BoundPlan) -> List[AppMove]:
    """Every app the plan names, with its old and new side."""
    by_app: Dict[str, List[Service]] = {}
    for r in bound.resources.values():
        if r.kind == "service" and getattr(r, "app", None):
            by_app.setdefault(r.app, []).append(r)
    moves = []
    for app, services in by_app.items():
        profile = load_profile(app)
        if profile is None:
            continue  # resolve reported it (E106)
        old = [s for s in services if s.initially_running]
        new = [s for s in services if not s.initially_running]
        if not old:
            continue
        source = _side(profile, old)
        target = _side(profile, new) if new else None
        if source is not None:
            moves.append(AppMove(profile, source, target, bound))
    return moves


def _side(profile: Profile, services: List[Service]) -> Optional[Side]:
    layout = profile.layouts.get(services[0].layout or "")
    if layout is None:
        return None
    host = services[0].host
    return Side([s for s in services if s.host == host], layout)


def role_decls(bound: BoundPlan, profile: Profile, role: Role, side: Side) -> List[Resource]:
    """The declarations on the side's host that hold a role: a database of a store kind the app
    supports (the one its services use, or the one named as the layout names it), or a dir or file
    at the layout's path or one of its patterns. The services' own data comes first."""
    place = side.layout.places.get(role.name)
    used = set()
    for s in side.services:
        used.update(s.writes)
        used.update(s.reads)
    host_data = [r for r in bound.resources.values() if r.is_data and r.host == side.host]
    if role.kind == "database":
        stores = (place.store,) if place is not None and place.store else role.stores
        dbs = [r for r in host_data if r.is_database and r.kind in stores]
        by_path = [r for r in dbs if place is not None and getattr(r, "path", "") and place.matches(r.path)]
        by_name = [r for r in dbs if place is not None and place.database
                   and getattr(r, "database", None) == place.database]
        mine = [r for r in dbs if r.name in used]
        for choice in (by_path, by_name, mine):
            if choice:
                return _used_first(choice, used)[:1]
        return dbs if len(dbs) == 1 else []
    if place is None:
        return []
    found = [r for r in host_data if not r.is_database and getattr(r, "path", "") and place.matches(r.path)]
    return _used_first(found, used)


def _used_first(found: List[Resource], used) -> List[Resource]:
    return sorted(found, key=lambda r: (r.name not in used, r.name))


def on_host(bound: BoundPlan, host: str) -> List[Resource]:
    """The declared data on a host."""
    return [r for r in bound.resources.values() if r.is_data and r.host == host]
