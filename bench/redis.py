"""Issue 12: a Redis server's data moved by mdsl against the by-hand way (redis-cli --rdb, scp, file swap).

    python3 bench/redis.py                 # ~1 GB in memory, 2 rounds of 2 ways
    python3 bench/redis.py --quick         # ~150 MB, 1 round
    python3 bench/redis.py --write-docs    # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a) and .3 (b) (tests/e2e/hosts.py) and two
redis-server processes (tests/e2e/dbservers.py), reached over their sockets.
The source holds what Mastodon keeps in Redis, in Mastodon's proportions: home
feeds (sorted sets of status ids), Rails cache entries (JSON and HTML text of
Zipf-distributed words, with TTLs), Sidekiq queues (lists of job JSON) and its
`schedule` and `retry` sets, sessions (hashes); random ids and words, so the
RDB compresses like real data and not like DEBUG POPULATE's filler. Before
each run the target holds keys of its own. Each round, in turn:

  by-hand   `redis-cli --rdb F` on a; scp a -> b; on b the file is put in the
            target's dir as dump.rdb and the target restarted, timed until it
            answers PING (not LOADING): the file swap of the guides
  by-hand-no-wait  the same with the source's `repl-diskless-sync-delay` set to 0
            around the snapshot (Redis 7 otherwise waits 5 s for more replicas
            before it streams): a reference, not the target's by-hand way
  mdsl      `mdsl apply` of dump, transfer, restore replace: the snapshot
            taken as a replica (no replica wait) and fed to redis-check-rdb
            as it arrives, the stream copy's sha256, and the restore into the
            running target (it replicates the file)

After every run the target's keys per database must equal the source's, and
DEBUG DIGEST (every key, value and expiry time) must match. The figure is the
issue's: speed ratio = by-hand seconds / mdsl seconds, target >= 0.9. Exits 1
when it is below.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
import time

from _common import (
    MiB, BenchHosts, Side, add_runs, alternate, bench_parser, bench_start, hand_made_scp, journal_seconds, load,
    machine, mdsl_apply, parse_bench_args, report, running, table, timed,
)
from dbservers import RedisServer, Resp

WORDS = [
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as",
    "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "not", "word", "but",
    "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how",
    "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then",
    "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "fediverse",
    "toot", "boost", "server", "instance", "federation", "timeline", "mastodon", "moderation", "admin",
    "followers", "hashtag", "cat", "coffee", "Linux", "Rust", "Python", "postgres", "migration", "backup",
    "nginx", "docker", "weekend", "morning", "today", "tonight", "#caturday", "#photography", "#introduction",
    "#nixos", "#selfhosted", "🙂", "😂", "❤️", "🎉", "👍"
]


class BenchRedis(RedisServer):
    """A test redis-server with DEBUG allowed from its socket (for DEBUG DIGEST)."""

    def _argv(self) -> list[str]:
        return super()._argv() + ["--enable-debug-command", "local"]


def text(rng: random.Random, n: int) -> str:
    """n Zipf-ish words."""
    return " ".join(WORDS[min(int(rng.paretovariate(1.2)) - 1, len(WORDS) - 1)] if rng.random() < 0.8
                    else rng.choice(WORDS) for _ in range(n))


def batch(rng: random.Random, start: int, accounts: int) -> bytes:
    """One batch of Mastodon-like keys (about 2-3 MiB of protocol)."""
    out, enc = [], Resp.encode
    now = 1_764_000_000
    for i in range(start, start + 200):
        sid = 110_000_000_000_000_000 + i * 65_536 + rng.randrange(65_536)
        acct = rng.randrange(1, accounts)
        # a home feed: status ids, scored by themselves (most of Mastodon's Redis memory)
        members = [str(sid - rng.randrange(1, 10 ** 12)) for _ in range(rng.randrange(20, 120))]
        out.append(enc("ZADD", f"feed:home:{acct}", *[w for m in members for w in (m, m)]))
        # Rails cache entries: a rendered status (JSON with HTML) for a day or so
        body = json.dumps({"id": str(sid), "account": {"id": str(acct), "username": f"user{acct}"},
                           "content": f"<p>{text(rng, rng.randrange(5, 120))}</p>",
                           "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - i * 7)),
                           "replies_count": rng.randrange(50), "reblogs_count": rng.randrange(200),
                           "media_attachments": [], "tags": [], "emojis": []}, ensure_ascii=False)
        out.append(enc("SET", f"cache:views/statuses/{sid}-{rng.randrange(10 ** 9):x}", body.encode(),
                       "EX", str(3600 + rng.randrange(86_400))))
        if i % 4 == 0:  # a Sidekiq job waiting in a queue
            job = json.dumps({"class": "ActivityPub::DeliveryWorker", "args": [
                f"{{\"@context\":\"https://www.w3.org/ns/activitystreams\",\"id\":\"https://example.social/users/"
                f"user{acct}/statuses/{sid}/activity\",\"type\":\"Create\"}}", acct,
                f"https://inst{rng.randrange(400)}.social/inbox"], "retry": 16, "queue": "push",
                "jid": f"{rng.getrandbits(96):024x}", "created_at": now - i, "enqueued_at": now - i + 0.5})
            out.append(enc("RPUSH", "queue:push" if i % 8 else "queue:default", job))
        if i % 16 == 0:  # a scheduled status, a retry
            out.append(enc("ZADD", "schedule", str(now + rng.randrange(10 ** 6)),
                           json.dumps({"class": "PublishScheduledStatusWorker", "args": [sid],
                                       "jid": f"{rng.getrandbits(96):024x}"})))
            out.append(enc("ZADD", "retry", str(now + rng.randrange(10 ** 5)),
                           json.dumps({"class": "LinkCrawlWorker", "args": [sid], "error_message": "timeout",
                                       "retry_count": rng.randrange(10), "jid": f"{rng.getrandbits(96):024x}"})))
        if i % 10 == 0:  # a session
            out.append(enc("HSET", f"session:{rng.getrandbits(128):032x}", "user_id", str(acct),
                           "ip", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                           "user_agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"))
    return b"".join(out)


def fill(server: RedisServer, target_bytes: int, accounts: int = 40_000) -> int:
    """Feed batches through `redis-cli --pipe` until the server's used_memory reaches target_bytes."""
    rng = random.Random(12)
    i = 0
    while True:
        chunk = b"".join(batch(rng, i + k * 200, accounts) for k in range(100))
        i += 100 * 200
        r = subprocess.run(["redis-cli", "-s", str(server.socket), "--pipe"], input=chunk, capture_output=True)
        if r.returncode != 0 or b"errors: 0" not in r.stdout:
            raise RuntimeError(f"redis-cli --pipe: {r.stdout[-500:]!r} {r.stderr[-500:]!r}")
        used = int(server.cli("INFO", "memory").split("used_memory:")[1].split()[0])
        if used >= target_bytes:
            return used


