"""Every shipped profile loads and says where its facts come from; a broken profile is an error
naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mdsl.apps import profile
from mdsl.apps.profile import ProfileError, parse_profile

APPS = profile.names()
REQUIRED = {"mastodon", "nextcloud", "gitea", "forgejo", "synapse", "vaultwarden", "immich", "paperless-ngx"}
URL_OR_ISSUE = re.compile(r"^(https://\S+|[\w.-]+/[\w.-]+#\d+)$")


def test_the_issue_s_apps_all_have_a_profile():
    assert set(APPS) >= REQUIRED


def _facts(p):
    """Every fact of a profile with the name it is shown under."""
    for name, role in p.roles.items():
        yield f"roles.{name}", role.source
        for d in role.derived:
            yield f"roles.{name}.derived.{d.subpath}", d.source
    for key, s in p.secrets.items():
        yield f"secrets.{key}", s.source
    for inv in p.invariants:
        yield f"invariants.{inv.id}", inv.source
    for cmd in p.commands:
        yield f"commands.{cmd.id}", cmd.source
    for name, layout in p.layouts.items():
        yield f"layouts.{name}", layout.source
        for role, place in layout.places.items():
            yield f"layouts.{name}.places.{role}", place.source


@pytest.mark.parametrize("name", APPS)
def test_profile_loads_and_every_fact_has_a_source(name):
    p = profile.load(name)
    assert p is not None and p.name == name
    for where, source in _facts(p):
        assert URL_OR_ISSUE.match(source.ref), f"{name}: {where}: source {source.ref!r} is not a URL or owner/repo#N"
        if not source.confirmed:
            assert source.note, f"{name}: {where} is unconfirmed without a note saying why"


@pytest.mark.parametrize("name", APPS)
def test_every_secret_role_names_secrets_the_profile_describes(name):
    p = profile.load(name)
    for role in p.roles.values():
        for key in role.secrets:
            assert p.secrets[key].lost, (name, key)
    # a database role says which store kinds it can be, every layout places each role it knows of
    for layout in p.layouts.values():
        for role, place in layout.places.items():
            if p.roles[role].kind == "database" and place.store:
                assert place.store in p.roles[role].stores


@pytest.mark.parametrize("name", APPS)
def test_every_command_matches_its_own_text(name):
    p = profile.load(name)
    for cmd in p.commands:
        for layout in p.layouts:
            assert re.search(cmd.match, cmd.text_for(layout)), (name, cmd.id, layout)
    for role in p.roles.values():
        for d in role.derived:
            if d.rebuild_match:
                assert re.search(d.rebuild_match, d.rebuild), (name, role.name, d.subpath)


def test_unknown_app_is_none_and_names_are_not_paths():
    assert profile.load("no-such-app") is None
    assert profile.load("../profiles/mastodon") is None


GOOD = '''
name = "demo"
title = "Demo"
docs = "https://example.org/docs"
[roles.files]
kind = "dir"
holds = "files"
lost = "files"
source = "https://example.org/docs"
[layouts.plain]
title = "plain"
source = "https://example.org/docs"
[layouts.plain.places.files]
path = "/srv/demo"
source = "https://example.org/docs"
'''


def test_a_minimal_profile_parses():
    p = parse_profile(GOOD, "demo.toml")
    assert p.layouts["plain"].places["files"].matches("/srv/demo/")
    assert not p.layouts["plain"].places["files"].matches("/srv/other")


@pytest.mark.parametrize("edit, where, what", [
    (lambda t: t.replace('kind = "dir"', 'kind = "dir"\nsize = 3'), "roles.files.size", "unknown key"),
    (lambda t: t.replace('lost = "files"\n', ''), "roles.files", "missing required key `lost`"),
    (lambda t: t.replace('kind = "dir"', 'kind = "folder"'), "roles.files.kind", "not one of"),
    (lambda t: t.replace('path = "/srv/demo"', 'path = "srv/demo"'), "layouts.plain.places.files.path",
     "must be absolute"),
    (lambda t: t.replace('[layouts.plain.places.files]', '[layouts.plain.places.media]'),
     "layouts.plain.places.media", "not a role of this app"),
    (lambda t: t.replace('source = "https://example.org/docs"\n[layouts.plain]', '[layouts.plain]'),
     "roles.files", "missing required key `source`"),
    (lambda t: t + '[[commands]]\nid = "x"\nwhen = "later"\nrun = "x"\nmatch = "x"\nwhy = "x"\nsource = "s"\n',
     "commands[0].when", "not one of"),
    (lambda t: t + '[[commands]]\nid = "x"\nwhen = "after-start"\nrun = "x"\nmatch = "(x"\nwhy = "x"\nsource = "s"\n',
     "commands[0].match", "not a regular expression"),
    (lambda t: t.replace('holds = "files"', 'holds = ["files"]'), "roles.files.holds", "must be a string"),
    (lambda t: t.replace('name = "demo"', 'name = "other"'), "name", "must be the file's name"),
])
def test_a_broken_profile_names_file_and_key(edit, where, what):
    with pytest.raises(ProfileError) as exc:
        parse_profile(edit(GOOD), "demo.toml")
    msg = str(exc.value)
    assert msg.startswith(f"demo.toml: {where}: "), msg
    assert what in msg


def test_not_toml_at_all_names_the_file():
    with pytest.raises(ProfileError, match=r"^demo\.toml: not valid TOML"):
        parse_profile("name = ", "demo.toml")


def test_the_language_reference_lists_every_app():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "language.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Naming the app"):doc.index("## Suppressing a finding")]
    assert all(name in section for name in APPS), [n for n in APPS if n not in section]


def test_a_very_long_app_name_is_an_unknown_app_not_a_traceback():
    """Fuzz crash: an app name past the file system's NAME_MAX made the profile lookup raise
    `OSError: File name too long`; it is the resolver's "unknown app" (E106), like any other name."""
    from mdsl.apps import profile as profiles
    from mdsl.check import check_plan
    from mdsl.syntax.parser import parse_text

    name = "a" * 300
    assert profiles.load(name) is None
    text = ('host old { local = true }\n'
            f'service app on old {{ systemd = ["x"]  app = "{name}" }}\n'
            'steps {\n  stop app\n}\n')
    findings = check_plan(parse_text(text, "long.plan")).findings
    assert [f.code for f in findings if f.message.startswith("mdsl has no profile")] == ["E106"]
