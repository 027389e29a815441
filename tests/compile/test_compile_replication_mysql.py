"""`replicate ... live` for MariaDB compiles to: a tunnel, the server ids compared, the target prepared
(what a killed pass left gone), a snapshot streamed on the target host through the tunnel with its GTID
line made active, and a named connection filtered to the one database; the final pass waits with
MASTER_GTID_WAIT and removes the connection. The source's password never reaches an argv."""

from __future__ import annotations

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Feed, Shell, Tunnel
from mdsl.compile.parts import CompileError
from mdsl.stores.mysql import Mysql
from mdsl.stores.mysql import replication as R
from mdsl.syntax import ast as A
from mdsl.syntax.parser import parse_text

PLAN = '''plan "r"
host old { ssh = "root@old.example.net" }
host new { ssh = "root@new.example.net" }
mysql old_db on old { database = "nextcloud"  user = "repl"  tcp = "10.0.0.5:3307"  password = env("PW") }
mysql new_db on new { database = "DST"  run_as = "root" }
service old_app on old { systemd = ["app"]  writes = [old_db] }
steps {
  replicate old_db to new_db live OPTS
  stop old_app
  replicate old_db to new_db OPTS
}
'''


def compiled(opts: str = "", dst: str = "nc"):
    bound = resolve(parse_text(PLAN.replace("OPTS", opts).replace("DST", dst), "r.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def _scripts(step) -> str:
    return "\n".join(c.stdin.masked() for a in step.actions if isinstance(a, Feed) for c in [a.command])


def test_live_pass_tunnels_to_the_source_server_and_starts_a_named_gtid_connection():
    cp = compiled("port = 45123")
    live, final = cp.steps[0], cp.steps[2]
    t = live.actions[0]
    assert isinstance(t, Tunnel)
    assert (t.from_host, t.address, t.port, t.to_host, t.listen) == ("old", "10.0.0.5", 3307, "new", 45123)
    name = R.replication_name(Mysql(name="old_db", host="old", database="nextcloud"),
                              Mysql(name="new_db", host="new", database="nc"))
    text = _scripts(live)
    assert f"CHANGE MASTER '{name}' TO MASTER_HOST = '127.0.0.1', MASTER_PORT = 45123" in text
    assert "MASTER_USE_GTID = slave_pos" in text
    assert f"SET GLOBAL {name}.replicate_rewrite_db = 'nextcloud->nc'" in text
    assert f"SET GLOBAL {name}.replicate_do_db = 'nc'" in text
    assert f"START SLAVE '{name}'" in text
    # what a killed pass left, gone first; an admin's own connection (another name) never touched
    assert f"STOP SLAVE '{name}'; RESET SLAVE '{name}' ALL" in text
    assert "STOP SLAVE;" not in text and "STOP ALL SLAVES" not in text
    snapshot = next(a for a in live.actions if isinstance(a, Shell))
    shown = snapshot.command.render(masked=True)
    assert snapshot.command.host == "new" and "--gtid --master-data=2" in shown and "--port=45123" in shown
    assert "SET GLOBAL gtid_slave_pos=" in shown
    assert isinstance(final.actions[-1], Tunnel) and final.actions[-1].close
    assert "MASTER_GTID_WAIT" in " ".join(final.actions[1].source.render(masked=True).split())


def test_same_name_needs_no_rewrite():
    text = _scripts(compiled(dst="nextcloud").steps[0])
    assert "replicate_rewrite_db" not in text and ".replicate_do_db = 'nextcloud'" in text


def test_password_only_in_stdin_and_private_files():
    cp = compiled()
    for step in (cp.steps[0], cp.steps[2]):
        for a in step.actions:
            for c in a.commands():
                rendered = c.render(masked=False)
                assert "MASTER_PASSWORD" not in rendered  # the statement goes on stdin
                # the login's password only in a 0600 option file (its path in a variable), never an argument
                assert "--password" not in rendered and "-p" not in rendered.split()
    assert "MASTER_PASSWORD = ***" in _scripts(cp.steps[0]).replace("'***'", "***")


def test_source_and_target_option_files_do_not_clash():
    snapshot = next(a for a in compiled().steps[0].actions if isinstance(a, Shell))
    assert {sf.var for sf in snapshot.command.all_secret_files()} == {R.SOURCE_OPTIONS_VAR}


def test_a_name_the_filters_cannot_hold_is_refused():
    try:
        compiled(dst='"a,b"'.strip('"'))
    except CompileError as e:
        assert "replication filters" in str(e)
    else:
        raise AssertionError("a database named a,b compiled")



class _Answer:
    def __init__(self, stdout: str):
        self.stdout, self.ok, self.stderr, self.exit = stdout, True, "", 0


def _preflight(side: str, row: list, slaves: str = ""):
    from mdsl.compile.context import CompileContext
    bound = resolve(parse_text(PLAN.replace("OPTS", "").replace("DST", "nc"), "r.plan"))
    step = next(A.walk_steps(bound.plan.steps))
    src, dst = bound.resources["old_db"], bound.resources["new_db"]

    def run(cmd):
        text = cmd.render(masked=True)
        return _Answer(slaves) if "SHOW ALL SLAVES STATUS" in text else _Answer("\t".join(row) + "\n")
    found = R.preflight(CompileContext(bound), run, step, src, dst, side)
    return found, "\n".join(f"{f.code} {f.message} {f.help} {' '.join(f.notes)}" for f in found)


def test_preflight_source_without_binlog_and_grants_says_how_to_fix():
    found, text = _preflight("source", ["10.11.6-MariaDB", "repl@127.0.0.1", "0", "MIXED", "1", "0", "3307", "0",
                                        "1"])
    assert {f.code for f in found} == {"P413"} and len(found) == 2, text
    assert "no binary log" in text and "restart" in text
    assert "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'repl'@'127.0.0.1';" in text


def test_preflight_source_that_can_replicate_has_no_finding():
    found, text = _preflight("source", ["10.11.6-MariaDB", "repl@127.0.0.1", "1", "ROW", "11", "0", "3307", "1",
                                        "1"])
    assert found == [], text


def test_preflight_refuses_mysql_and_a_target_that_already_replicates():
    found, text = _preflight("source", ["8.0.36", "repl@%", "1", "ROW", "1", "0", "3306", "1", "1"])
    assert "MySQL 8.0.36" in text and len(found) == 1
    found, text = _preflight("target", ["10.11.6-MariaDB", "root@localhost", "2", "1"], slaves="backup\tx\n")
    assert "already replicates (backup)" in text and len(found) == 1
    found, text = _preflight("target", ["10.11.6-MariaDB", "app@localhost", "0", "0"])
    assert "server_id = 0" in text and "REPLICATION SLAVE ADMIN" in text
