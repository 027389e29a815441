"""A1: the app's own hazards. When a service names its app (`app = "..."`, `layout = "..."`),
the plan is held to the app's profile (mdsl/apps/profiles): its secrets, invariants, derived
caches, the commands a move needs, the data it must carry, and its layout's names and paths.
Judged once the walk is over, on its results (where each piece of data went, and when)."""

from __future__ import annotations

import difflib
import re
from fnmatch import fnmatchcase
from typing import Iterator, List, Optional, Tuple

from mdsl.check.apps import AppMove, Side, Timeline, app_moves, on_host
from mdsl.check.rebuilds import plan_rebuilds
from mdsl.check.rules.a_examples import GITEA, MASTODON, NEXTCLOUD
from mdsl.check.rules.base import ERROR, INFO, WARNING, Rule
from mdsl.check.state import covers
from mdsl.findings import Finding, Severity
from mdsl.syntax import ast as A

_PROFILE = "The facts come from the app's profile; `mdsl explain APP` shows each with its source."

A101 = Rule(
    "A101", "an app secret does not reach the new host before the app first starts", ERROR,
    summary=(
        "An app keeps secrets in a file (Mastodon's .env.production, Nextcloud's config.php, Gitea's "
        "app.ini, Synapse's signing key, Vaultwarden's rsa_key.pem). When the new service first starts "
        "without them, the app makes new ones, or its layout does (the NixOS Mastodon module writes "
        "fresh secret files), and whatever the old ones protected breaks: sessions, two-factor "
        "authentication, push subscriptions, federation signatures. The profile names each key and "
        "what breaks without it; the finding lists them in the app's own words. " + _PROFILE),
    bad=GITEA.replace("  transfer old_ini to new_ini\n", ""),
    fixed=GITEA,
    source="Mastodon's backup guide (docs.joinmastodon.org/admin/backups): without the application "
           "secrets users are logged out, two-factor authentication becomes unavailable and Web Push "
           "subscriptions stop working; the seed's NixOS module generates fresh ones when they are missing.",
)

A102 = Rule(
    "A102", "the move breaks one of the app's invariants", ERROR,
    summary=(
        "Some things about an app must not change when it moves: a path its database remembers "
        "(Nextcloud's data directory, which its storage ids embed), a setting that is its identity "
        "(Mastodon's LOCAL_DOMAIN, Synapse's server_name), or the rule that its dump is restored only "
        "into an empty database (Synapse, Immich, Mastodon). The checker compares the old and new "
        "paths of the data it followed, reads every `run` for a command that changes such a setting, "
        "and requires `replace` (or a `drop` first) on the restore. " + _PROFILE),
    bad=NEXTCLOUD.replace('dir new_data on new { path = "/var/www/nextcloud/data"',
                          'dir new_data on new { path = "/srv/nextcloud/data"'),
    fixed=NEXTCLOUD,
    source="Nextcloud's migration guide (docs.nextcloud.com, admin manual, maintenance/migrating): "
           "'Changing the location of the data directory might cause a corruption of relations in the "
           "database and is not supported'. mdsl's own plans/nextcloud-to-bigger-disk.plan did exactly "
           "that until this check caught it; it now mounts the bigger disk at the old path.",
)

A103 = Rule(
    "A103", "a cache the app can rebuild is left behind and never rebuilt", WARNING,
    summary=(
        "Parts of an app's data dir are derived: Mastodon's public/system/cache (remote avatars and "
        "media), Synapse's remote media, Immich's thumbnails, Paperless's search index and thumbnails. "
        "Leaving one behind is fine only if it is rebuilt where the data goes: the profile names the "
        "command, and a `run` on the new host after the data arrived must run it. A cache the app "
        "refetches by itself on demand is an info; one rebuilt only from the web interface is an info "
        "reminder naming the job. " + _PROFILE),
    bad=MASTODON.replace('compress = zstd\n', 'compress = zstd exclude "cache"\n', 1),
    fixed=MASTODON.replace('compress = zstd\n', 'compress = zstd exclude "cache"\n', 1).replace(
        'owner = "mastodon:mastodon" }\ndir new_system',
        'owner = "mastodon:mastodon"\n  derived "cache" rebuild "mastodon-tootctl accounts refresh --all" }\n'
        'dir new_system').replace(
        '  start new_app\n', '  start new_app\n  run new "mastodon-tootctl accounts refresh --all" reads = [new_db]\n'),
    source="the seed (gianarb, 'From Ubuntu to NixOS, the story of a mastodon migration'): the cache "
           "folder held every remote avatar; it took `tootctl accounts refresh` to get them back.",
    also=(INFO,),
)

