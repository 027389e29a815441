"""MySQL/MariaDB dump and restore: what they compile to, and the restore's shell and filter run for real.

The restore's shell is run here with `mariadb` replaced by a small program that keeps what each client
got (the real servers are in tests/e2e/test_mysql_redis.py): every table of the dump reaches exactly one
of the N clients, after the dump's header; views and routines come last, through one more client, once
every table is in; the spool directory is gone afterwards; a client that fails fails the step.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Shell
from mdsl.compile.parts import Command
from mdsl.stores.mysql.commands import DUMP_FLAGS, RESTORE_SCRIPT, SENTINEL, ZSTD
from mdsl.stores.mysql.restore_filter import CHUNK_BYTES
from mdsl.stores.postgres.commands import RESTORE_JOBS_VAR, RestorePart, auto_jobs
from mdsl.syntax.parser import parse_text

HEAD = """plan "my"
host a { ssh = "root@10.0.0.1" }
host b { ssh = "root@10.0.0.2" }
mysql old_db on a { database = "nc"  user = "nextcloud"  tcp = "127.0.0.1:3306"  password = env("PW") }
mysql new_db on b { database = "nc"  socket = "SOCKET"  fresh = true }
"""


def compiled(steps: str, socket: str = "/run/mysqld/mysqld.sock"):
    bound = resolve(parse_text(HEAD.replace("SOCKET", socket) + "steps {\n" + steps + "\n}\n", "my.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def migrate(restore_opts: str = "", path: str = "/srv/nc.sql.zst", socket: str = "/run/mysqld/mysqld.sock"):
    return compiled(f'  dump old_db to a:"{path}"\n  transfer a:"{path}" to b:"{path}"\n'
                    f'  restore b:"{path}" into new_db replace{restore_opts}', socket)


def shells(cp, kind: str) -> list:
    return [a.command for s in cp.leaves() if s.kind == kind for a in s.actions if isinstance(a, Shell)]


def test_the_dump_is_consistent_compressed_read_back_and_keeps_the_password_out_of_argv():
    [dump] = shells(migrate(), "dump")
    text = dump.render()
    assert DUMP_FLAGS in text and f"| {ZSTD} > /srv/nc.sql.zst.part" in text
    assert "--single-transaction --routines --triggers --events --hex-blob --default-character-set=utf8mb4" in text
    # read back whole, ending with the dump client's closing line, before the rename
    assert text.index("grep -q -F -- '-- Dump completed'") < text.index("mv -f -T -- /srv/nc.sql.zst.part")
    # the password travels in a 0600 option file named by a variable, never as an argument
    assert "MDSL_MYSQL_OPTIONS=<0600 temp file: [client]\npassword=***" in text
    assert "--password" not in text and "MYSQL_PWD" not in text
    real = dump.render(masked=False, secret_paths={"MDSL_MYSQL_OPTIONS": "/tmp/mdsl-secret.x"})
    assert "MDSL_MYSQL_OPTIONS=/tmp/mdsl-secret.x sh -c" in real
    [secret] = list(dump.all_secret_files())
    assert secret.var == "MDSL_MYSQL_OPTIONS"


def test_the_restore_checks_the_dump_then_empties_the_database_then_loads_in_parallel():
    [restore] = shells(migrate(), "restore")
    text = restore.render()
    read_back = text.index("grep -q -F -- '-- Dump completed'")
    drop = text.index("DROP DATABASE IF EXISTS `nc`")
    fifos = text.index('mkfifo -- "$d/in$i"')
    assert read_back < drop < fifos
    # the job count is the host's CPUs (capped), unless `jobs =` says
    assert Command("b", auto_jobs()).render() in text
    [explicit] = shells(migrate(" jobs = 3"), "restore")
    assert f"{RESTORE_JOBS_VAR}=3;" in explicit.render() and "nproc" not in explicit.render()


def test_the_restore_declares_its_spool_for_preflight():
    cp = migrate()
    [part] = [d for s in cp.leaves() if s.kind == "restore" for d in s.destinations if isinstance(d, RestorePart)]
    assert part.path == "/srv/nc.sql.zst.restore.part"
    assert (part.size_of.host, part.size_of.path) == ("b", "/srv/nc.sql.zst")


def test_jobs_is_refused_on_a_mysql_dump():
    bound = resolve(parse_text(HEAD.replace("SOCKET", "/s") + 'steps {\n  dump old_db to a:"/srv/x" jobs = 2\n}\n',
                               "my.plan"))
    assert not bound.ok


# ---------------------------------------------------------------- the restore run for real

DUMP = """/*M!999999\\- enable the sandbox mode */
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
/*!40101 SET NAMES utf8mb4 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
{tables}
--
-- Temporary table structure for view `v_usage`
--

/*!50001 CREATE VIEW `v_usage` AS SELECT
 1 AS `storage` */;

