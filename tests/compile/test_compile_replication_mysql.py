"""`replicate ... live` for MariaDB compiles to: a tunnel, the server ids compared, the target prepared
(what a killed pass left gone), a snapshot streamed on the target host through the tunnel with its GTID
line made active, and a named connection filtered to the one database; the final pass waits with
MASTER_GTID_WAIT and removes the connection. The source's password never reaches an argv. Events: the
snapshot's enabled ones arrive DISABLE ON SLAVE (sed run here on mariadb-dump's lines), and the final
pass gives each the source's status once the connection is gone."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Feed, Shell, Tunnel
from mdsl.compile.parts import Arg, CompileError
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



# mariadb-dump's lines for events (one each), as 10.11 writes them
DUMPED_EVENTS = [
    "/*!50106 CREATE*/ /*!50117 DEFINER=`app`@`localhost`*/ /*!50106 EVENT `tick` ON SCHEDULE EVERY 1 SECOND "
    "STARTS '2026-12-05 13:00:00' ON COMPLETION NOT PRESERVE ENABLE DO insert into ticks values (@@server_id) */ ;;",
    # a name, a comment and a body holding the words the rewrite looks for; a compound interval; ENDS
    "/*!50106 CREATE*/ /*!50117 DEFINER=`a``b`@`%`*/ /*!50106 EVENT `x``y ON COMPLETION PRESERVE ENABLE ` "
    "ON SCHEDULE EVERY '1:30' MINUTE_SECOND STARTS '2026-12-05 13:00:00' ENDS '2027-01-01 00:00:00' "
    "ON COMPLETION PRESERVE ENABLE COMMENT 'ENABLE DO' DO select ' ON COMPLETION PRESERVE ENABLE DO ' */ ;;",
    "/*!50106 CREATE*/ /*!50117 DEFINER=`app`@`localhost`*/ /*!50106 EVENT `once` ON SCHEDULE AT "
    "'2030-01-01 00:00:00' ON COMPLETION PRESERVE ENABLE DO delete from ticks */ ;;",
]
UNTOUCHED = [
    "/*!50106 CREATE*/ /*!50117 DEFINER=`app`@`localhost`*/ /*!50106 EVENT `off` ON SCHEDULE EVERY 1 DAY "
    "STARTS '2026-12-05 13:00:00' ON COMPLETION NOT PRESERVE DISABLE DO select 1 */ ;;",
    "/*!50106 CREATE*/ /*!50117 DEFINER=`app`@`localhost`*/ /*!50106 EVENT `held` ON SCHEDULE EVERY 1 DAY "
    "STARTS '2026-12-05 13:00:00' ON COMPLETION NOT PRESERVE DISABLE ON SLAVE DO select 1 */ ;;",
    "INSERT INTO `notes` VALUES (1,'/*!50106 CREATE*/ /*!50106 EVENT `e` ON SCHEDULE AT \\'x\\' "
    "ON COMPLETION PRESERVE ENABLE DO ');",
    "/*!50003 CREATE*/ /*!50017 DEFINER=`app`@`localhost`*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW "
    "SET NEW.a = 'ON COMPLETION PRESERVE ENABLE ' */;;",
]


def _snapshot_sed(lines) -> list:
    snapshot = next(a for a in compiled().steps[0].actions if isinstance(a, Shell))
    shown = snapshot.command.render(masked=True)
    assert f"sed -E -e {shlex.quote(R.GTID_LINE)} -e {shlex.quote(R.EVENT_LINE)} " in shown
    out = subprocess.run(["sed", "-E", "-e", R.GTID_LINE, "-e", R.EVENT_LINE], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.splitlines()


def test_the_snapshot_brings_enabled_events_in_disabled_on_slave():
    out = _snapshot_sed(DUMPED_EVENTS)
    for before, after in zip(DUMPED_EVENTS, out, strict=True):
        # one word changed, the status after ON COMPLETION: definer, name, schedule, comment and body as they were
        assert after.count("DISABLE ON SLAVE") == 1 and after.replace("DISABLE ON SLAVE", "ENABLE", 1) == before
    assert "EVENT `x``y ON COMPLETION PRESERVE ENABLE ` ON SCHEDULE" in out[1]
    assert "PRESERVE DISABLE ON SLAVE COMMENT 'ENABLE DO' DO select ' ON COMPLETION PRESERVE ENABLE DO '" in out[1]


def test_the_snapshot_leaves_disabled_events_data_and_triggers_as_they_are():
    assert _snapshot_sed(UNTOUCHED) == UNTOUCHED


def _executed(cmd) -> str:
    """The SQL a client command runs (its --execute= argument)."""
    return next(p.value for p in cmd.parts if isinstance(p, Arg) and p.prefix == "--execute=")


def test_live_pass_holds_what_the_rewrite_missed_before_replicating():
    live = compiled().steps[0]
    kinds = [type(a).__name__ for a in live.actions]
    hold, start = live.actions[kinds.index("Shell") + 1:kinds.index("Shell") + 3]
    assert isinstance(hold, Feed) and hold.source.host == "new" and hold.command.host == "new"
    sql = _executed(hold.source)
    assert sql == R.hold_events_sql(Mysql(name="new_db", host="new", database="nc"))
    assert "EVENT_SCHEMA = 'nc' AND STATUS = 'ENABLED'" in sql and "' EVENT ', '`nc`', '.`'" in sql
    assert "'DISABLE ON SLAVE', ';')" in sql
    assert start.creates is not None  # the connection starts once the events are held


def test_final_pass_gives_events_the_source_status_after_the_connection_is_gone():
    final = compiled().steps[2]
    feeds = [a for a in final.actions if isinstance(a, Feed)]
    assert [bool(f.removes) for f in feeds] == [False, True, False]
    events = feeds[-1]
    assert (events.source.host, events.command.host) == ("old", "new")
    assert isinstance(final.actions[-1], Tunnel) and final.actions[-1].close
    sql = _executed(events.source)
    assert sql == R.event_status_sql(Mysql(name="old_db", host="old", database="nextcloud"),
                                     Mysql(name="new_db", host="new", database="nc"))
    # every event of the source's database, named in the target's, with the source's status and definer
    # (ALTER EVENT without DEFINER makes the target's login the definer)
    assert "WHERE EVENT_SCHEMA = 'nextcloud' ORDER BY" in sql and "' EVENT ', '`nc`', '.`'" in sql
    assert "CASE STATUS WHEN 'ENABLED' THEN 'ENABLE' WHEN 'DISABLED' THEN 'DISABLE' ELSE 'DISABLE ON SLAVE'" in sql
    assert sql.startswith("SELECT CONCAT('ALTER DEFINER = ', IF(LOCATE('@', DEFINER) = 0, QUOTE(DEFINER),")
    odd = R.event_status_sql(Mysql(name="old_db", host="old", database="a'b"),
                             Mysql(name="new_db", host="new", database="c`d"))
    assert "EVENT_SCHEMA = 'a''b'" in odd and "' EVENT ', '`c``d`', '.`'" in odd


SNAPSHOT_PLAN = '''plan "s"
host a { ssh = "root@a.example.net" }
host b { ssh = "root@b.example.net" }
mysql old_db on a { database = "a#p.p"  user = "repl"  tcp = "127.0.0.1:3306"  password = env("PW") }
mysql new_db on b { database = "n&w"  socket = "/run/mysqld/mysqld.sock" }
service old_app on a { systemd = ["app"]  writes = [old_db] }
steps {
  replicate old_db to new_db live  port = 45000
  stop old_app
  replicate old_db to new_db  port = 45000
}
'''
# what mariadb-dump writes for a table whose DEFAULT takes a sequence's next value (SHOW CREATE TABLE names
# the source's database), an event, and the commented GTID position at the end
SNAPSHOT_DUMP = """CREATE TABLE `tickets` (
  `id` bigint(20) NOT NULL DEFAULT nextval(`a#p.p`.`ticket_seq`),
  `note` varchar(40) DEFAULT 'nextval(`a#p.p`.`x`)',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB;
INSERT INTO `tickets` VALUES (100,' DEFAULT nextval(`a#p.p`.`x`)');
""" + DUMPED_EVENTS[0] + """
-- SET GLOBAL gtid_slave_pos='0-11-122';
"""
FAKES = {
    "mariadb-dump": 'cat "$DUMP_TEXT"; i=0; while [ $i -lt "${DUMP_MORE:-0}" ]; do echo "INSERT INTO t VALUES (1);"; '
                    'i=$((i + 1)); done; exit "${DUMP_RC:-0}"\n',
    "mariadb": 'while IFS= read -r line; do printf \'%s\\n\' "$line" >> "$LOADED"; '
               'case "$line" in *"$LOAD_FAIL_ON"*) echo "ERROR 1100 (HY000) at line 2" >&2; exit 1;; esac; done\n',
}


def _run_snapshot(tmp_path: Path, **env) -> tuple:
    """The compiled snapshot step run by /bin/sh here, with stand-ins for mariadb-dump and mariadb."""
    bound = resolve(parse_text(SNAPSHOT_PLAN, "s.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    snapshot = next(a for a in compile_plan(bound).steps[0].actions if isinstance(a, Shell))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "dump.sql").write_text(SNAPSHOT_DUMP)
    loaded = tmp_path / "loaded.sql"
    text = snapshot.command.render(masked=False, secret_paths={R.SOURCE_OPTIONS_VAR: "/dev/null"})
    assert "--skip-add-locks" in text  # LOCK TABLES fails for a table whose DEFAULT takes a sequence's value
    r = subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={"PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin",
                            "DUMP_TEXT": str(tmp_path / "dump.sql"), "LOADED": str(loaded),
                            "LOAD_FAIL_ON": "\x01never", **env})
    return r, loaded.read_text() if loaded.exists() else ""


def test_the_snapshot_loads_into_another_name_with_its_position_and_events_held(tmp_path):
    r, loaded = _run_snapshot(tmp_path)
    assert r.returncode == 0, r.stderr
    # the column's sequence named in the target's database; a string value as it was
    assert "  `id` bigint(20) NOT NULL DEFAULT nextval(`n&w`.`ticket_seq`)," in loaded
    assert "DEFAULT 'nextval(`a#p.p`.`x`)'" in loaded and "(100,' DEFAULT nextval(`a#p.p`.`x`)')" in loaded
    assert "ON COMPLETION NOT PRESERVE DISABLE ON SLAVE DO" in loaded
    assert loaded.endswith("\nSET GLOBAL gtid_slave_pos='0-11-122';\n")


def test_a_load_that_stops_fails_the_snapshot_though_the_dump_succeeded(tmp_path):
    # the load refuses a statement while the dump still writes (it then dies of SIGPIPE, or ends well)
    r, loaded = _run_snapshot(tmp_path, LOAD_FAIL_ON="INSERT INTO `tickets`", DUMP_MORE="20000")
    assert r.returncode != 0
    assert "mdsl: the snapshot of old_db failed (load exit 1)" in r.stderr, r.stderr
    assert "gtid_slave_pos" not in loaded
    (tmp_path / "again").mkdir()
    r, _ = _run_snapshot(tmp_path / "again", DUMP_RC="2")
    assert r.returncode != 0 and "mdsl: the snapshot of old_db failed (dump exit 2)" in r.stderr, r.stderr


def test_dump_and_restore_keep_events_as_they_are():
    steps = ('  stop old_app\n  dump old_db to old:"/srv/nc.sql.zst"\n'
             '  transfer old:"/srv/nc.sql.zst" to new:"/srv/nc.sql.zst"\n  restore new:"/srv/nc.sql.zst" into new_db\n')
    bound = resolve(parse_text(PLAN[:PLAN.index("steps {")].replace("DST", "nc") + "steps {\n" + steps + "}\n",
                               "d.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    cp = compile_plan(bound)
    kinds = {s.kind for s in cp.leaves()}
    assert {"dump", "restore"} <= kinds
    text = "\n".join(c.render(masked=True) for s in cp.leaves() for a in s.actions if hasattr(a, "commands")
                     for c in a.commands())
    assert "--events" in text and "DISABLE ON SLAVE" not in text and R.EVENT_LINE not in text


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
