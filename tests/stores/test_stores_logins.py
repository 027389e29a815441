"""The app's own database login (`login NAME on DB`, issue 19): how it binds, what a restore that makes it
compiles to, and how preflight reads a server's accounts (MariaDB) and pg_hba.conf lines (PostgreSQL).
Real servers are in tests/e2e/test_logins.py."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Feed, Shell
from mdsl.compile.parts import _ESCAPES, CompileError
from mdsl.model import Login
from mdsl.stores.mysql.logins import Account, grants_sql, match
from mdsl.stores.postgres.logins import UNKNOWN, HbaRule, first_rule
from mdsl.syntax import ast as A
from mdsl.syntax.parser import parse_text

HOSTS = """plan "logins"
host old { ssh = "root@10.0.0.1" }
host new { ssh = "root@10.0.0.2" }
"""
MYSQL = HOSTS + """mysql old_db on old { database = "word_press"  run_as = "root" }
mysql new_db on new { database = "wordpress"  socket = "/run/mysqld/mysqld.sock"  run_as = "root"  fresh = true }
login wp_old on old_db { user = "wordpress"  password = env("WP_PW")  tcp = "127.0.0.1:3306" }
"""
POSTGRES = HOSTS + """postgres old_db on old { database = "mastodon_production"  run_as = "postgres" }
postgres new_db on new { database = "mastodon"  run_as = "postgres"  fresh = true }
login app_old on old_db { user = "mastodon"  password = env("DB_PASS")  tcp = "127.0.0.1:5432" }
"""
MOVE = """steps {
  dump old_db to old:"/root/db.dump"
  transfer old:"/root/db.dump" to new:"/root/db.dump"
  restore new:"/root/db.dump" into new_db
}
"""
SECRET = "s3cr3t'\\\"#;:"


def bound(text: str):
    return resolve(parse_text(text, "logins.plan"))


def errors(text: str) -> list:
    return [f.message for f in bound(text).findings]


# ---------------------------------------------------------------- binding


def test_a_login_takes_its_database_host_and_way_in_unless_it_says_otherwise():
    b = bound(MYSQL + 'login wp_new on new_db { user = "wordpress"  password = env("WP_PW")  like = wp_old }\n')
    assert b.ok, [f.message for f in b.findings]
    new, old = b.resources["wp_new"], b.resources["wp_old"]
    assert isinstance(new, Login) and new.host == "new" and new.database == "new_db" and new.like == "wp_old"
    assert (new.socket, new.tcp_host, new.source_address) == ("/run/mysqld/mysqld.sock", None, None)
    assert (old.tcp_host, old.tcp_port, old.source_address) == ("127.0.0.1", 3306, "127.0.0.1")
    assert [x.name for x in b.logins_on("old_db")] == ["wp_old"]


@pytest.mark.parametrize("tcp,source", [("127.0.0.2:3306", "127.0.0.1"), ("localhost:3306", "127.0.0.1"),
                                        ("[::1]:3306", "::1"), ("10.1.2.3:3306", "10.1.2.3"),
                                        ("db.example.net:3306", None)])
def test_where_a_tcp_login_comes_from_by_default(tcp, source):
    b = bound(MYSQL + f'login x on new_db {{ user = "u"  tcp = "{tcp}" }}\n')
    assert b.ok and b.resources["x"].source_address == source


@pytest.mark.parametrize("attrs,message", [
    ('user = "u"  tcp = "127.0.0.1:1"  socket = "/s"', "has both `tcp` and `socket`"),
    ('user = "u"  socket = "/s"  from = "127.0.0.1"', "connects over a socket"),
    ('user = "u"  tcp = "127.0.0.1:1"  from = "localhost"', "must be an IP address"),
    ('user = "u"  tcp = "db.example.net:3306"  like = wp_old', "say which address the app's login comes from"),
    ('user = "u"  like = wp_new', "`wp_new` is `like` itself"),
    ('user = "u"  like = old_db', "`old_db` is a mysql, but this needs a login"),
    ('user = "u"  like = nothing', "unknown name `nothing`"),
    ('user = ""', "must be a user name"),
    ('user = "u"  host = "localhost"', "unknown attribute `host` for a login"),
])
def test_a_login_that_cannot_be_right_is_an_e106(attrs, message):
    found = errors(MYSQL + f"login wp_new on new_db {{ {attrs} }}\n")
    assert any(message in m for m in found), found


def test_a_login_is_on_a_database_of_a_kind_with_logins():
    assert any("`q` is a redis database: mdsl declares logins of postgres and mysql databases only" in m
               for m in errors(HOSTS + 'redis q on old { tcp = "127.0.0.1:6379" }\nlogin x on q { user = "u" }\n'))
    assert any("`old` is a host, but this needs a database" in m
               for m in errors(HOSTS + 'login x on old { user = "u" }\n'))


def test_like_names_a_login_of_the_same_kind_that_the_plan_does_not_make_itself():
    text = (MYSQL + POSTGRES.replace(HOSTS, "").replace("old_db", "pg_old").replace("new_db", "pg_new")
            .replace("app_old", "pg_login"))
    assert any("grants do not translate" in m for m in errors(
        text + 'login x on new_db { user = "u"  password = env("P")  like = pg_login }\n'))
    assert any("`y` is made by the plan too" in m for m in errors(
        MYSQL + 'login y on old_db { user = "u"  password = env("P")  like = wp_old }\n'
                'login x on new_db { user = "u"  password = env("P")  like = y }\n'))


def test_a_login_is_no_data_a_service_could_write():
    found = errors(MYSQL + 'service s on old { systemd = ["a"]  writes = [wp_old] }\n')
    assert any("`wp_old` is a login, but this needs a database, dir or file" in m for m in found), found


# ---------------------------------------------------------------- MariaDB: what the server matches


def test_localhost_takes_socket_logins_and_tcp_ones_only_while_names_resolve():
    local = [Account("wp", "localhost")]
    assert match(local, "wp", None, skip_name_resolve=True) == Account("wp", "localhost")
    assert match(local, "wp", "127.0.0.1", skip_name_resolve=False) == Account("wp", "localhost")
    assert match(local, "wp", "127.0.0.1", skip_name_resolve=True) is None
    assert match(local + [Account("wp", "127.0.0.1")], "wp", "127.0.0.1", True) == Account("wp", "127.0.0.1")
    assert match([Account("wp", "localhost")], "wp", "10.0.0.5", skip_name_resolve=False) is None


def test_the_most_specific_host_wins_and_the_anonymous_user_shadows_a_pattern():
    accounts = [Account("wp", "%"), Account("", "localhost"), Account("wp", "10.0.%"),
                Account("wp", "10.0.0.0/255.255.0.0")]
    # the classic trap: ''@'localhost' is more specific than 'wp'@'%' for a socket login
    assert match(accounts, "wp", None, True) == Account("", "localhost")
    assert match(accounts, "wp", "10.0.3.4", True) == Account("wp", "10.0.0.0/255.255.0.0")
    assert match([Account("wp", "%"), Account("wp", "10.0.%")], "wp", "10.0.3.4", True) == Account("wp", "10.0.%")
    assert match([Account("wp", "%")], "wp", "192.168.1.1", True) == Account("wp", "%")
    assert match([Account("other", "%")], "wp", "192.168.1.1", True) is None


def test_grants_are_read_for_one_database_and_written_for_another():
    sql = grants_sql("word_press", "new_db_1", "'wp'@'127.0.0.1'")
    assert "'word_press' LIKE TABLE_SCHEMA" in sql  # a grant on a pattern that covers the database counts
    assert "'`new\\\\_db\\\\_1`.*'" in sql  # `_` is a wildcard in a database-level GRANT: escaped
    assert "'`new_db_1`.'" in sql  # table-level grants name the table exactly
    assert sql.count("'''wp''@''127.0.0.1'''") == 3


# ---------------------------------------------------------------- PostgreSQL: the pg_hba.conf line met first


def _rules(*lines: str):
    out = []
    for i, line in enumerate(lines, 1):
        f = line.split()
        address, netmask = (f[3].partition("/")[0], "") if f[0] != "local" else ("", "")
        if f[0] != "local" and "/" in f[3]:
            address, netmask = f[3].split("/")[0], str(__import__("ipaddress").ip_network(f[3], strict=False).netmask)
        out.append(HbaRule(i, f[0], tuple(f[1].split(",")), tuple(f[2].split(",")), address, netmask, f[-1]))
    return out


def test_the_first_matching_pg_hba_line_decides():
    rules = _rules("local all postgres peer", "local mastodon mastodon md5", "host all all 127.0.0.1/32 scram-sha-256",
                   "host all all 0.0.0.0/0 reject")
    assert first_rule(rules, tcp=False, address=None, database="mastodon", user="mastodon", ssl=False).line == 2
    assert first_rule(rules, tcp=False, address=None, database="other", user="mastodon", ssl=False) is None
    assert first_rule(rules, tcp=True, address="127.0.0.1", database="x", user="y", ssl=False).line == 3
    assert first_rule(rules, tcp=True, address="10.0.0.9", database="x", user="y", ssl=False).method == "reject"
    assert first_rule(_rules("hostssl all all 0.0.0.0/0 md5"), tcp=True, address="10.0.0.9", database="x",
                      user="y", ssl=False) is None
    assert first_rule(_rules("local sameuser all peer"), tcp=False, address=None, database="u", user="u",
                      ssl=False).line == 1


def test_a_line_that_depends_on_what_preflight_cannot_know_is_unknown():
    assert first_rule(_rules("local all +admins peer", "local all all trust"), tcp=False, address=None,
                      database="d", user="u", ssl=False) is UNKNOWN
    assert first_rule(_rules("host all all samenet md5"), tcp=True, address="10.0.0.1", database="d", user="u",
                      ssl=False) is UNKNOWN


# ---------------------------------------------------------------- secrets in SQL


def test_a_pg_password_goes_as_the_scram_verifier_the_server_would_store():
    literal = _ESCAPES["pg-password"](SECRET)
    assert SECRET not in literal and literal.startswith("'SCRAM-SHA-256$4096:")
    iterations, rest = literal.strip("'")[len("SCRAM-SHA-256$"):].split(":", 1)
    salt, keys = rest.split("$")
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", SECRET.encode(), base64.b64decode(salt), int(iterations))
    assert hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest() == stored
    assert hmac.new(salted, b"Server Key", "sha256").digest() == server
    assert _ESCAPES["pg-password"]("pässword") == "'pässword'"  # SASLprep is the client's: sent as it is


def test_a_mysql_password_is_one_string_literal():
    assert _ESCAPES["mysql-literal"](SECRET) == "'s3cr3t''\\\\\"#;:'"


# ---------------------------------------------------------------- compile


def _steps(cp):
    return {s.kind: s for s in cp.leaves()}


def _lookup(secret: A.Secret) -> str:
    return SECRET


def test_a_mysql_restore_makes_the_login_after_the_rows_with_the_source_grants():
    made = ('login wp_new on new_db { user = "wordpress"  password = env("WP_PW")  tcp = "127.0.0.1:3306"\n'
            '  like = wp_old }\n')
    cp = compile_plan(bound(MYSQL + made + MOVE))
    restore = _steps(cp)["restore"]
    kinds = [type(a).__name__ for a in restore.actions]
    assert kinds == ["Shell", "Feed", "Shell"], kinds
    feed = restore.actions[1]
    assert isinstance(feed, Feed) and feed.source.host == "old" and feed.command.host == "new"
    script = feed.command.stdin.reveal(_lookup).decode()
    assert "CREATE USER IF NOT EXISTS 'wordpress'@'127.0.0.1';" in script
    assert "IDENTIFIED BY 's3cr3t''\\\\\"#;:'" in script
    for action in restore.actions:  # the password is in no command line, shown or run
        for cmd in action.commands():
            assert SECRET not in cmd.render(masked=False, secret_paths={"MDSL_MYSQL_OPTIONS": "/tmp/x"})
            assert "s3cr3t" not in cmd.render(masked=False, secret_paths={"MDSL_MYSQL_OPTIONS": "/tmp/x"})
    shown = "\n".join(restore.describe())
    assert "IDENTIFIED BY ***" in shown and "s3cr3t" not in shown
    assert "'wordpress'@'127.0.0.1'" in shown  # the account is in the fingerprint
    check = restore.actions[2]
    assert isinstance(check, Shell) and "wordpress@127.0.0.1" in check.command.render()
    assert any(host == "old" for host, _ in restore.tools)  # the source's client, for preflight's P402


def test_a_mysql_login_made_from_elsewhere_is_not_checked_from_the_database_host():
    made = ('login wp_new on new_db { user = "wordpress"  password = env("WP_PW")  tcp = "10.0.0.2:3306"\n'
            '  from = "10.0.0.7"  like = wp_old }\n')
    restore = _steps(compile_plan(bound(MYSQL + made + MOVE)))["restore"]
    assert [type(a).__name__ for a in restore.actions] == ["Shell", "Feed"]
    assert "'wordpress'@'10.0.0.7'" in restore.actions[1].command.stdin.masked()


def test_a_mysql_login_the_plan_makes_needs_its_password():
    made = 'login wp_new on new_db { user = "wordpress"  like = wp_old }\n'
    with pytest.raises(CompileError, match="has no `password`"):
        compile_plan(bound(MYSQL + made + MOVE))


def test_a_postgres_restore_makes_the_role_before_and_hands_it_its_objects_after():
    made = ('login app_new on new_db { user = "mastodon"  password = env("DB_PASS")  tcp = "127.0.0.1:5432"\n'
            '  like = app_old }\n')
    restore = _steps(compile_plan(bound(POSTGRES + made + MOVE)))["restore"]
    kinds = [type(a).__name__ for a in restore.actions]
    assert kinds == ["Feed", "Shell", "Feed", "Shell"], kinds
    role = restore.actions[0].command.stdin.reveal(_lookup).decode()
    assert "CREATE ROLE %I LOGIN', 'mastodon'" in role and "PASSWORD 'SCRAM-SHA-256$4096:" in role
    assert SECRET not in role
    hand = restore.actions[2]
    assert hand.source.host == "old" and "dbname=mastodon_production" in hand.source.render()
    sql = " ".join(p.value for p in hand.source.parts if hasattr(p, "value"))
    assert "format('ALTER DATABASE %I OWNER TO %I;', 'mastodon', 'mastodon')" in sql
    assert "dbname=mastodon" in hand.command.render()
    assert "current_user" in restore.actions[3].command.render()


def test_a_login_changed_after_the_restore_ran_runs_the_restore_again():
    def fingerprint(user):
        made = (f'login wp_new on new_db {{ user = "{user}"  password = env("WP_PW")  tcp = "127.0.0.1:3306"'
                '  like = wp_old }\n')
        return _steps(compile_plan(bound(MYSQL + made + MOVE)))["restore"].fingerprint
    assert fingerprint("wordpress") != fingerprint("wp")


# ---------------------------------------------------------------- preflight's verdicts, from the servers' answers


class Answers:
    """A stand-in for a host: each command's answer picked by the first word (in order) its SQL holds (the
    real servers: tests/e2e)."""

    def __init__(self, **by_word):
        self.by_word = by_word

    def __call__(self, cmd):
        from mdsl.run.backend import Result

        text = " ".join(str(getattr(p, "value", "")) for p in cmd.parts)
        for word, (code, out, err) in self.by_word.items():
            if word in text:
                return Result(code, out, err)
        raise AssertionError(f"no answer for {text[:200]}")


def _mysql_preflight(login_decl: str, **answers):
    from mdsl.compile.context import CompileContext
    from mdsl.stores.mysql import logins

    b = bound(MYSQL + login_decl + MOVE)
    assert b.ok, [f.message for f in b.findings]
    login = b.resources["wp_new"]
    like = b.resources.get(login.like) if login.like else None
    return logins.preflight(CompileContext(b), Answers(**answers), login, b.resources["new_db"], like)


ADMIN = (0, "1\troot@localhost\t1\n", "")  # skip_name_resolve, the admin, may create users
TCP = 'login wp_new on new_db { user = "wordpress"  password = env("WP_PW")  tcp = "127.0.0.1:3306"'


def test_a_login_the_plan_makes_needs_an_admin_who_may_create_it():
    found = _mysql_preflight(TCP + "  like = wp_old }\n", skip_name_resolve=(0, "1\tmdsl@localhost\t0\n", ""),
                             **{"mysql.user": (1, "", "denied")})
    assert [f.code for f in found] == ["P411"] and "may not create users and grant" in found[0].message


def test_an_account_already_there_that_would_win_is_named():
    found = _mysql_preflight(TCP + "  like = wp_old }\n", skip_name_resolve=ADMIN,
                             **{"mysql.user": (0, "\t127.0.0.1\n", "")})
    assert found == []  # the named user on the same host wins over the anonymous one
    found = _mysql_preflight(TCP + '  from = "10.0.0.7"  like = wp_old }\n', skip_name_resolve=ADMIN,
                             **{"mysql.user": (0, "wordpress\t10.0.0.7\n", "")})
    assert found == []  # the same account: made again, harmless


def test_an_existing_login_without_rights_on_its_database_is_reported():
    found = _mysql_preflight(TCP + " }\n", **{"CREATE USER": ADMIN, "mysql.user": (0, "wordpress\t127.0.0.1\n", ""),
                                             "USER()": (0, "wordpress@127.0.0.1\twordpress@127.0.0.1\t1\t0\n", "")})
    assert [f.code for f in found] == ["P411"] and "has no rights on `wordpress`" in found[0].message
    assert "GRANT ALL ON `wordpress`.* TO 'wordpress'@'127.0.0.1';" in found[0].help


def test_a_refused_login_with_a_wrong_password_says_which_account_refused_it():
    found = _mysql_preflight(TCP + " }\n", **{
        "CREATE USER": ADMIN, "mysql.user": (0, "wordpress\t127.0.0.1\n", ""),
        "USER()": (1, "", "ERROR 1045 (28000): Access denied for user 'wordpress'@'127.0.0.1' (using password: YES)")})
    assert "matches the app's login `wp_new` to 'wordpress'@'127.0.0.1' and refuses it" in found[0].message
    assert 'env("WP_PW")' in found[0].help
