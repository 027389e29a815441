"""Each profile's facts, exercised by a plan that moves the app: the plan as written checks clean,
and each hand-made mistake is caught by the A1xx finding that speaks of it in the app's terms."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mdsl.findings import Severity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "check"))
from check_helpers import findings_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLANS = {
    "mastodon": ROOT / "plans" / "mastodon-ubuntu-to-nixos.plan",
    "nextcloud": ROOT / "plans" / "nextcloud-to-bigger-disk.plan",
    "gitea": ROOT / "plans" / "gitea-sqlite.plan",
    **{p.stem: p for p in (ROOT / "tests" / "apps" / "plans").glob("*.plan")},
}


def _loud(findings):
    return [(f.code, f.span.line, f.message) for f in findings if f.severity >= Severity.WARNING]


@pytest.mark.parametrize("app", sorted(PLANS))
def test_each_app_s_move_checks_clean(app):
    text = PLANS[app].read_text(encoding="utf-8")
    assert f'app = "{app}"' in " ".join(text.split())
    assert _loud(findings_of(text, str(PLANS[app]))) == []


# (app, what is changed, replaced by, the code that must fire, words its message or notes must hold)
MISTAKES = [
    # Mastodon: secrets, the cache the seed lost, the feeds, the NixOS module's names and paths
    ("mastodon", "  transfer old_env to new_env\n", "", "A101", "two-factor"),
    ("mastodon", 'archive old_system to ubuntu:"/root/mdsl/public-system.tar.zst" compress = zstd',
     'archive old_system to ubuntu:"/root/mdsl/public-system.tar.zst" compress = zstd exclude "cache"',
     "A103", "avatar"),
    ("mastodon", '  run beetroot "mastodon-tootctl feeds build"\n', "", "A104", "home timelines"),
    ("mastodon", '"mastodon-sidekiq-all"', '"mastodon-sidekiq"', "A106", "mastodon-sidekiq-all"),
    ("mastodon", 'path  = "/var/lib/mastodon/public-system"', 'path  = "/srv/mastodon/system"', "A106",
     "/var/lib/mastodon/public-system"),
    ("mastodon", "into new_db replace jobs = 2", "into new_db jobs = 2", "A102", "empty database"),
    ("mastodon", '  cutover: start new_app\n',
     '  run beetroot "sed -i s/^LOCAL_DOMAIN=.*/LOCAL_DOMAIN=beetroot.example/'
     ' /var/lib/mastodon/secrets/env.production" writes = [new_env]\n  cutover: start new_app\n', "A102", "new ones"),
    # Nextcloud: the data directory's path, maintenance mode, the config's secrets
    ("nextcloud", 'path  = "/var/www/nextcloud/data"  # the bigger disk\'s mount point',
     'path  = "/srv/nextcloud/data"', "A102", "not supported"),
    ("nextcloud", '  maintenance: run old "sudo -u www-data php /var/www/nextcloud/occ maintenance:mode --on"'
     ' writes = [old_config]\n', "", "A104", "sync clients"),
    ("nextcloud",
     '  run new "sudo -u www-data php /var/www/nextcloud/occ maintenance:mode --off" writes = [new_config]\n',
     "", "A104", "locked"),
    ("nextcloud", "  transfer old_config to new_config\n", "", "A101", "passwords"),
    ("nextcloud", "    sync old_data to new_data\n", "", "A105", "files"),
    # Gitea: hooks, app.ini's secrets, the repositories
    ("gitea", '  run new "sudo -u git gitea admin regenerate hooks --config /etc/gitea/app.ini"'
     ' reads = [new_ini] writes = [new_repos]\n', "", "A104", "push"),
    ("gitea", "  transfer old_ini to new_ini\n", "", "A101", "2FA"),
    ("gitea", "    sync old_repos to new_repos\n", "", "A105", "history"),
    # Forgejo: moving to the NixOS module, which regenerates hooks itself but has its own secrets
    ("forgejo", "  transfer old_ini to new_ini\n", "", "A101", "generates"),
    ("forgejo", "  sync old_data to new_data\n", "", "A105", "attachments"),
    # Synapse: the empty database, one-time keys, the signing key
    ("synapse", "into new_db replace", "into new_db", "A102", "inconsistencies"),
    ("synapse", "  run new \"sudo -u matrix-synapse psql -d matrix-synapse -c 'TRUNCATE e2e_one_time_keys_json;'\""
     " writes = [new_db]\n", "", "A104", "decrypted"),
    ("synapse", "  transfer old_key to new_key\n", "", "A101", "signing key"),
    ("synapse", "sync old_media to new_media", "sync old_media to new_media exclude \"local_content\"", "A105",
     "avatars"),
    # Vaultwarden: rsa_key.pem and the attachments live in the data folder
    ("vaultwarden", "  sync old_data to new_data\n", "", "A101", "logged out"),
    ("vaultwarden", "sync old_data to new_data", 'sync old_data to new_data exclude "attachments"', "A105",
     "attachments"),
    # Immich: fresh database, derived thumbnails (a manual job: an info), originals
    ("immich", "into new_db replace", "into new_db", "A102", "fresh install"),
    ("immich", "sync old_upload to new_upload", 'sync old_upload to new_upload exclude "thumbs"', "A103",
     "Generate Thumbnails"),
    ("immich", "  sync old_upload to new_upload\n", "", "A105", "original photos"),
    # Paperless-ngx: the search index and thumbnails, the secret key
    ("paperless-ngx", "sync old_data to new_data", 'sync old_data to new_data exclude "index"', "A103",
     "document_index reindex"),
    ("paperless-ngx", "sync old_media to new_media", 'sync old_media to new_media exclude "documents/thumbnails"',
     "A103", "document_thumbnails"),
    ("paperless-ngx", "  transfer old_conf to new_conf\n", "", "A101", "logged out"),
]


@pytest.mark.parametrize("app, old, new, code, words", MISTAKES,
                         ids=[f"{m[0]}-{m[3]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_mistake_is_caught_in_the_app_s_terms(app, old, new, code, words):
    text = PLANS[app].read_text(encoding="utf-8")
    assert old in text, f"{app}: the plan no longer has {old!r}"
    got = [f for f in findings_of(text.replace(old, new, 1), f"{app}-mistake.plan") if f.code == code]
    assert got, f"{app}: {code} did not fire"
    said = " ".join(" ".join((f.message, *f.notes, f.help or "")) for f in got)
    assert words in said, said


SEED = ROOT / "plans" / "examples" / "seed-as-it-went.plan"


def test_the_seed_as_it_went_named_as_mastodon_shows_what_the_profile_knew():
    """The seed's migration, had it named its app: besides H101 (the cache) and H302, the cache is
    never rebuilt (the author found `tootctl accounts refresh` a day later), the NixOS module starts
    with fresh secrets (no .env was copied), the feeds are never rebuilt, and the units are the
    source install's."""
    text = SEED.read_text(encoding="utf-8")
    text = text.replace('service old_app on ubuntu {\n',
                        'service old_app on ubuntu {\n  app = "mastodon"  layout = "source"\n')
    text = text.replace('service new_app on beetroot {\n',
                        'service new_app on beetroot {\n  app = "mastodon"  layout = "nixos"\n')
    codes = sorted({f.code for f in findings_of(text, "seed.plan")})
    assert codes == ["A101", "A103", "A104", "A106", "H101", "H302"], codes


def test_h301_lets_the_app_run_on_under_its_new_layout_s_units_only():
    """Moving to the NixOS module renames the units (H301 stays quiet, A106 checks the new names);
    between two hosts of the same layout a forgotten unit is still H301."""
    from mdsl.check.rules.a_examples import GITEA, MASTODON

    assert "H301" not in {f.code for f in findings_of(MASTODON, "m.plan")}
    forgot = GITEA.replace('systemd = ["gitea"]  writes = [old_db', 'systemd = ["gitea", "gitea-backup.timer"]'
                                                                  '  writes = [old_db')
    assert "H301" in {f.code for f in findings_of(forgot, "g.plan")}
