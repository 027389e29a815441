"""What discovery decides from what a host showed (pure parts): which app and layout the
fingerprints say, which units run it, which dirs travel inside others, the target's layout."""

from mdsl.apps import profile
from mdsl.init.discover import DataDir, HostFacts, _nest, _target_layout, all_fingerprints, installed, units_of


def _facts(fingerprints=(), units=(), nixos=False):
    return HostFacts("h", "Debian", nixos, False, (), tuple(units), fingerprints=tuple(fingerprints))


def test_fingerprints_name_the_app_and_its_best_layout():
    assert "/home/mastodon/live/.env.production" in all_fingerprints()
    assert "/var/www/nextcloud/config/config.php" in all_fingerprints()
    found = installed(_facts(["/home/mastodon/live/.env.production", "/etc/systemd/system/mastodon-web.service",
                              "/etc/gitea/app.ini"]))
    assert [(p.name, lay.name) for p, lay in found] == [("gitea", "binary"), ("mastodon", "source")]
    assert installed(_facts(["/etc/hostname"])) == []


def test_units_found_by_the_layout_s_names_and_patterns_without_templates():
    m = profile.load("mastodon")
    facts = _facts(units=["mastodon-web.service", "mastodon-sidekiq.service", "mastodon-streaming@.service",
                          "mastodon-streaming.service", "nginx.service", "ssh.service"])
    assert units_of(m.layouts["source"], (), facts) == ("mastodon-web", "mastodon-sidekiq", "mastodon-streaming")
    n = profile.load("nextcloud")
    facts = _facts(units=["php8.2-fpm.service", "apache2.service", "cron.service"])
    assert units_of(n.layouts["archive"], n.discover.units, facts) == ("php8.2-fpm", "apache2")


def test_a_dir_inside_another_travels_with_it():
    data = DataDir("data", "/var/lib/gitea/data", "git:git", 10)
    repos = DataDir("repositories", "/var/lib/gitea/data/gitea-repositories", "git:git", 5)
    other = DataDir("x", "/var/lib/gitea/database", None, 1)  # a sibling whose name only starts alike
    out = _nest([data, repos, other])
    assert [d.role for d in out] == ["data", "x"]
    assert out[0].nested == ("gitea-repositories (repositories)",) and out[1].nested == ()


def test_the_target_s_layout_installed_else_nixos_else_the_source_s():
    m = profile.load("mastodon")
    source = m.layouts["source"]
    assert _target_layout(m, source, _facts()) == (source, False)
    assert _target_layout(m, source, _facts(nixos=True)) == (m.layouts["nixos"], False)
    assert _target_layout(m, source, _facts(["/var/lib/mastodon/public-system"], nixos=True)) == \
        (m.layouts["nixos"], True)