--
-- Dumping routines for database 'nc'
--
DELIMITER ;;
CREATE DEFINER=`ncadmin`@`localhost` PROCEDURE `files_of`(IN st BIGINT)
BEGIN
  SELECT COUNT(*) FROM t0 WHERE storage = st;
END
;;
DELIMITER ;

--
-- Final view structure for view `v_usage`
--

/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`ncadmin`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `v_usage` AS select 1 AS `storage` */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;

-- Dump completed on 2026-12-05  5:00:00
"""

TABLE = """
--
-- Table structure for table `{name}`
--

DROP TABLE IF EXISTS `{name}`;
CREATE TABLE `{name}` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `storage` bigint(20) NOT NULL,
  `path_hash` varchar(32) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `{name}_hash` (`storage`,`path_hash`),
  KEY `{name}_storage` (`storage`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

--
-- Dumping data for table `{name}`
--

LOCK TABLES `{name}` WRITE;
/*!40000 ALTER TABLE `{name}` DISABLE KEYS */;
INSERT INTO `{name}` VALUES {rows};
/*!40000 ALTER TABLE `{name}` ENABLE KEYS */;
UNLOCK TABLES;
"""

# Keeps what each client got (one file per client, and every line in the order the clients read them in
# one log shared by all, `N<TAB>line`), prints the filter's markers as the server would print the SELECTs
# (line by line, as --unbuffered does), fails at a line holding FAIL_ON, and answers the emptying SQL
# (--execute) with nothing.
FAKE_CLIENT = r"""#!/bin/sh
for a in "$@"; do case "$a" in --execute=*) exit 0;; esac; done
f=$(mktemp "$CLIENTS/client.XXXXXX") || exit 1
n=${f##*.}
exec 3>>"$f" 4>>"$CLIENTS/all.log"
while IFS= read -r line || [ -n "$line" ]; do
  printf '%s\n' "$line" >&3
  printf '%s\t%s\n' "$n" "$line" >&4
  if [ -n "$FAIL_ON" ]; then
    case "$line" in *"$FAIL_ON"*) echo "ERROR 1062 (23000) at line 9: Duplicate entry" >&2; exit 1;; esac
  fi
  case "$line" in "SELECT 'mdsl: "*"';") m=${line#"SELECT '"}; printf '%s\n' "${m%"';"}";; esac
done
exit 0
"""


def make_dump(tables: int = 7, rows: int = 3) -> str:
    parts = []
    for t in range(tables):
        values = ",\n".join(f"({t * 1000 + r},{r},'h{t}-{r} DEFINER=`x`@`y` 🐘')" for r in range(rows))
        parts.append(TABLE.format(name=f"t{t}", rows=values))
    return DUMP.replace("{tables}", "".join(parts))


def run_restore(tmp_path: Path, dump_text: str, jobs: int = 3, fail_on: str = "", chunk: int = 0):
    """The compiled restore step, run by /bin/sh here, with the fake client first on PATH (and the filter's
    part size `chunk` bytes of rows instead of CHUNK_BYTES, when given)."""
    bin_dir, clients = tmp_path / "bin", tmp_path / "clients"
    bin_dir.mkdir()
    clients.mkdir()
    (bin_dir / "mariadb").write_text(FAKE_CLIENT)
    (bin_dir / "mariadb").chmod(0o755)
    path = tmp_path / "in box" / "nc.sql.zst"  # a space: every path is quoted
    path.parent.mkdir()
    subprocess.run(["zstd", "-q", "-o", str(path)], input=dump_text.encode(), check=True)
    cp = compiled(f'  # mdsl: allow H203 "made elsewhere"\n  restore b:"{path}" into new_db replace jobs = {jobs}')
    [restore] = shells(cp, "restore")
    env = {"PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin", "CLIENTS": str(clients),
           "FAIL_ON": fail_on}
    text = restore.render()
    if chunk:
        assert text.count(f' "$d" "${RESTORE_JOBS_VAR}" {CHUNK_BYTES} ;') == 1
        text = text.replace(f' "$d" "${RESTORE_JOBS_VAR}" {CHUNK_BYTES} ;', f' "$d" "${RESTORE_JOBS_VAR}" {chunk} ;')
    r = subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=120)
    got = [p.read_text() for p in sorted(clients.glob("client.*"))]
    return r, got, path


def test_each_table_goes_to_one_client_and_views_and_routines_come_last(tmp_path):
    r, got, path = run_restore(tmp_path, make_dump())
    assert r.returncode == 0, r.stderr
    tails = [g for g in got if SENTINEL in g]
    workers = [g for g in got if SENTINEL not in g]
    assert len(tails) == 1 and len(workers) == 3
    for g in got:  # every client starts with the dump's session settings
        assert g.startswith("/*M!999999\\- enable the sandbox mode */\n") and "FOREIGN_KEY_CHECKS=0" in g
    for t in range(7):
        holding = [g for g in workers if f"CREATE TABLE `t{t}`" in g]
        assert len(holding) == 1, t
        [g] = holding
        # its rows, then its secondary keys by one ALTER after them (not in the CREATE)
        assert g.count(f"INSERT INTO `t{t}` VALUES") == 1
        create = g[g.index(f"CREATE TABLE `t{t}`"):]
        assert "UNIQUE KEY" not in create[:create.index(";")]
        assert (create.index("ENABLE KEYS */;")
                < create.index(f"ALTER TABLE `t{t}` ADD UNIQUE KEY `t{t}_hash` (`storage`,`path_hash`), "
                               f"ADD KEY `t{t}_storage` (`storage`);"))
        # a value holding DEFINER= is data, left alone
        assert "DEFINER=`x`@`y` 🐘" in g
    [tail] = tails
    assert "CREATE TABLE" not in tail and "PROCEDURE `files_of`" in tail and "VIEW `v_usage`" in tail
    # definers removed where mariadb-dump writes them: the objects belong to the restoring user
    assert "ncadmin" not in tail
    assert re.search(r"^CREATE +PROCEDURE `files_of`", tail, re.M)
    assert "/*!50013  SQL SECURITY DEFINER */" in tail
    assert tail.rstrip().endswith(f"SELECT '{SENTINEL}';")
    assert not Path(str(path) + ".restore.part").exists()


def test_a_failing_client_fails_the_step_and_the_spool_is_removed(tmp_path):
    r, got, path = run_restore(tmp_path, make_dump(tables=5, rows=2000), jobs=2, fail_on="CREATE TABLE `t2`")
    assert r.returncode != 0
    assert "Duplicate entry" in r.stderr
    assert not any(SENTINEL in g for g in got), "views and routines are not loaded after a failed table"
    assert not Path(str(path) + ".restore.part").exists()


def test_a_dump_without_its_closing_line_is_refused_before_the_database_is_emptied(tmp_path):
    cut = make_dump().split("-- Dump completed")[0]
    r, got, path = run_restore(tmp_path, cut)
    assert r.returncode != 0 and "lacks the dump client's closing line" in r.stderr
    assert got == []  # no client started: the emptying SQL runs only after the read-back


def test_the_filter_refuses_a_stream_cut_after_the_read_back(tmp_path):
    """Between the read-back and the load the file could change: the filter checks the end again."""
    spool = tmp_path / "spool"
    spool.mkdir()
    for i in range(2):
        os.mkfifo(spool / f"in{i}")
    # readers for the FIFOs: two `cat`s, as the clients would be
    procs = [subprocess.Popen(["sh", "-c", f'cat < "{spool}/in{i}" > "{spool}/got{i}"']) for i in range(2)]
    cut = make_dump().split("-- Dump completed")[0]
    r = subprocess.run([sys.executable, "-c", RESTORE_SCRIPT, str(spool), "2"], input=cut.encode(),
                       capture_output=True, timeout=60)
    for p in procs:
        p.wait(timeout=30)
    assert r.returncode != 0 and b"closing line" in r.stderr
    assert not (spool / "tail.sql").exists()


# A big table as mariadb-dump writes it: one INSERT statement a line, then a trigger on it.
BIG = """
--
-- Table structure for table `big`
--

DROP TABLE IF EXISTS `big`;
CREATE TABLE `big` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `storage` bigint(20) NOT NULL,
  `path_hash` varchar(32) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `big_hash` (`storage`,`path_hash`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

--
-- Dumping data for table `big`
--

LOCK TABLES `big` WRITE;
/*!40000 ALTER TABLE `big` DISABLE KEYS */;
{inserts}
/*!40000 ALTER TABLE `big` ENABLE KEYS */;
UNLOCK TABLES;
/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`ncadmin`@`localhost`*/ /*!50003 TRIGGER `big_count` AFTER INSERT ON `big` FOR EACH ROW
INSERT INTO t0 VALUES (NEW.id, 1, 'counted') */;;
DELIMITER ;
/*!50003 SET sql_mode              = @saved_sql_mode */ ;
"""


PAD = "x" * 30


def make_big_dump(statements: int = 60, rows: int = 20) -> str:
    """t0, the big table (`statements` INSERTs of `rows` rows each, ~1.2 KB a statement), t1."""
    inserts = "\n".join("INSERT INTO `big` VALUES " + ",".join(
        f"({s * rows + r},{r},'{s:04d}-{r:02d} 🐘 {PAD}')" for r in range(rows)) + ";" for s in range(statements))
    tables = (TABLE.format(name="t0", rows="(1,1,'a')") + BIG.replace("{inserts}", inserts)
              + TABLE.format(name="t1", rows="(2,2,'b')"))
    return DUMP.replace("{tables}", tables)


def log_of(tmp_path: Path) -> list:
    """[(client, line)] in the order the fake clients read them."""
    return [tuple(x.split("\t", 1)) for x in (tmp_path / "clients" / "all.log").read_text().splitlines()]


def test_a_big_table_is_split_across_clients_with_its_keys_and_trigger_after_its_last_rows(tmp_path):
    # parts larger than a pipe holds, as with real dumps: a client's thread takes its next part only once
    # its client has read most of the one before
    r, got, path = run_restore(tmp_path, make_big_dump(statements=300), jobs=2, chunk=80_000)
    assert r.returncode == 0, r.stderr
    log = log_of(tmp_path)
    where = {i: line for i, line in enumerate(log)}
    inserts = [i for i, (_, line) in where.items() if line.startswith("INSERT INTO `big` VALUES")]
    # every statement loaded once, by both clients, in parts of whole statements
    assert len(inserts) == 300
    assert sorted(int(where[i][1].split("(", 2)[1].split(",")[0]) for i in inserts) == [s * 20 for s in range(300)]
    loading = {where[i][0] for i in inserts}
    workers = [g for g in got if SENTINEL not in g]
    assert len(loading) == 2 and len(workers) == 2
    # the table is made once, before any of its rows; keys and trigger once, after all of them
    [made] = [i for i, (_, line) in where.items() if line.startswith("CREATE TABLE `big`")]
    [keys] = [i for i, (_, line) in where.items() if line.startswith("ALTER TABLE `big` ADD UNIQUE KEY `big_hash`")]
    [trigger] = [i for i, (_, line) in where.items() if "TRIGGER `big_count`" in line]
    assert made < min(inserts) and max(inserts) < keys < trigger
    assert "UNIQUE KEY" not in "".join(g[g.index("CREATE TABLE `big`"):].split(";")[0] for g in got
                                       if "CREATE TABLE `big`" in g)
    # the trigger's body stays whole and in place (it is no row of the table), its definer gone
    body = [line for _, line in log if line.startswith("INSERT INTO t0 VALUES (NEW.id")]
    assert body == ["INSERT INTO t0 VALUES (NEW.id, 1, 'counted') */;;"]
    assert where[trigger + 1][1] == body[0] and "ncadmin" not in where[trigger][1]
    # several sessions write it: no LOCK TABLES on it (they would wait for each other)
    assert not any(line == "LOCK TABLES `big` WRITE;" for _, line in log)
    # the other tables are whole in one client each; views and routines come last, after every table
    for t in ("t0", "t1"):
        assert len([g for g in workers if f"CREATE TABLE `{t}`" in g]) == 1
    [tail] = [g for g in got if SENTINEL in g]
    assert "PROCEDURE `files_of`" in tail and "VIEW `v_usage`" in tail and "CREATE TABLE" not in tail
    # the step says so (its stdout is shown under the step)
    parts = int(re.search(r"`big` \((\d+) parts, 2 clients\)", r.stdout).group(1))
    assert parts >= 3 and "rows loaded by several clients at once" in r.stdout
    assert not Path(str(path) + ".restore.part").exists()


def test_a_failing_client_of_a_split_table_fails_the_step_with_its_error_first(tmp_path):
    r, got, path = run_restore(tmp_path, make_big_dump(statements=300), jobs=2, chunk=80_000, fail_on="(4000,0,")
    assert r.returncode != 0
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith("mdsl: restore client") and "Duplicate entry" in first, r.stderr
    # the keys and trigger of the table are not made after a failed part, nor views and routines
    log = [line for _, line in log_of(tmp_path)]
    assert not any("TRIGGER `big_count`" in line or line.startswith("ALTER TABLE `big`") for line in log)
    assert not any(SENTINEL in g for g in got)
    assert not Path(str(path) + ".restore.part").exists()
