"""The config readers of `mdsl init` (pure) and how a profile's [discover] keys read them."""

from mdsl.apps import profile
from mdsl.init import configs
from mdsl.init.discover import _split_host, _url, read_database


def test_env_quotes_comments_export_and_last_wins():
    text = ("# Mastodon\nLOCAL_DOMAIN=m.example.social\nexport DB_HOST=/var/run/postgresql\n"
            "DB_PASS=\"p#ss \\\"x\\\"\"\nOTP_SECRET='a b'  \nREDIS_URL=redis://h:6379 # comment\n"
            "not a line\nDB_NAME=first\nDB_NAME=mastodon_production\n")
    s = configs.parse_env(text)
    assert s["LOCAL_DOMAIN"] == "m.example.social" and s["DB_HOST"] == "/var/run/postgresql"
    assert s["DB_PASS"] == 'p#ss "x"' and s["OTP_SECRET"] == "a b"
    assert s["REDIS_URL"] == "redis://h:6379" and s["DB_NAME"] == "mastodon_production"
    assert "not a line" not in s


def test_ini_sections_quotes_and_case_insensitive_lookup():
    text = "APP_NAME = Gitea\n; note\n[database]\nDB_TYPE = sqlite3\nPATH = `/var/lib/gitea/data/gitea.db`\n" \
           "[security]\nSECRET_KEY = \"abc\"\n"
    s = configs.parse_ini(text)
    assert s == {"APP_NAME": "Gitea", "database.DB_TYPE": "sqlite3", "database.PATH": "/var/lib/gitea/data/gitea.db",
                 "security.SECRET_KEY": "abc"}
    assert configs.lookup(s, "Database.db_type") == "sqlite3" and configs.lookup(s, "database.HOST") is None


def test_php_config_array_nested_and_both_spellings():
    text = """<?php
// comment with 'quotes' => no
$CONFIG = array (
  'instanceid' => 'oc123',
  "dbhost" => 'localhost:/run/mysqld/mysqld.sock',
  'trusted_domains' => array ( 0 => 'cloud.example.org', 1 => 'localhost', ),
  'dbport' => 3306,
  'installed' => true,
  'memcache.local' => '\\\\OC\\\\Memcache\\\\APCu',
  'apps_paths' => [ [ 'path' => '/var/www/nextcloud/apps', 'writable' => false ] ],
);
"""
    s = configs.parse_php(text)
    assert s["instanceid"] == "oc123" and s["dbhost"] == "localhost:/run/mysqld/mysqld.sock"
    assert s["trusted_domains.0"] == "cloud.example.org" and s["trusted_domains.1"] == "localhost"
    assert s["dbport"] == "3306" and s["installed"] == "true"
    assert s["apps_paths.0.path"] == "/var/www/nextcloud/apps"
    assert configs.parse_php("<?php echo 1;") == {}


def test_database_hosts_as_apps_spell_them():
    assert _split_host("mysql", "localhost:/run/mysqld/mysqld.sock", None) == (None, "/run/mysqld/mysqld.sock", None)
    assert _split_host("mysql", "localhost", None) == (None, "/run/mysqld/mysqld.sock", None)
    assert _split_host("mysql", "127.0.0.1:3307", None) == ("127.0.0.1:3307", None, None)
    assert _split_host("postgres", "/var/run/postgresql", "5433") == (None, "/var/run/postgresql", 5433)
    assert _split_host("postgres", "/var/run/postgresql", "5432") == (None, "/var/run/postgresql", None)
    assert _split_host("postgres", "localhost", "5432") == ("127.0.0.1:5432", None, None)
    assert _split_host("postgres", "", None) == (None, "/var/run/postgresql", None)


def test_each_profile_reads_its_database_from_its_config():
    m = profile.load("mastodon")
    env = configs.parse_env("DB_HOST=/var/run/postgresql\nDB_USER=mastodon\nDB_NAME=mastodon_production\n"
                            "DB_PASS=secret\nDB_PORT=5432\n")
    db = read_database(m, m.layouts["source"], env)
    assert (db.store, db.name, db.user, db.socket, db.password_key) == \
        ("postgres", "mastodon_production", "mastodon", "/var/run/postgresql", "DB_PASS")
    peer = read_database(m, m.layouts["source"], configs.parse_env("DB_HOST=/var/run/postgresql\nDB_PASS=\n"))
    assert peer.password_key is None and peer.name == "mastodon_production"  # the layout's default name
    g = profile.load("gitea")
    ini = configs.parse_ini("[database]\nDB_TYPE = mysql\nHOST = 127.0.0.1:3306\nNAME = gitea\nUSER = gitea\n"
                            "PASSWD = `pw`\n")
    db = read_database(g, g.layouts["binary"], ini)
    assert (db.store, db.tcp, db.name, db.password_key) == ("mysql", "127.0.0.1:3306", "gitea", "database.PASSWD")
    db = read_database(g, g.layouts["binary"], configs.parse_ini("[database]\nDB_TYPE = sqlite3\n"))
    assert (db.store, db.path, db.inside) == ("sqlite", "/var/lib/gitea/data/gitea.db", "data")
    n = profile.load("nextcloud")
    php = configs.parse_php("<?php $CONFIG = ['dbtype' => 'pgsql', 'dbname' => 'nc', 'dbhost' => 'localhost',"
                            " 'dbuser' => 'oc_admin', 'dbpassword' => 'x'];")
    db = read_database(n, n.layouts["archive"], php)
    assert (db.store, db.tcp, db.user) == ("postgres", "127.0.0.1:5432", "oc_admin")


def test_health_urls_from_settings():
    assert _url("https://{WEB_DOMAIN|LOCAL_DOMAIN}/health", {"LOCAL_DOMAIN": "m.example"}) == "https://m.example/health"
    assert _url("{server.ROOT_URL}api/healthz", {"server.ROOT_URL": "https://git.example/"}) == \
        "https://git.example/api/healthz"
    assert _url("{overwrite.cli.url}/status.php", {}) is None
    assert _url("{x}/a", {"x": "not a url"}) is None


def test_yaml_block_mappings_lists_quotes_and_comments():
    text = ("# Synapse\nserver_name: \"example.org\"\nlisteners:\n  - port: 8008\n    type: http\n"
            "    resources:\n      - names: [client]\ndatabase:\n  name: psycopg2\n  args:\n"
            "    password: 'se:cret # kept'\n    host: localhost  # comment\nlist:\n  - a\n  - 'b c'\n"
            "block: |\n  text\nafter: 1\n")
    s = configs.parse_yaml(text)
    assert s["server_name"] == "example.org" and s["listeners.0.port"] == "8008"
    assert s["listeners.0.type"] == "http" and "listeners.0.resources.0.names" not in s  # flow: skipped
    assert s["database.args.password"] == "se:cret # kept" and s["database.args.host"] == "localhost"
    assert s["list.0"] == "a" and s["list.1"] == "b c" and "block" not in s and s["after"] == "1"