A104 = Rule(
    "A104", "a command the app needs around the move is missing", WARNING,
    summary=(
        "Apps need a few commands of their own around a move: Nextcloud's maintenance mode on before "
        "its web server stops and off after the new one starts, Gitea's `admin regenerate hooks` "
        "once it runs on the new host (the hooks embed the old paths: pushes fail), Mastodon's "
        "`tootctl feeds build` (home timelines live in Redis), Synapse's one-time keys cleared before "
        "the first start. The checker looks for a `run` on the right host at the right time; a "
        "layout that runs the command by itself (the NixOS Gitea module regenerates hooks at every "
        "start) needs none. Severity as the profile says (an info for a conditional one). " + _PROFILE),
    bad=GITEA.replace('  run new "sudo -u git gitea admin regenerate hooks --config /etc/gitea/app.ini" '
                      'reads = [new_ini] writes = [new_repos]\n', ''),
    fixed=GITEA,
    source="Gitea's backup and restore guide (docs.gitea.com/administration/backup-and-restore): "
           "'If these paths are not updated, repository push actions will fail.'",
    also=(ERROR, INFO),
)

A105 = Rule(
    "A105", "the app's data or database never reaches the new host", ERROR,
    summary=(
        "The profile lists the app's data: its database and each data dir (Mastodon's public/system, "
        "Gitea's repositories, Immich's library). When the old host's copy of one never reaches a "
        "declared place on the new host, or the plan does not declare it at all, the app starts on "
        "the new host without it. The message says what that costs in the app's terms. Data kept "
        "elsewhere on purpose (object storage, a shared database) is allowed with a reason: "
        "`# mdsl: allow A105 \"media on S3\"` on the service. " + _PROFILE),
    bad=GITEA.replace("  sync old_repos to new_repos\n", ""),
    fixed=GITEA,
    source="Gitea's backup guide: 'Gitea consists of a database, files and git repositories'; "
           "Mastodon's migration guide lists the database, public/system and .env.production.",
)

A106 = Rule(
    "A106", "a service or path does not match the app's layout", WARNING,
    summary=(
        "A layout names its units and some of its paths: the NixOS Mastodon module runs "
        "mastodon-sidekiq-all and mastodon-streaming.target (no mastodon-sidekiq), and reads its "
        "media only from /var/lib/mastodon/public-system. A unit the layout does not have fails to "
        "start; data put where the layout does not look is data the app never sees. " + _PROFILE),
    bad=MASTODON.replace('"mastodon-sidekiq-all", "mastodon-streaming.target"',
                         '"mastodon-sidekiq", "mastodon-streaming"'),
    fixed=MASTODON,
    source="the nixpkgs Mastodon module (nixos/modules/services/web-apps/mastodon.nix): "
           "PAPERCLIP_ROOT_PATH is fixed, sidekiq and streaming units are numbered or grouped.",
)

RULES = (A101, A102, A103, A104, A105, A106)


def at_end(walk) -> List[Finding]:
    """Every A1xx finding of the plan, from the walk's results."""
    moves = app_moves(walk.bound)
    if not moves:
        return []
    when = Timeline(walk.bound, _positions(walk))
    out: List[Finding] = []
    for move in moves:
        judge = _Judge(walk, move, when)
        for check in (judge.layout_names, judge.data_copied, judge.secrets, judge.invariants, judge.derived,
                      judge.commands):
            out.extend(check())
    return out


def _positions(walk):
    index = getattr(walk, "index", None)  # the walk keeps its positions itself, or in its plan index
    return index.positions if index is not None else walk.positions


def _attr(decl: A.ResourceDecl, key: str) -> A.Span:
    for a in decl.attrs:
        if a.key.name == key:
            return a.span
    return decl.name.span