def digest(server: RedisServer) -> str:
    return server.cli("DEBUG", "DIGEST").strip()


def ready(server: RedisServer, timeout: float = 600) -> None:
    """Until the server answers PING with PONG (not -LOADING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Resp.unix(str(server.socket)) as conn:
                if conn.call("PING") == b"PONG":
                    return
        except Exception:  # noqa: BLE001 - LOADING, or not listening yet
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{server} did not finish loading")


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--mib", type=int, default=None, help="the source's used memory in MiB (default 1024; 150 quick)")
    add_runs(ap)
    args = parse_bench_args(ap)
    mib = args.mib or (150 if args.quick else 1024)
    runs = args.runs
    q = shlex.quote
    started = bench_start()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src, dst = BenchRedis(H.base, "source"), BenchRedis(H.base, "target")
        with running(src, dst):
            t0 = time.perf_counter()
            used = fill(src, mib * MiB)
            want_keys, want_digest = src.keyspace(), digest(src)
            version = src.cli("INFO", "server").split("redis_version:")[1].split()[0]
            print(f"loaded {sum(want_keys.values()):,} keys, {used / MiB:.0f} MiB used, in "
                  f"{time.perf_counter() - t0:.0f} s; {load()}", flush=True)
            plan = H.base / "redis.plan"
            plan.write_text(f'''plan "Redis bench"
{H.host_decl("a")}
{H.host_decl("b")}
redis old_queue on a {{ socket = "{src.socket}" }}
redis new_queue on b {{ socket = "{dst.socket}"  fresh = true }}
steps {{
  dump old_queue to a:"{a.root}/redis.rdb"
  transfer a:"{a.root}/redis.rdb" to b:"{b.root}/redis.rdb"
  restore b:"{b.root}/redis.rdb" into new_queue replace
}}
''')
            sizes = {}
            # the hosts share nothing: a's own key for b, as an admin would set up (scp takes -P, not -p)
            scp_opts = hand_made_scp(a, b)

            def clean():
                subprocess.run(f"rm -f {q(str(a.root))}/redis.* {q(str(b.root))}/redis.* {q(str(dst.dir))}/dump.rdb",
                               shell=True, check=True)
                dst.cli("FLUSHALL")
                dst.load_sample(1000, prefix="stale")

            def verify(name: str) -> None:
                got = dst.keyspace()
                assert got == want_keys, (name, got, want_keys)
                assert digest(dst) == want_digest, (name, "DEBUG DIGEST differs")
                assert dst.cli("EXISTS", "stale:str:0").strip() == "0", (name, "a key the target held is left")

            def by_hand(side: Side, no_wait: bool = False) -> float:
                f_a, f_b = f"{a.root}/redis.rdb", f"{b.root}/redis.rdb"
                cli = f"redis-cli -s {q(str(src.socket))}"
                # an admin who knows Redis 7's replica wait turns it off around the snapshot, as mdsl does
                snapshot = (f"{cli} CONFIG SET repl-diskless-sync-delay 0 >/dev/null && {cli} --rdb {q(f_a)} >/dev/null"
                            f" && {cli} CONFIG SET repl-diskless-sync-delay 5 >/dev/null" if no_wait
                            else f"{cli} --rdb {q(f_a)} >/dev/null")
                t1 = timed(H.ssh_base("a") + [snapshot])
                sizes[side.name] = os.path.getsize(f_a)
                t2 = timed(H.ssh_base("a") + [f"scp -q {scp_opts} {q(f_a)} {q(f'root@{b.address}:{f_b}')}"])
                t = time.perf_counter()
                dst.stop()
                # the target's dir is the control machine's (the servers run here): cp as root on b would
                subprocess.run(["cp", "--", f_b, str(dst.dir / "dump.rdb")], check=True)
                dst.start(timeout=600)
                ready(dst)
                t3 = time.perf_counter() - t
                for k, v in (("dump", t1), ("copy", t2), ("restore", t3)):
                    side.add(k, v)
                verify(side.name)
                return t1 + t2 + t3

            def mdsl(side: Side) -> float:
                m = mdsl_apply(plan)
                for k, v in journal_seconds(plan).items():
                    side.add(k, v)
                sizes["mdsl"] = os.path.getsize(f"{b.root}/redis.rdb")
                verify("mdsl")
                return m.seconds

            print(f"{runs} round(s) of 2 ways; {load()}", flush=True)
            res = alternate(runs, {"by-hand": by_hand, "by-hand-no-wait": lambda side: by_hand(side, no_wait=True),
                                   "mdsl": mdsl}, before=clean)
            end_load = load()

    explain = {"by-hand": "`redis-cli --rdb`; scp; put as the target's dump.rdb, restart it, until it answers",
               "by-hand-no-wait": "the same, with `repl-diskless-sync-delay 0` set on the source around the snapshot "
                                  "(a reference: what an admin who knows Redis 7's replica wait does)",
               "mdsl": "snapshot as a replica (no replica wait), checked by redis-check-rdb as it arrives; "
                       "stream copy; the running target replicates the file"}
    hand, expert, ours = res["by-hand"], res["by-hand-no-wait"], res["mdsl"]
    rows = [[f"`{x.name}`", explain[x.name], f"**{x.med:.1f}**" if x.name == "mdsl" else f"{x.med:.1f}",
             x.runs_text(), x.parts_text(), f"{sizes[x.name] / MiB:.0f} MiB"]
            for x in res.values()]
    text_out = "\n".join([
        f"Mastodon-like Redis {version}: {sum(want_keys.values()):,} keys (home feeds, cache entries with TTLs, "
        f"Sidekiq queues and sets, sessions), {used / MiB:.0f} MiB used; dump on a, copy a -> b, restore on b; "
        f"median of {runs} alternating round(s). {machine()}; {end_load} at the end; "
        f"{(time.perf_counter() - started) / 60:.1f} minutes in all.", "",
        table(["way", "what", "median s", "runs (s)", "dump / copy / restore s", "RDB"], rows, align="llrrrr"), "",
        f"- speed ratio by hand / mdsl: **{hand.med / ours.med:.2f}** ({hand.med:.1f} s vs {ours.med:.1f} s; "
        "target >= 0.9)",
        f"- against the reference without the replica wait: **{expert.med / ours.med:.2f}** ({expert.med:.1f} s; "
        "what mdsl's proofs cost: redis-check-rdb reading the snapshot as it arrives, the copy's sha256 on both "
        "ends, the load into the running target instead of a restart)",
        "- after every run: the keys of every database and DEBUG DIGEST (keys, values, expiry times) equal the "
        "source's, and the keys the target held before are gone",
        "- mdsl's time includes `mdsl apply`'s own cost (check, connect, preflight, journal); the by-hand "
        "restore is timed from stopping the target to its first PONG",
    ])
    report("redis", text_out, args.write_docs)
    return 0 if hand.med / ours.med >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
