"""Redis dump, restore and drop: what they compile to (the real servers are in tests/e2e/test_mysql_redis.py).

The dump is `redis-cli --rdb` into `PATH.part`, read whole by redis-check-rdb before the rename; the
restore replicates the file into the running target; a password reaches redis-cli and the script only
through a 0600 file, never argv.
"""

from __future__ import annotations

import shlex

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Shell
from mdsl.stores.redis.commands import PASSWORD_FILE_VAR
from mdsl.syntax.parser import parse_text

HEAD = """plan "redis"
host a { ssh = "root@10.0.0.1" }
host b { ssh = "root@10.0.0.2" }
redis old_q on a { tcp = "127.0.0.1:6379"  password = env("REDIS_PW") }
redis new_q on b { socket = "/run/redis/redis server.sock"  fresh = true }
"""


def compiled(steps: str):
    bound = resolve(parse_text(HEAD + "steps {\n" + steps + "\n}\n", "redis.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def shells(cp, kind: str) -> list:
    return [a.command for s in cp.leaves() if s.kind == kind for a in s.actions if isinstance(a, Shell)]


MOVE = ('  dump old_q to a:"/srv/redis.rdb"\n  transfer a:"/srv/redis.rdb" to b:"/srv/redis.rdb"\n'
        '  restore b:"/srv/redis.rdb" into new_q replace')


def test_the_dump_is_a_checked_rdb_snapshot_and_the_password_stays_out_of_argv():
    [dump] = shells(compiled(MOVE), "dump")
    text = dump.render()
    w = shlex.split(text.replace(f"{PASSWORD_FILE_VAR}=<0600 temp file: ***>", "F=x"))
    assert "--rdb" in text and w[w.index("mdsl") + 1:w.index("mdsl") + 6] == [
        "/srv/redis.rdb.part", "-h", "127.0.0.1", "-p", "6379"]
    # read whole (every key, the CRC64) before the rename
    assert text.index("redis-check-rdb /srv/redis.rdb.part") < text.index("mv -f -T -- /srv/redis.rdb.part")
    # the password: a 0600 file, read into REDISCLI_AUTH inside the wrapper; never -a
    assert f"{PASSWORD_FILE_VAR}=<0600 temp file: ***>" in text and " -a " not in text
    assert [f.var for f in dump.all_secret_files()] == [PASSWORD_FILE_VAR]


def test_the_restore_of_the_plans_own_snapshot_does_not_read_it_again():
    cp = compiled(MOVE)
    [restore] = shells(cp, "restore")
    text = restore.render()
    assert "redis-check-rdb" not in text
    assert text.endswith("restore -s '/run/redis/redis server.sock' /srv/redis.rdb replace")
    assert "redis-check-rdb" not in cp.tools_by_host()["b"]


def test_a_snapshot_made_outside_the_plan_is_read_whole_before_the_target_changes():
    cp = compiled('  # mdsl: allow H203 "made by hand"\n  restore b:"/srv/dump.rdb" into new_q replace')
    [restore] = shells(cp, "restore")
    text = restore.render()
    assert text.startswith("{ out=$(redis-check-rdb /srv/dump.rdb 2>&1) ||")
    assert text.index("redis-check-rdb") < text.index("python3 -c")
    assert "redis-check-rdb" in cp.tools_by_host()["b"]


def test_a_restore_without_replace_refuses_a_target_holding_keys():
    cp = compiled(MOVE.replace("into new_q replace", "into new_q"))
    [restore] = shells(cp, "restore")
    assert restore.render().endswith("/srv/redis.rdb empty")


def test_drop_flushes_every_database():
    cp = compiled('  drop new_q')
    [drop] = shells(cp, "drop")
    assert drop.render().endswith("flush -s '/run/redis/redis server.sock'")
