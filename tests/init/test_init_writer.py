"""The plan `mdsl init` writes (pure): it parses, checks clean, orders the steps safely, and never
holds a secret's value."""

import pytest

from mdsl.apps import profile
from mdsl.check import check_plan
from mdsl.findings import Severity
from mdsl.init import configs
from mdsl.init.discover import AppFound, ConfigFile, DataDir, HostFacts, read_database
from mdsl.init.writer import Endpoint, size_text, write_plan
from mdsl.syntax.parser import parse_text

ENV = ("LOCAL_DOMAIN=m.example.social\nDB_HOST=/var/run/postgresql\nDB_USER=mastodon\nDB_NAME=mastodon_production\n"
       "DB_PASS=hunter2-db\nSECRET_KEY_BASE=sk-value-1\nOTP_SECRET=otp-value-2\n")
UNITS = ("mastodon-web", "mastodon-sidekiq", "mastodon-streaming")
FACTS = HostFacts("h", "Debian GNU/Linux 12 (bookworm)", False, False, (), ())


def _mastodon(size: int, url="https://m.example.social/health") -> AppFound:
    p = profile.load("mastodon")
    lay = p.layouts["source"]
    settings = configs.parse_env(ENV)
    cfg = ConfigFile("env", "/home/mastodon/live/.env.production", "mastodon:mastodon", "0600",
                     ("SECRET_KEY_BASE", "OTP_SECRET"), settings)
    system = DataDir("system", "/home/mastodon/live/public/system", "mastodon:mastodon", size)
    return AppFound(p, lay, UNITS, cfg, read_database(p, lay, settings), (system,), url, lay, UNITS, True)


def _write(app: AppFound, **kw) -> str:
    return write_plan(app, Endpoint("root", "old.example"), Endpoint("admin", "new.example", 2222, "/k", "/kh"),
                      FACTS, FACTS, today="2026-01-01", **kw)


def _problems(text: str):
    return [f for f in check_plan(parse_text(text, "<init>")).findings if f.severity >= Severity.WARNING]


@pytest.mark.parametrize("size", [10 << 20, 5 << 30])
def test_mastodon_plan_checks_clean_and_keeps_secrets_out(size):
    text = _write(_mastodon(size))
    assert _problems(text) == []
    for value in ("hunter2-db", "sk-value-1", "otp-value-2"):
        assert value not in text
    assert 'password = env("MASTODON_DB_PASSWORD")' in text
    assert 'host new { ssh = "admin@new.example"  port = 2222  identity = "/k"  known_hosts = "/kh" }' in text
    order = [text.index(x) for x in ("freeze: stop old_app", "transfer old_env to new_env",
                                     "into new_db replace", "tootctl feeds build", "cutover: start new_app",
                                     "verify http", "confirm")]
    assert order == sorted(order)
    if size > 1 << 30:  # big: pre-synced live, the final sync beside the dump
        assert text.index("sync old_system to new_system live") < text.index("freeze: stop old_app")
        assert "final_system: sync old_system to new_system" in text and "archive old_system" not in text
    else:
        assert "new_system live" not in text and "archive old_system" in text
    assert "parallel {" in text


def test_without_a_url_the_new_box_is_verified_by_its_units():
    text = _write(_mastodon(1 << 20, url=None))
    assert 'verify run new "systemctl is-active --quiet -- mastodon-web mastodon-sidekiq mastodon-streaming"' in text
    assert _problems(text) == []


def test_the_written_plan_is_in_canonical_layout():
    from mdsl.syntax.format import format_text

    text = _write(_mastodon(1 << 20))
    assert format_text(text) == text


def test_sizes_read_as_people_write_them():
    assert size_text(None) == "size unknown" and size_text(512) == "512 B" and size_text(1536) == "1.5 KiB"
    assert size_text(5 << 30) == "5.0 GiB"


def test_a_nixos_target_gets_the_module_s_places_database_and_units():
    from attrs import evolve

    from mdsl.init.discover import layout_units

    p = profile.load("mastodon")
    nixos = p.layouts["nixos"]
    assert layout_units(nixos, "mastodon") == ("mastodon.target",)
    assert layout_units(profile.load("gitea").layouts["nixos"], "gitea") == ("gitea",)
    app = evolve(_mastodon(1 << 20), target_layout=nixos, target_units=("mastodon.target",), target_has_app=False)
    text = _write(app)
    assert 'path  = "/var/lib/mastodon/public-system"' in text
    assert 'path   = "/var/lib/mastodon/secrets/env.production"' in text
    assert 'database = "mastodon"' in text and 'run_as   = "mastodon"' in text
    assert 'run new "mastodon-tootctl feeds build"' in text
    assert 'layout    = "nixos"' in text and 'systemd   = ["mastodon.target"]' in text
    assert _problems(text) == []


def test_what_the_new_host_lacks_is_said_in_the_header():
    bare = HostFacts("new", "Debian", False, False, ("systemctl",), ())
    text = write_plan(_mastodon(1 << 20), Endpoint("root", "old.example"), Endpoint("root", "new.example"),
                      FACTS, bare, today="2026-01-01")
    assert "# new has no psql or pg_restore: install PostgreSQL there first" in text
    assert "# new has no rsync" in text
    ready = HostFacts("new", "Debian", False, False, ("psql", "pg_restore", "rsync", "systemctl"), ())
    text = write_plan(_mastodon(1 << 20), Endpoint("root", "old.example"), Endpoint("root", "new.example"),
                      FACTS, ready, today="2026-01-01")
    assert "has no" not in text


def test_synapse_from_its_homeserver_yaml_with_the_signing_key_as_a_second_secret_file():
    p = profile.load("synapse")
    lay = p.layouts["debian"]
    settings = configs.parse_yaml(
        "server_name: example.org\npublic_baseurl: https://matrix.example.org/\ndatabase:\n  name: psycopg2\n"
        "  args:\n    user: synapse_user\n    password: pw-syn\n    database: synapse\n    host: localhost\n"
        "media_store_path: /var/lib/matrix-synapse/media\nmacaroon_secret_key: mac-value\n")
    cfg = ConfigFile("config", "/etc/matrix-synapse/homeserver.yaml", "root:matrix-synapse", "0640",
                     ("macaroon_secret_key",), settings)
    key = ConfigFile("signing_key", "/etc/matrix-synapse/homeserver.signing.key", "matrix-synapse:nogroup", "0600",
                     ("signing_key",), {})
    media = DataDir("media", "/var/lib/matrix-synapse/media", "matrix-synapse:nogroup", 1 << 20)
    db = read_database(p, lay, settings)
    assert (db.store, db.name, db.tcp, db.password_key) == ("postgres", "synapse", "127.0.0.1:5432",
                                                           "database.args.password")
    app = AppFound(p, lay, ("matrix-synapse",), cfg, db, (media,), "https://matrix.example.org/health", lay,
                   ("matrix-synapse",), True, (key,))
    text = _write(app)
    assert "transfer old_signing_key to new_signing_key" in text and "transfer old_config to new_config" in text
    assert "TRUNCATE e2e_one_time_keys_json" in text and 'env("SYNAPSE_DB_PASSWORD")' in text
    assert "pw-syn" not in text and "mac-value" not in text
    assert _problems(text) == []