class _Judge:
    """The checks of one app move."""

    def __init__(self, walk, move: AppMove, when: Timeline):
        self.walk = walk
        self.move = move
        self.when = when
        self.bound = walk.bound
        self.decls = {d.name.name: d for d in walk.bound.plan.decls}
        self.start = when.first(when.starts, move.target.names) if move.target else None
        self.target_data = on_host(self.bound, move.target.host) if move.target else []

    # ------------------------------------------------------------ helpers

    def app_span(self, side: Side) -> A.Span:
        return _attr(self.decls[side.services[0].name], "app")

    def arrival(self, origin: str) -> Optional[Tuple[int, A.Step, str]]:
        """The first step bringing `origin`'s data into a declared place on the new host: (position, step, place)."""
        if self.move.target is None:
            return None
        best = None
        for r in self.target_data:
            step = self.walk.first_arrival.get((r.name, origin))
            if step is not None:
                pos = self.when.pos(step)
                if best is None or pos < best[0]:
                    best = (pos, step, r.name)
        return best

    def receivers(self, origin: str) -> List[Tuple[str, A.Step]]:
        """Declared places on the new host that received `origin`'s data, with the step that first did."""
        out = []
        for r in self.target_data:
            step = self.walk.first_arrival.get((r.name, origin))
            if step is not None:
                out.append((r.name, step))
        return out

    def at_target(self, piece) -> bool:
        """True when a declared place on the new host holds the piece at the end."""
        places = self.walk.state.places
        return any(places[k].resource is not None and places[k].host == self.move.target.host
                   for k in piece.holders)

    def rebuilds(self):
        """The plan's derived rebuilds and where they run (shared with H102 and compile)."""
        got = self.walk.memo.get("rebuilds")
        if got is None:
            got = self.walk.memo["rebuilds"] = plan_rebuilds(self.walk.bound)
        return got

    def runs(self, host: str, pattern: str, after: int = -1, before: Optional[int] = None):
        """`run` steps on `host` between two positions whose command matches `pattern`."""
        rx = re.compile(pattern)
        return [(pos, step) for pos, h, cmd, step in self.when.runs
                if h == host and pos > after and (before is None or pos < before) and rx.search(cmd)]

    # ------------------------------------------------------------ A106

    def layout_names(self) -> Iterator[Finding]:
        move = self.move
        for side in filter(None, (move.source, move.target)):
            units = side.layout.units
            if not units:
                continue
            for svc in side.services:
                for unit in svc.systemd:
                    if any(fnmatchcase(unit, u) or fnmatchcase(f"{unit}.service", u) for u in units):
                        continue
                    close = difflib.get_close_matches(unit, [u for u in units if "*" not in u], n=1, cutoff=0.5)
                    yield A106.finding(
                        span=_attr(self.decls[svc.name], "systemd"),
                        message=f"{move.title} installed as {side.layout.title} has no unit `{unit}`",
                        label="not a unit of this layout",
                        notes=(f"its units: {', '.join(units)}", side.layout.source.show()),
                        help=f"did you mean `{close[0]}`?" if close else "name the layout's units")
        if move.target is None:
            return
        for role, place in move.target.layout.places.items():
            if not (place.fixed and place.path):
                continue
            for decl in move.roles.get(role, ()):
                for name, step in self.receivers(decl.name):
                    path = getattr(self.bound.resources[name], "path", "")
                    if path and path.rstrip("/") != place.path.rstrip("/"):
                        yield A106.finding(
                            span=step.span,
                            message=(f"{move.title} as {move.target.layout.title} reads its {role} only from "
                                     f"{place.path}, but this puts it in {name} ({path})"),
                            label=f"{move.title} will not see it there",
                            notes=(place.source.show(),),
                            help=f"declare {name} with path = \"{place.path}\"")

    # ------------------------------------------------------------ A105

    def data_copied(self) -> Iterator[Finding]:
        move = self.move
        if move.target is None:
            return
        for name, role in move.profile.roles.items():
            if role.kind == "file" or role.secrets or role.optional:
                continue
            decls = move.holders(name)
            if not decls:
                where = move.where(move.source, name)
                yield A105.finding(
                    span=self.app_span(move.source),
                    message=f"the plan does not declare {move.title}'s {name} ({role.holds}), so it is never copied",
                    label=f"{move.title} on {move.source.host}",
                    notes=(f"without it: {role.lost}",) + ((f"{move.source.layout.title}: {where}",) if where else ())
                    + (role.source.show(),),
                    help=f"declare it on {move.source.host} and copy it to {move.target.host}")
                continue
            derived = [d.subpath for d in role.derived]
            for decl in decls:
                missing = [p for p in self.walk.pieces[decl.name]
                           if p.rebuild is None and not any(covers(p.subpath, d) for d in derived)
                           and not self.at_target(p)]
                if not missing:
                    continue
                what = ", ".join(p.name for p in missing)
                yield A105.finding(
                    span=(self.start[1] if self.start else self.decls[decl.name]).span,
                    message=f"{what} ({move.title}'s {name}: {role.holds}) never reaches {move.target.host}",
                    label=f"{move.title} starts on {move.target.host} without it" if self.start else "never copied",
                    notes=(f"without it: {role.lost}", role.source.show()),
                    help=f"copy {decl.name} into a declared place on {move.target.host} before the app starts")

    # ------------------------------------------------------------ A101

    def secrets(self) -> Iterator[Finding]:
        move = self.move
        if move.target is None or self.start is None:
            return
        start_pos, start_step = self.start
        for name, role in move.profile.roles.items():
            if not role.secrets:
                continue
            decls = move.holders(name)
            if not decls and role.optional:
                continue
            got = [a for a in (self.arrival(d.name) for d in decls) if a is not None]
            if got and min(a[0] for a in got) < start_pos:
                continue
            keys = [move.profile.secrets[k] for k in role.secrets]
            notes = [f"{k.key}: {k.lost}" for k in keys]
            place = move.place(move.target, name)
            if place is not None and place.generated:
                notes.append(f"{move.target.layout.title}: {place.generated}")
            notes.append(role.source.show())
            if not decls:
                where = move.where(move.source, name)
                message = (f"{move.title}'s secrets ({', '.join(role.secrets)}) are never copied to "
                           f"{move.target.host}: the plan declares no {name} on {move.source.host}"
                           + (f" ({where})" if where else ""))
                help = f"declare it (`secret = true`) and copy it to {move.target.host} before this start"
            else:
                held = ", ".join(d.name for d in decls)
                if got:
                    message = (f"{move.title}'s secrets in {held} ({', '.join(role.secrets)}) reach "
                               f"{move.target.host} only after {move.title} first starts there")
                else:
                    message = (f"{move.title}'s secrets in {held} ({', '.join(role.secrets)}) never reach "
                               f"{move.target.host}")
                help = f"copy {decls[0].name} to {move.target.host} before this start"
            yield A101.finding(span=start_step.span, message=message,
                               label=f"{move.title} starts here without its secrets", notes=tuple(notes), help=help)

    # ------------------------------------------------------------ A102

    def invariants(self) -> Iterator[Finding]:
        move = self.move
        for inv in move.profile.invariants:
            if inv.kind == "setting":
                for _pos, step in self.runs_any(inv.change):
                    yield A102.finding(
                        span=step.span, message=f"this command changes {move.title}'s {inv.setting}",
                        label=f"changes {inv.setting}", notes=(inv.broken, inv.source.show()), help=inv.help or None)
            if move.target is None:
                continue
            if inv.layouts and not {move.source.layout.name, move.target.layout.name} <= set(inv.layouts):
                continue
            if inv.kind == "same-path":
                yield from self.same_path(inv)
            elif inv.kind == "empty-database":
                yield from self.empty_database(inv)

    def runs_any(self, pattern: str):
        rx = re.compile(pattern)
        return [(pos, step) for pos, _h, cmd, step in self.when.runs if rx.search(cmd)]

    def same_path(self, inv) -> Iterator[Finding]:
        for decl in self.move.roles.get(inv.role, ()):
            old = getattr(decl, "path", "").rstrip("/")
            for name, step in self.receivers(decl.name):
                new = getattr(self.bound.resources[name], "path", "").rstrip("/")
                if old and new and new != old:
                    yield A102.finding(
                        span=step.span,
                        message=f"{self.move.title}'s {inv.role} moves from {old} to {new} ({decl.name} -> {name})",
                        label=f"{inv.setting or inv.role} changes here", notes=(inv.broken, inv.source.show()),
                        help=inv.help or None)

    def empty_database(self, inv) -> Iterator[Finding]:
        for decl in self.move.roles.get(inv.role, ()):
            for name, step in self.receivers(decl.name):
                if not isinstance(step, A.Restore) or step.option("replace") is not None:
                    continue
                pos = self.when.pos(step)
                if any(p < pos and d.db.name == name for p, d in self.when.drops):
                    continue
                yield A102.finding(
                    span=step.span, message=f"{self.move.title}'s dump is restored into {name} without emptying it",
                    label="not an empty database", notes=(inv.broken, inv.source.show()),
                    help=inv.help or "add `replace`")

    # ------------------------------------------------------------ A103

    def derived(self) -> Iterator[Finding]:
        move = self.move
        if move.target is None:
            return
        host = move.target.host
        for name, role in move.profile.roles.items():
            for d in role.derived:
                for decl in move.roles.get(name, ()):
                    left = [p for p in self.walk.pieces[decl.name]
                            if covers(p.subpath, d.subpath) and not self.at_target(p)]
                    if not left:
                        continue
                    arrived = self.arrival(decl.name)
                    after = arrived[0] if arrived else -1
                    span = (arrived[1] if arrived else self.decls[decl.name]).span
                    what = f"{decl.name}/{d.subpath}"
                    notes = [f"it holds {d.holds}", d.source.show()]
                    if d.automatic:
                        yield A103.finding(span=span, severity=Severity.INFO,
                                           message=f"{what} stays behind; {move.title} rebuilds it by itself",
                                           label=f"{d.subpath} left behind", notes=[f"until then: {d.lost}"] + notes)
                        continue
                    if not d.rebuild_match:
                        yield A103.finding(span=span, severity=Severity.INFO,
                                           message=f"{what} stays behind: run {d.rebuild} on {host}",
                                           label=f"{d.subpath} left behind", notes=[f"until then: {d.lost}"] + notes)
                        continue
                    own = {p.rebuild for p in left if p.rebuild}
                    if self.runs(host, d.rebuild_match, after) or any(
                            self.runs(host, re.escape(" ".join(c.split())), after) for c in own):
                        continue
                    if any(r.implicit and r.origin == decl.name and r.host == host
                           and (covers(r.derived.subpath, d.subpath) or covers(d.subpath, r.derived.subpath))
                           for r in self.rebuilds()):
                        continue  # the plan's `derived ... rebuild` runs after the start (apply's own step)
                    yield A103.finding(
                        span=span,
                        message=f"{what} stays behind and no step rebuilds it on {host}: {d.lost}",
                        label=f"{d.subpath} left behind", notes=notes,
                        help=f'run {host} "{d.rebuild}" once the data is in place (or copy {d.subpath} too)')

    # ------------------------------------------------------------ A104

    def commands(self) -> Iterator[Finding]:
        move = self.move
        ran = {}
        for cmd in move.profile.commands:
            found, finding = self.command(cmd)
            ran[cmd.id] = found
            if finding is not None and (cmd.needs is None or ran.get(cmd.needs)):
                yield finding

    def command(self, cmd) -> Tuple[bool, Optional[Finding]]:
        """Whether the plan runs `cmd` where and when it must, and the finding when it does not."""
        move = self.move
        side = move.source if cmd.when == "before-stop" else move.target
        if side is None:
            return False, None
        if cmd.id in side.layout.does:
            return True, None
        severity = Severity.parse(cmd.severity)
        text = cmd.text_for(side.layout.name)
        notes = (cmd.why, cmd.source.show())
        if cmd.when == "before-stop":
            stop = self.when.first(self.when.stops, side.names)
            if stop is None:
                return False, None
            if self.runs(side.host, cmd.match, before=stop[0]):
                return True, None
            return False, A104.finding(
                span=stop[1].span, severity=severity, notes=notes,
                message=f"{move.title} needs `{text}` on {side.host} before it stops",
                label="stops without it", help=f'run {side.host} "{text}" before this step')
        after, anchor = -1, self.start
        if cmd.after is not None:
            got = [a for a in (self.arrival(d.name) for d in move.holders(cmd.after)) if a is not None]
            if not got:
                return False, None  # A105 reports the missing data
            after = max(a[0] for a in got)
            anchor = anchor or (after, max(got, key=lambda a: a[0])[1])
        if self.start is None and cmd.when != "after-restore":
            return False, None
        if cmd.when == "after-start":
            after = self.start[0]
        before = self.start[0] if cmd.when == "before-start" else None
        if self.runs(side.host, cmd.match, after, before):
            return True, None
        if anchor is None:
            return False, None
        timing = {"after-restore": "once its data is in place", "before-start": "before it first starts",
                  "after-start": "once it runs"}[cmd.when]
        return False, A104.finding(
            span=anchor[1].span, severity=severity, notes=notes,
            message=f"{move.title} needs `{text}` on {side.host} {timing}",
            label="no step runs it" if not self.runs(side.host, cmd.match) else "it runs, but not then",
            help=f'run {side.host} "{text}" {timing}')
