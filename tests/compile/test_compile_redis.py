"""Redis dump, restore and drop: what they compile to (the real servers are in tests/e2e/test_mysql_redis.py).

The dump is `redis-cli --rdb` into `PATH.part`, read whole by redis-check-rdb before the rename; the
restore replicates the file into the running target; a password reaches redis-cli and the script only
through a 0600 file, never argv.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import Shell
from mdsl.stores.redis.commands import PASSWORD_FILE_VAR, SCRIPT
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
    cp = compiled(MOVE)
    [dump] = shells(cp, "dump")
    text = dump.render()
    w = shlex.split(text.replace(f"{PASSWORD_FILE_VAR}=<0600 temp file: ***>", "F=x"))
    # the script takes the snapshot itself (a replica's SYNC) and hands the bytes to redis-check-rdb as they come
    at = w.index("dump")
    assert w[at + 1:at + 6] == ["-h", "127.0.0.1", "-p", "6379", "/srv/redis.rdb.part"]
    assert text.index("python3 -c") < text.index("mv -f -T -- /srv/redis.rdb.part /srv/redis.rdb")
    assert "redis-check-rdb" in cp.tools_by_host()["a"] and "redis-cli" not in text
    # the password: a 0600 file the script reads; never argv
    assert f"{PASSWORD_FILE_VAR}=<0600 temp file: ***>" in text and " -a " not in text
    assert [f.var for f in dump.all_secret_files()] == [PASSWORD_FILE_VAR]


def test_the_restore_of_the_plans_own_snapshot_does_not_read_it_again():
    cp = compiled(MOVE)
    [restore] = shells(cp, "restore")
    text = restore.render()
    assert text.startswith("python3 -c")  # nothing runs before the script: no second read of the file
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


def _restore_script(tmp_path, rdb: bytes):
    """The restore's script on RDB, against a socket nobody listens on: how far does it get?"""
    path = tmp_path / "dump.rdb"
    path.write_bytes(rdb)
    return subprocess.run([sys.executable, "-c", SCRIPT, "restore", "-s", str(tmp_path / "none.sock"), str(path),
                           "replace"], capture_output=True, text=True, timeout=30)


# The smallest RDB a Redis 7 writes: header, the end-of-file opcode, an 8-byte CRC64 (not read by the check).
EMPTY_RDB = b"REDIS0010" + b"\xff" + bytes.fromhex("0123456789abcdef")


def test_a_snapshot_cut_short_is_refused_before_the_target_is_reached(tmp_path):
    r = _restore_script(tmp_path, EMPTY_RDB[:-1])
    assert r.returncode == 2 and "is cut short (17 bytes, no end-of-file marker)" in r.stderr, r.stderr
    body = EMPTY_RDB[:9] + b"\x00\x03key\x05value" * 100
    r = _restore_script(tmp_path, body + b"\xff" + b"\x00" * 8)
    assert "cannot connect to Redis" in r.stderr, r.stderr  # whole: it went on to the server
    r = _restore_script(tmp_path, (body + b"\xff" + b"\x00" * 8)[:-100])
    assert r.returncode == 2 and "cut short" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _restore_script(tmp_path, b"not redis at all")
    assert r.returncode == 2 and "is not an RDB file" in r.stderr, r.stderr
