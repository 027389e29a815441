"""Target 6: the whole Mastodon migration, mdsl's plan against the seed's by-hand commands; the downtime window.

    python3 bench/migration.py                 # ~1.1 GB database, 20,000 files / 1 GiB, 2 rounds (~10-15 minutes)
    python3 bench/migration.py --quick         # ~100 MB database, 3,000 files / 128 MiB, 1 round (~1 minute)
    python3 bench/migration.py --write-docs    # put the figures into docs/performance.md
    python3 bench/migration.py --sides mdsl,mdsl-lanes   # also: the database and files chains in two lanes
    python3 bench/migration.py --quick --check-verifier  # first show that a damaged copy is caught

Two sshd test hosts on 127.0.77.2 (a, the old Ubuntu box) and .3 (b, the new
NixOS box), and two PostgreSQL 15 clusters (tests/e2e/hosts.py): the source,
reached from a over its unix socket, holding `mastodon_production` (Mastodon-
like rows made inside the cluster by bench/database.py's `load_mastodon`, or
by this file's own `load_mastodon_db` when that is missing); the target,
reached from b, holding an empty `mastodon` (what the NixOS module creates).
On a, in its root: home/mastodon/live/public/system (bench/files.py's tree:
half the bytes in small text files, half in large incompressible media) and
home/mastodon/live/.env.production (a secret, 0600).

The app on each side is a real command service (start/stop/status): a writer
(tests/e2e/writer.py) inserting rows into its database and writing files into
its public/system while it runs, and a tiny HTTP server on the host's address
answering GET /health (`migration.py serve ...`). The old app runs before each
migration; the new one is started by it. A poller thread GETs both /health
endpoints every 50 ms: the **downtime window** of a run is from the old app's
last answer to the new app's first one.

Each round, in turn (order rotating):

  seed        the seed's commands by hand, in order, as a shell script of ssh commands:
              stop the app; pg_dump -Fc; tar czf; scp both (and the env file) to b;
              dropdb + createdb + pg_restore (serial); tar xzf; chown -R; start the app;
              curl until it answers
  mdsl        `mdsl apply --yes` of plans/mastodon-ubuntu-to-nixos.plan adapted to these
              hosts: stop; parallel { dump, archive } (mdsl's default formats: zstd);
              transfer x3 (stream, sha256 both ends); restore replace jobs = 2; extract;
              start; verify http via = b
  mdsl-live   the same, but the files go by two syncs (`sync ... live` while the app
              still runs, then a final `sync` after the stop, in parallel with the dump)
              instead of archive/transfer/extract
  mdsl-lanes  (only with --sides) the mdsl plan with the database chain and the files
              chain each in a `sequence` lane of one `parallel` block

Between runs (not timed) the target database is dropped and created empty,
the target directories and artifacts removed, the old app started again.
After every run (not timed) the target is compared with the source: every
table's row count and a checksum of its rows (a 64-bit hash per row, summed),
the sequences, every file's sha256, mode and owner, the env file's content
and mode; a run whose copy differs counts as failed (NaN), whatever its time.
After the rounds, the commands mdsl compiles for each step are run alone,
once, to show where the time goes inside the steps (--no-breakdown skips it).
Per-step seconds come from the seed script's timestamps and mdsl's journal.
Exits 1 unless mdsl's median is at most half the seed's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import http.server
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------- the app's HTTP part (runs on the "hosts")


def _alive(pid: int) -> bool:
    try:
        raw = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2:].split()[0] not in ("Z", "X")


def _pid_of(pidfile: str):
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def serve_main(argv) -> int:
    """`migration.py serve start|stop|status|run --pidfile P [--addr A --port N --name NAME]`."""
    ap = argparse.ArgumentParser(prog="migration.py serve")
    ap.add_argument("action", choices=("start", "stop", "status", "run"))
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="app")
    args = ap.parse_args(argv)
    if args.action == "status":
        return 0 if _pid_of(args.pidfile) else 3
    if args.action == "stop":
        pid = _pid_of(args.pidfile)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(args.pidfile)
        return 0
    if args.action == "start":
        if _pid_of(args.pidfile):
            return 0
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", "run", *argv[1:]],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True, close_fds=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if child.poll() is not None:
                print(f"http server exited ({child.returncode})", file=sys.stderr)
                return 1
            if _pid_of(args.pidfile) == child.pid:
                return 0
            time.sleep(0.01)
        child.kill()
        return 1

    # run: answer /health until SIGTERM
    name = args.name.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b'{"status": "ok", "app": "' + name + b'"}\n' if self.path == "/health" else b"not found\n"
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer((args.addr, args.port), Handler)
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start())
    tmp = args.pidfile + ".tmp"
    Path(tmp).write_text(f"{os.getpid()}\n")
    os.replace(tmp, args.pidfile)
    srv.serve_forever(poll_interval=0.05)
    srv.server_close()
    with contextlib.suppress(OSError):
        if Path(args.pidfile).read_text().strip() == str(os.getpid()):
            os.unlink(args.pidfile)
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "serve":
    sys.exit(serve_main(sys.argv[2:]))


# ---------------------------------------------------------------- the database

# Mastodon-like tables (a subset of its schema, same shapes): text from a pool of phrases made of
# common words (compresses about like real posts), snowflake-like ids, jsonb, timestamps; indexes
# and foreign keys added after the load, as pg_restore does. Sized by the number of statuses.
WORDS = ["the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean", "before", "move", "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play", "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need", "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self", "earth", "father", "toot", "boost", "federated", "instance", "timeline", "fediverse", "mastodon", "server", "admin", "moderation", "release", "update", "photo", "cat", "coffee", "weekend", "music", "rust", "python", "linux", "nixos", "postgres", "backup", "migration"]

DB_SQL = r"""
\set ON_ERROR_STOP 1
set timezone = 'UTC';
set maintenance_work_mem = '256MB';
create temp table words as select array[%(words)s]::text[] as w;
create temp table phrases as
  select p as id,
         (select string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
            from words, generate_series(1, 5 + (p %% 11) + 0 * p)) as txt
  from generate_series(0, 9999) p;
create temp table tags as
  select t as id, (select w[1 + (t * 7) %% array_length(w, 1)] from words) || (t %% 97) as tag
  from generate_series(0, 499) t;

create table accounts (
  id bigint primary key, username text not null, domain text, display_name text not null default '',
  note text not null default '', uri text not null default '', url text, avatar_file_name text,
  avatar_content_type text, avatar_file_size integer, header_file_name text, locked boolean not null default false,
  discoverable boolean, fields jsonb, followers_count integer not null default 0,
  created_at timestamptz not null, updated_at timestamptz not null);
insert into accounts
  select i, 'user' || i, case when i %% 3 > 0 then 'instance' || (i %% 997) || '.social' end,
         initcap(split_part(p.txt, ' ', 1)) || ' ' || initcap(split_part(p.txt, ' ', 2)),
         '<p>' || p.txt || '</p>',
         'https://' || coalesce('instance' || nullif(i %% 997, 0) || '.social', 'm.example.social') || '/users/user' || i,
         'https://' || coalesce('instance' || nullif(i %% 997, 0) || '.social', 'm.example.social') || '/@user' || i,
         md5(i::text) || '.png', 'image/png', 20000 + (i * 37) %% 400000, md5((i * 3)::text) || '.jpg',
         i %% 17 = 0, i %% 5 > 0,
         case when i %% 4 = 0 then jsonb_build_array(jsonb_build_object('name', 'Website',
              'value', 'https://blog' || i || '.example.org'), jsonb_build_object('name', 'Pronouns', 'value', 'they/them')) end,
         (i * 7919) %% 5000,
         timestamptz '2017-04-01 00:00:00+00' + i * interval '13 minutes 7 seconds',
         timestamptz '2022-11-01 00:00:00+00' + i * interval '1 minute 3 seconds'
  from generate_series(1::bigint, %(accounts)d) i join phrases p on p.id = (i * 31) %% 10000;

create table statuses (
  id bigint primary key, uri text, text text not null default '', created_at timestamptz not null,
  updated_at timestamptz not null, in_reply_to_id bigint, reblog_of_id bigint, url text,
  sensitive boolean not null default false, visibility integer not null default 0,
  spoiler_text text not null default '', reply boolean not null default false, language text,
  conversation_id bigint, local boolean, account_id bigint not null, application_id bigint,
  in_reply_to_account_id bigint, edited_at timestamptz, trendable boolean);
insert into statuses
  select 109000000000000000 + i * 4096, s.uri, s.text, s.at, s.at + (i %% 5) * interval '1 second',
         case when i %% 7 = 0 and i > 6 then 109000000000000000 + (i - 1 - i %% 5) * 4096 end,
         case when i %% 9 = 0 and i > 9 then 109000000000000000 + (i - 3) * 4096 end,
         case when s.remote then replace(s.uri, '/users/', '/@') end,
         i %% 23 = 0, i %% 4, case when i %% 23 = 0 then 'cw: ' || split_part(s.text, ' ', 2) else '' end,
         i %% 7 = 0, (array['en', 'en', 'de', 'fr', 'ja', 'es', null])[1 + i %% 7],
         i / 3, not s.remote, s.acct, case when not s.remote then 1 + i %% 4 end,
         case when i %% 7 = 0 then 1 + ((i - 1) * 7919) %% %(accounts)d end,
         case when i %% 50 = 0 then s.at + interval '5 minutes' end, i %% 3 = 0
  from (select i, 1 + (i * 7919) %% %(accounts)d as acct, (i * 7919) %% 3 > 0 as remote,
               timestamptz '2022-11-01 00:00:00+00' + i * interval '1 second 113 milliseconds' as at,
               'https://' || case when (i * 7919) %% 3 > 0 then 'instance' || (((i * 7919) %% %(accounts)d + 1) %% 997) || '.social'
                                  else 'm.example.social' end
                 || '/users/user' || (1 + (i * 7919) %% %(accounts)d) || '/statuses/' || (109000000000000000 + i * 4096) as uri,
               '<p>' || p1.txt || ' ' || p2.txt
                 || case when i %% 3 = 0 then ' #' || t.tag else '' end
                 || case when i %% 11 = 0 then ' <a href="https://news.example.org/' || md5(i::text) || '">link</a>' else '' end
                 || '</p>' as text
        from generate_series(1::bigint, %(statuses)d) i
        join phrases p1 on p1.id = i %% 10000
        join phrases p2 on p2.id = (i * 613) %% 10000
        join tags t on t.id = i %% 500) s;

create table favourites (
  id bigint primary key, account_id bigint not null, status_id bigint not null,
  created_at timestamptz not null, updated_at timestamptz not null);
insert into favourites
  select i, 1 + (i * 104729) %% %(accounts)d, 109000000000000000 + (1 + (i * 15485863) %% %(statuses)d) * 4096,
         timestamptz '2022-11-02 00:00:00+00' + i * interval '731 milliseconds',
         timestamptz '2022-11-02 00:00:00+00' + i * interval '731 milliseconds'
  from generate_series(1::bigint, %(favourites)d) i;

create table media_attachments (
  id bigint primary key, status_id bigint, file_file_name text, file_content_type text,
  file_file_size integer, file_updated_at timestamptz, remote_url text not null default '',
  created_at timestamptz not null, updated_at timestamptz not null, shortcode text, type integer not null default 0,
  file_meta jsonb, account_id bigint, description text, scheduled_status_id bigint, blurhash text);
insert into media_attachments
  select 109000000000000000 + i * 4096 + 1, 109000000000000000 + (i * 5) * 4096,
         md5(i::text) || '.' || (array['png', 'jpg', 'mp4', 'gif'])[1 + i %% 4],
         (array['image/png', 'image/jpeg', 'video/mp4', 'image/gif'])[1 + i %% 4],
         1000 + (i * 37) %% 9000000, timestamptz '2022-11-01 00:00:00+00' + i * interval '5 seconds',
         case when i %% 3 > 0 then 'https://files.instance' || (i %% 997) || '.social/media_attachments/' || md5(i::text) else '' end,
         timestamptz '2022-11-01 00:00:00+00' + i * interval '5 seconds',
         timestamptz '2022-11-01 00:00:00+00' + i * interval '5 seconds',
         case when i %% 3 = 0 then md5((i * 2)::text) end, i %% 4,
         jsonb_build_object('original', jsonb_build_object('width', 100 + i %% 1900, 'height', 100 + i %% 1000,
                            'size', (100 + i %% 1900) || 'x' || (100 + i %% 1000), 'aspect', 1.5),
                            'small', jsonb_build_object('width', 400, 'height', 300), 'focus', jsonb_build_object('x', 0, 'y', 0)),
         1 + (i * 5 * 7919) %% %(accounts)d,
         case when i %% 2 = 0 then p.txt end, null, left(md5((i * 3)::text), 20)
  from generate_series(1::bigint, %(media)d) i join phrases p on p.id = (i * 17) %% 10000;

create table follows (
  id bigint primary key, created_at timestamptz not null, updated_at timestamptz not null,
  account_id bigint not null, target_account_id bigint not null, show_reblogs boolean not null default true,
  uri text, notify boolean not null default false, languages text[]);
insert into follows
  select i, timestamptz '2022-11-01 00:00:00+00' + i * interval '2 seconds',
         timestamptz '2022-11-01 00:00:00+00' + i * interval '2 seconds',
         1 + (i - 1) / 50 %% %(accounts)d, 1 + ((i - 1) / 50 * 31 + ((i - 1) %% 50) * 104729) %% %(accounts)d,
         i %% 10 > 0, 'https://m.example.social/' || md5(i::text), i %% 13 = 0, null
  from generate_series(1::bigint, %(follows)d) i;

create unique index index_accounts_on_username_and_domain_lower on accounts (lower(username), coalesce(lower(domain), ''));
create index index_accounts_on_uri on accounts (uri);
create index index_statuses_20190820 on statuses (account_id, id desc, visibility, updated_at);
create unique index index_statuses_on_uri on statuses (uri text_pattern_ops);
create index index_statuses_on_in_reply_to_id on statuses (in_reply_to_id) where in_reply_to_id is not null;
create index index_statuses_on_reblog_of_id_and_account_id on statuses (reblog_of_id, account_id);
create index index_statuses_on_conversation_id on statuses (conversation_id);
create unique index index_favourites_on_account_id_and_status_id on favourites (account_id, status_id);
create index index_favourites_on_status_id on favourites (status_id);
create index index_media_attachments_on_status_id on media_attachments (status_id);
create unique index index_media_attachments_on_shortcode on media_attachments (shortcode text_pattern_ops)
  where shortcode is not null;
create unique index index_follows_on_account_id_and_target_account_id on follows (account_id, target_account_id);
create index index_follows_on_target_account_id on follows (target_account_id);
alter table statuses add constraint fk_statuses_account foreign key (account_id) references accounts (id) on delete cascade;
alter table statuses add constraint fk_statuses_reply foreign key (in_reply_to_id) references statuses (id) on delete set null;
alter table favourites add constraint fk_favourites_account foreign key (account_id) references accounts (id) on delete cascade;
alter table favourites add constraint fk_favourites_status foreign key (status_id) references statuses (id) on delete cascade;
alter table media_attachments add constraint fk_media_status foreign key (status_id) references statuses (id) on delete set null;
alter table media_attachments add constraint fk_media_account foreign key (account_id) references accounts (id) on delete set null;
alter table follows add constraint fk_follows_account foreign key (account_id) references accounts (id) on delete cascade;
alter table follows add constraint fk_follows_target foreign key (target_account_id) references accounts (id) on delete cascade;
create sequence statuses_id_seq start 1;
select setval('statuses_id_seq', %(statuses)d);
vacuum analyze;
"""


def load_mastodon_db(pg, db: str, statuses: int) -> dict:
    """Create and fill the Mastodon-like tables in `db` (about 1.1 kB on disk per status, indexes and the other tables included)."""
    import math

    accounts = max(statuses // 40, 100)
    while math.gcd(accounts, statuses) != 1:  # (account, status) pairs of favourites stay unique
        accounts += 1
    counts = {"statuses": statuses, "accounts": accounts, "favourites": statuses * 3 // 2,
              "media": max(statuses // 5, 10), "follows": max(statuses // 2, 100)}
    words = ", ".join("'" + w.replace("'", "''") + "'" for w in WORDS)
    pg.psql(DB_SQL % {"words": words, **counts}, db=db)
    return counts


# ---------------------------------------------------------------- checks: is the target the source?


def table_sums(pg, db: str, skip=()) -> dict:
    """{table: (rows, sum of a 64-bit hash of each row's text)} over every public table (order-free)."""
    tables = [t for t in pg.tables(db) if t not in skip]
    if not tables:
        return {}
    parts = [f"select '{t}', count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) "
             f'from public."{t}" t' for t in tables]
    out = pg.psql("set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set extra_float_digits = 3;\n"
                  + "\nunion all\n".join(parts) + ";", db=db)
    res = {}
    for line in out.splitlines():
        name, n, s = line.split("|")
        res[name] = (int(n), s)
    return res


def sequences(pg, db: str, skip=()) -> dict:
    out = pg.psql("select sequencename, last_value from pg_sequences where schemaname = 'public'", db=db)
    return {n: v for n, v in (line.split("|") for line in out.splitlines()) if not any(n.startswith(s) for s in skip)}


class TreeHasher:
    """sha256, mode, uid, gid of every entry under a root; the source's hashes are cached by (size, mtime)."""

    def __init__(self):
        self.cache = {}

    def snapshot(self, root: Path, skip_top=(), cached: bool = False) -> dict:
        out = {}
        root = Path(root)
        st = root.lstat()
        out["."] = ("dir", st.st_mode & 0o7777, st.st_uid, st.st_gid)
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == str(root):
                dirnames[:] = [d for d in dirnames if d not in skip_top]
                filenames = [f for f in filenames if f not in skip_top]
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                rel = os.path.relpath(p, root)
                st = os.lstat(p)
                if os.path.isdir(p) and not os.path.islink(p):
                    digest = "dir"
                elif os.path.islink(p):
                    digest = "link:" + os.readlink(p)
                else:
                    key = (p, st.st_size, st.st_mtime_ns, st.st_ino)
                    digest = self.cache.get(key) if cached else None
                    if digest is None:
                        h = hashlib.sha256()
                        with open(p, "rb") as f:
                            while True:
                                chunk = f.read(1 << 20)
                                if not chunk:
                                    break
                                h.update(chunk)
                        digest = h.hexdigest()
                        if cached:
                            self.cache[key] = digest
                out[rel] = (digest, st.st_mode & 0o7777, st.st_uid, st.st_gid)
        return out


def file_sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


# ---------------------------------------------------------------- the downtime poller


class Poller(threading.Thread):
    """GETs each endpoint every `period` s; keeps (monotonic time, name, answered) samples."""

    def __init__(self, endpoints: dict, period: float = 0.05):
        super().__init__(daemon=True, name="downtime-poller")
        self.endpoints, self.period = endpoints, period
        self.samples = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    @staticmethod
    def probe(addr: str, port: int) -> bool:
        try:
            conn = http.client.HTTPConnection(addr, port, timeout=0.5)
            try:
                conn.request("GET", "/health", headers={"Host": "m.example.social"})
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def run(self):
        nxt = time.monotonic()
        while not self.stopping.is_set():
            for name, (addr, port) in self.endpoints.items():
                t = time.monotonic()
                ok = self.probe(addr, port)
                with self.lock:
                    self.samples.append((t, name, ok))
            nxt += self.period
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                nxt = time.monotonic()

    def clear(self):
        with self.lock:
            self.samples = []

    def window(self, since: float, old: str = "old", new: str = "new"):
        """(last time old answered before it went down, first time new answered after that); None if unseen."""
        with self.lock:
            s = [x for x in self.samples if x[0] >= since]
        last_old = None
        down_at = None
        for t, name, ok in s:
            if name != old:
                continue
            if ok:
                last_old = t
            elif last_old is not None:
                down_at = t
                break
        if down_at is None:
            return None
        for t, name, ok in s:
            if name == new and ok and t > down_at:
                return last_old, t
        return None


# ---------------------------------------------------------------- the benchmark


def main() -> int:
    from _common import (  # noqa: E402 (the `serve` subcommand above needs none of this)
        MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, hand_made_scp, journal_steps, load, machine,
        median, mdsl_apply, run_measured, table, write_doc_block,
    )
    from files import make_tree
    from hosts import PG_BIN, REGISTRY, Writer, plan_str

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--statuses", type=int, default=None,
                    help="statuses rows (default 1,200,000: ~1.1 GB on disk; 100,000 with --quick)")
    ap.add_argument("--files", type=int, default=None, help="number of files (default 20000; 3000 with --quick)")
    ap.add_argument("--mib", type=int, default=None, help="size of the tree (default 1024; 128 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    ap.add_argument("--sides", default="seed,mdsl,mdsl-live",
                    help="comma-separated, of seed, mdsl, mdsl-live, mdsl-lanes (default: the first three)")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip timing mdsl's commands one by one after the rounds")
    ap.add_argument("--check-verifier", action="store_true",
                    help="first damage one mdsl copy four ways and check that the verification catches each")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    n_status = args.statuses or (100_000 if args.quick else 1_200_000)
    n_files = args.files or (3000 if args.quick else 20000)
    total = (args.mib or (128 if args.quick else 1024)) * MiB
    runs = args.runs or (1 if args.quick else 2)
    wanted = args.sides.split(",")
    compile_bytecode()
    q = shlex.quote
    t_start = time.monotonic()
    print(f"start: {load()}", flush=True)

    with contextlib.ExitStack() as stack:
        H = stack.enter_context(BenchHosts(2))
        a, b = H.cluster.a, H.cluster.b
        src, dst = H.postgres("source"), H.postgres("target")

        # -- the old box: database, public/system, .env.production
        src.psql("create database mastodon_production template template0 encoding 'UTF8';")
        t = time.monotonic()
        try:  # bench/database.py's generator (target 4), when it is there; else this file's own
            from database import load_mastodon
            load_mastodon(src, "mastodon_production", n_status)
            generator = "bench/database.py's `load_mastodon`"
        except ImportError:
            load_mastodon_db(src, "mastodon_production", n_status)
            generator = "bench/migration.py's `load_mastodon_db`"
        counts = {t: n for t, n in src.row_counts("mastodon_production").items()}
        src.compact()
        db_bytes = int(src.psql("select pg_database_size('mastodon_production')"))
        print(f"database: {db_bytes / MiB:.0f} MiB ({counts}) in {time.monotonic() - t:.0f}s; {load()}", flush=True)
        live = a.root / "home" / "mastodon" / "live"
        old_sys = live / "public" / "system"
        t = time.monotonic()
        make_tree(str(old_sys), n_files, total)
        env_src = live / ".env.production"
        env_src.write_text("LOCAL_DOMAIN=m.example.social\nSECRET_KEY_BASE=" + os.urandom(64).hex()
                           + "\nOTP_SECRET=" + os.urandom(64).hex() + "\nVAPID_PRIVATE_KEY=" + os.urandom(32).hex()
                           + "\nDB_HOST=/run/postgresql\n")
        env_src.chmod(0o600)
        tree_bytes = int(subprocess.run(["du", "-sb", str(old_sys)], capture_output=True, text=True).stdout.split()[0])
        print(f"files: {n_files} files, {tree_bytes / MiB:.0f} MiB in {time.monotonic() - t:.0f}s", flush=True)

        # -- the new box: an empty database (the NixOS module's), /var/lib/mastodon/{,secrets}
        dst.psql("create database mastodon template template0 encoding 'UTF8';")
        varlib = b.root / "var" / "lib" / "mastodon"
        new_sys = varlib / "public-system"
        env_dst = varlib / "secrets" / "env.production"
        owner = "nobody:nogroup"
        import grp
        import pwd
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid

        # -- the apps: writer + /health on each host's address
        run_dir = H.base / "apps"
        port_a, port_b = (_free_port(a.address), _free_port(b.address))
        old_w = Writer(run_dir / "old", src.dsn("mastodon_production"), old_sys / "writer", rate=10, name="old-app")
        new_w = Writer(run_dir / "new", dst.dsn("mastodon"), new_sys / "writer-new", table="writer_events_new",
                       rate=10, name="new-app")
        me = shlex.join([sys.executable, str(Path(__file__).resolve()), "serve"])

        def app_cmds(w: Writer, addr: str, port: int, name: str):
            pidfile = str(w.workdir / "http.pid")
            serve = f"{me} %s --pidfile {q(pidfile)} --addr {addr} --port {port} --name {name}"
            return {"start": f"{w.start_cmd} && {serve % 'start'}",
                    "stop": f"{serve % 'stop'} ; {w.stop_cmd}",
                    "status": f"{w.status_cmd} >/dev/null && {serve % 'status'}",
                    "pidfile": pidfile}

        old_app = app_cmds(old_w, a.address, port_a, "old")
        new_app = app_cmds(new_w, b.address, port_b, "new")

        def track_apps():
            for w, app in ((old_w, old_app), (new_w, new_app)):
                w.track()
                pid = _pid_of(app["pidfile"])
                if pid:
                    REGISTRY.record(pid, f"{w.name} http")

        def sh(cmd: str, check=True):
            return subprocess.run(["sh", "-c", cmd], check=check, capture_output=True, text=True, timeout=120)

        def close_apps():
            for app in (old_app, new_app):
                sh(app["stop"], check=False)
            old_w.close()
            new_w.close()

        stack.callback(close_apps)
        poller = Poller({"old": (a.address, port_a), "new": (b.address, port_b)})
        poller.start()
        stack.callback(poller.stopping.set)

        # -- the anchor: the seed's commands, in order, each one an ssh command typed by hand
        conf = str(H.cluster.ssh_config)  # the control machine's: for the ssh commands typed on it
        # the hosts share nothing: a's own key for b, as an admin would set up (not timed), for a's scp to b
        scp_opts, to_b = hand_made_scp(a, b), f"root@{b.address}:"
        a_root_dir, b_root_dir = a.root / "root", b.root / "root"
        dsn_src = f"host={src.sockdir} port={src.port} user=postgres dbname=mastodon_production"
        dst_opts = f"--host={q(str(dst.sockdir))} --port={dst.port} --username=postgres"
        url = f"http://m.example.social:{port_b}/health"
        steps_seed = [
            ("stop", "a", old_app["stop"]),
            ("pg_dump -Fc", "a", f"{PG_BIN}/pg_dump -Fc {q('--dbname=' + dsn_src)} -f {a_root_dir}/backup.dump"),
            ("tar czf", "a", f"tar czf {a_root_dir}/public-system.tar.gz -C {q(str(old_sys))} ."),
            ("scp", "a", f"scp -q {scp_opts} {a_root_dir}/backup.dump {a_root_dir}/public-system.tar.gz "
                         f"{to_b}{b_root_dir}/ && scp -q -p {scp_opts} {q(str(env_src))} {q(to_b + str(env_dst))}"),
            ("pg_restore", "b", f"{PG_BIN}/dropdb {dst_opts} mastodon && {PG_BIN}/createdb {dst_opts} mastodon && "
                                f"{PG_BIN}/pg_restore --no-owner {dst_opts} --dbname=mastodon {b_root_dir}/backup.dump"),
            ("tar xzf", "b", f"mkdir -p {q(str(new_sys))} && tar xzf {b_root_dir}/public-system.tar.gz -C {q(str(new_sys))}"),
            ("chown", "b", f"chown -R {owner} {q(str(new_sys))} && chown {owner} {q(str(env_dst))} && "
                           f"chmod 600 {q(str(env_dst))}"),
            ("start", "b", new_app["start"]),
        ]
        script = ["#!/bin/bash", "set -eu", 'step() { local name="$1" s=$EPOCHREALTIME; shift; "$@"; '
                  'echo "STEP $name $s $EPOCHREALTIME" >&2; }']
        for name, host, cmd in steps_seed:
            script.append(f"step {q(name)} ssh -F {q(conf)} {host} {q(cmd)}")
        script.append(f"step curl bash -c {q(f'until curl -fsS -o /dev/null --resolve m.example.social:{port_b}:{b.address} {url}; do sleep 1; done')}")
        seed_sh = H.base / "seed-by-hand.sh"
        seed_sh.write_text("\n".join(script) + "\n")

        # -- mdsl: plans/mastodon-ubuntu-to-nixos.plan on these hosts
        def pg_decl(name, host, pg, db, fresh=False):
            return (f'postgres {name} on {host} {{ database = "{db}"  user = "postgres"  socket = "{pg.sockdir}"  '
                    f'port = {pg.port}  bin = "{PG_BIN}"' + ("  fresh = true" if fresh else "") + " }")

        def svc_decl(name, host, app, writes, reads, initially=None):
            return "\n".join([
                f"service {name} on {host} {{", f"  start  = {plan_str(app['start'])}",
                f"  stop   = {plan_str(app['stop'])}", f"  status = {plan_str(app['status'])}",
                f"  writes = [{', '.join(writes)}]", f"  reads  = [{', '.join(reads)}]"]
                + ([f"  initially = {initially}"] if initially else []) + ["}"])

        decls = f'''{H.host_decl("a")}
{H.host_decl("b")}
{pg_decl("old_db", "a", src, "mastodon_production")}
{pg_decl("new_db", "b", dst, "mastodon", fresh=True)}
dir old_system on a {{ path = {plan_str(str(old_sys))} }}
dir new_system on b {{ path = {plan_str(str(new_sys))}  owner = "{owner}"@FRESH@ }}
file old_env on a {{ path = {plan_str(str(env_src))}  secret = true }}
file new_env on b {{ path = {plan_str(str(env_dst))}  owner = "{owner}"  mode = "0600"  secret = true }}
{svc_decl("old_app", "a", old_app, ["old_db", "old_system"], ["old_env"])}
{svc_decl("new_app", "b", new_app, ["new_db", "new_system"], ["new_env"], "stopped")}
'''
        ma, mb = f"{a_root_dir}/mdsl", f"{b_root_dir}/mdsl"
        plan_mdsl = H.base / "mastodon.plan"
        plan_mdsl.write_text(f'''plan "Mastodon: a -> b (bench)"
{decls.replace("@FRESH@", "")}
steps {{
  freeze: stop old_app
  parallel {{
    dump    old_db     to a:"{ma}/mastodon.dump"
    archive old_system to a:"{ma}/public-system.tar.zst"
  }}
  transfer a:"{ma}/mastodon.dump"         to b:"{mb}/mastodon.dump"
  transfer a:"{ma}/public-system.tar.zst" to b:"{mb}/public-system.tar.zst"
  transfer old_env to new_env
  restore b:"{mb}/mastodon.dump" into new_db replace jobs = 2
  extract b:"{mb}/public-system.tar.zst" into new_system
  cutover: start new_app
  verify http "{url}" via = b status = 200
}}
''')
        names_mdsl = {"1": "stop old_app", "2": "parallel", "2.1": "dump", "2.2": "archive (zstd)",
                      "3": "transfer dump", "4": "transfer archive", "5": "transfer env", "6": "restore (jobs 2)",
                      "7": "extract + chown", "8": "start new_app", "9": "verify http"}
        plan_live = H.base / "mastodon-live.plan"
        plan_live.write_text(f'''plan "Mastodon: a -> b, files pre-synced while the app runs (bench)"
# fresh: the live sync mirrors (rsync --delete); what new_system holds before is disposable
{decls.replace("@FRESH@", "  fresh = true")}
steps {{
  presync: sync old_system to new_system live
  freeze: stop old_app
  parallel {{
    dump old_db to a:"{ma}/mastodon.dump"
    sync old_system to new_system
  }}
  transfer a:"{ma}/mastodon.dump" to b:"{mb}/mastodon.dump"
  transfer old_env to new_env
  restore b:"{mb}/mastodon.dump" into new_db replace jobs = 2
  cutover: start new_app
  verify http "{url}" via = b status = 200
}}
''')
        names_live = {"1": "sync live (app running)", "2": "stop old_app", "3": "parallel", "3.1": "dump",
                      "3.2": "final sync", "4": "transfer dump", "5": "transfer env", "6": "restore (jobs 2)",
                      "7": "start new_app", "8": "verify http"}
        # Not in the default sides: the db chain and the files chain each in a lane of one parallel block
        plan_lanes = H.base / "mastodon-lanes.plan"
        plan_lanes.write_text(f'''plan "Mastodon: a -> b, database and files in two lanes (bench)"
{decls.replace("@FRESH@", "")}
steps {{
  freeze: stop old_app
  parallel {{
    sequence {{
      dump     old_db to a:"{ma}/mastodon.dump"
      transfer a:"{ma}/mastodon.dump" to b:"{mb}/mastodon.dump"
      restore  b:"{mb}/mastodon.dump" into new_db replace jobs = 2
    }}
    sequence {{
      archive  old_system to a:"{ma}/public-system.tar.zst"
      transfer a:"{ma}/public-system.tar.zst" to b:"{mb}/public-system.tar.zst"
      extract  b:"{mb}/public-system.tar.zst" into new_system
    }}
    transfer old_env to new_env
  }}
  cutover: start new_app
  verify http "{url}" via = b status = 200
}}
''')
        names_lanes = {"1": "stop old_app", "2.1.1": "dump", "2.1.2": "transfer dump", "2.1.3": "restore (jobs 2)",
                       "2.2.1": "archive (zstd)", "2.2.2": "transfer archive", "2.2.3": "extract + chown",
                       "2.3": "transfer env", "3": "start new_app", "4": "verify http"}
        for p in (plan_mdsl, plan_live, plan_lanes):
            c = subprocess.run([sys.executable, "-m", "mdsl", "check", str(p)], capture_output=True, text=True,
                               cwd=str(H.base))
            print(f"mdsl check {p.name}: exit {c.returncode}\n{c.stdout}{c.stderr}".rstrip(), flush=True)
            side = {plan_live: "mdsl-live", plan_lanes: "mdsl-lanes"}.get(p)
            if c.returncode != 0 and side in wanted:
                print(f"  {side}: its plan does not check: left out", flush=True)
                wanted.remove(side)

        # -- reset (not timed) and verification (not timed)
        hasher = TreeHasher()
        src_static = {}

        def reset():
            sh(new_app["stop"], check=False)
            dst.psql("drop database if exists mastodon;")
            dst.psql("create database mastodon template template0 encoding 'UTF8';")
            for p in (new_sys, env_dst, a_root_dir, b_root_dir):
                subprocess.run(["rm", "-rf", str(p)], check=True)
            for p in (env_dst.parent, a_root_dir, b_root_dir):
                p.mkdir(parents=True, exist_ok=True)
            sh(old_app["start"])
            track_apps()
            deadline = time.monotonic() + 20
            while not Poller.probe(a.address, port_a):
                if time.monotonic() > deadline:
                    raise RuntimeError("the old app does not answer")
                time.sleep(0.05)
            time.sleep(1.0)  # the app writes for a moment
            poller.clear()

        def verify() -> list:
            """What differs between the target and the source (empty when the copy is exact)."""
            track_apps()
            sh(new_app["stop"], check=False)
            bad = []
            if sh(old_app["status"], check=False).returncode == 0:
                bad.append("the old app still runs")
            if not src_static:
                src_static.update(table_sums(src, "mastodon_production", skip=("writer_events",)))
            want = dict(src_static, **table_sums(src, "mastodon_production", skip=tuple(src_static)))
            got = table_sums(dst, "mastodon", skip=("writer_events_new",))
            if got != want:
                bad.append(f"tables differ: {sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))}")
            if sequences(src, "mastodon_production") != sequences(dst, "mastodon", skip=("writer_events_new",)):
                bad.append("sequences differ")
            s = hasher.snapshot(old_sys, cached=True)
            d = hasher.snapshot(new_sys, skip_top=("writer-new",))
            if set(s) != set(d):
                bad.append(f"entries only in the source: {len(set(s) - set(d))}, only in the target: "
                           f"{len(set(d) - set(s))} (e.g. {sorted(set(s) ^ set(d))[:3]})")
            diff = [k for k in set(s) & set(d) if s[k][:2] != d[k][:2]]
            if diff:
                bad.append(f"{len(diff)} entries differ in content or mode (e.g. {sorted(diff)[:3]})")
            wrong_owner = [k for k, v in d.items() if (v[2], v[3]) != (uid, gid)]
            if wrong_owner:
                bad.append(f"{len(wrong_owner)} entries not owned by {owner} (e.g. {sorted(wrong_owner)[:3]})")
            if not env_dst.exists() or file_sha(env_dst) != file_sha(env_src):
                bad.append("env file missing or different")
            elif (env_dst.stat().st_mode & 0o777) != 0o600 or (env_dst.stat().st_uid, env_dst.stat().st_gid) != (uid, gid):
                bad.append(f"env file mode {oct(env_dst.stat().st_mode & 0o777)}, owner {env_dst.stat().st_uid}")
            return bad

        steps_seen = {}

        def finish(side: Side, secs: float, t0: float, steps: dict) -> float:
            deadline = time.monotonic() + 3  # the poller's next sample of the new app may be 50 ms away
            while (w := poller.window(t0)) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            tv = time.monotonic()
            bad = verify()
            print(f"  ({side.name}: verified in {time.monotonic() - tv:.0f}s)", flush=True)
            if w is None:
                bad.append("no downtime window seen (old app never went down or new never answered)")
            if bad:
                print(f"  {side.name}: the target is NOT the source: " + "; ".join(bad), flush=True)
                return float("nan")
            side.add("downtime", w[1] - w[0])
            for k, v in steps.items():
                steps_seen.setdefault(side.name, {}).setdefault(k, []).append(v)
            print(f"  {side.name}: verified; downtime {w[1] - w[0]:.1f}s; steps: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()), flush=True)
            return secs

        sizes = {}

        def seed(side: Side) -> float:
            t0 = time.monotonic()
            m = run_measured(["bash", str(seed_sh)])
            for what, f in (("dump", b_root_dir / "backup.dump"), ("archive", b_root_dir / "public-system.tar.gz")):
                if f.exists():
                    sizes.setdefault(side.name, {})[what] = f.stat().st_size
            if m.returncode != 0:
                print(f"  seed failed ({m.returncode}): {m.stderr[-2000:]}", flush=True)
                return float("nan")
            steps = {}
            for line in m.stderr.splitlines():
                if line.startswith("STEP "):
                    *name, s, e = line[5:].split(" ")
                    steps[" ".join(name)] = float(e) - float(s)
            return finish(side, m.seconds, t0, steps)

        def mdsl(plan, names):
            def run(side: Side) -> float:
                t0 = time.monotonic()
                try:
                    m = mdsl_apply(plan)
                except RuntimeError as exc:
                    print(f"  {side.name} failed: {str(exc)[-3000:]}", flush=True)
                    return float("nan")
                for what, f in (("dump", Path(mb) / "mastodon.dump"), ("archive", Path(mb) / "public-system.tar.zst")):
                    if f.exists():
                        sizes.setdefault(side.name, {})[what] = f.stat().st_size
                js = journal_steps(plan)
                steps = {names.get(k, k): v for k, v in js.items()}
                lanes, top = {}, {}
                for k, v in js.items():  # a lane (G.L.S) takes the sum of its steps
                    parts = k.split(".")
                    key = ".".join(parts[:2])
                    lanes[key] = lanes.get(key, 0.0) + v
                for k, v in lanes.items():  # a parallel group (G.M) as long as its longest member or lane
                    g = k.split(".")[0]
                    top[g] = max(top.get(g, 0.0), v)
                steps["outside steps (start, check, connect, preflight, journal)"] = m.seconds - sum(top.values())
                return finish(side, m.seconds, t0, steps)
            return run

        if args.check_verifier:  # a wrong copy must be caught: one mdsl run, then four kinds of damage
            reset()
            mdsl_apply(plan_mdsl)
            assert verify() == [], "a clean run does not verify"
            victim = next(new_sys.rglob("*.json"))
            data = bytearray(victim.read_bytes())
            data[0] ^= 1
            victim.write_bytes(data)
            os.chown(next(new_sys.rglob("*.mp4")), 0, 0)
            dst.psql("update statuses set text = text || ' ' where id = (select min(id) from statuses)", db="mastodon")
            env_dst.chmod(0o644)
            bad = verify()
            print("verifier on a damaged copy:\n  " + "\n  ".join(bad), flush=True)
            want = ("tables differ: ['statuses']", "1 entries differ in content", "1 entries not owned", "env file mode")
            assert all(any(w in b for b in bad) for w in want), bad
            print("verifier: every damage caught", flush=True)

        sides = {"seed": seed, "mdsl": mdsl(plan_mdsl, names_mdsl), "mdsl-live": mdsl(plan_live, names_live),
                 "mdsl-lanes": mdsl(plan_lanes, names_lanes)}
        sides = {k: v for k, v in sides.items() if k in wanted}
        print(f"{runs} round(s), sides {', '.join(sides)}; setup took {time.monotonic() - t_start:.0f}s; {load()}",
              flush=True)
        res = alternate(runs, sides, before=reset)
        end_load = load()

        # -- where mdsl's time goes inside its steps: the commands it compiles, each timed alone, once
        parts = []
        if args.breakdown:
            reset()
            sh(old_app["stop"])
            dsn_dst = f"host={dst.sockdir} port={dst.port} user=postgres dbname=mastodon"
            fd, fb, td, tb = f"{ma}/x.dump", f"{mb}/x.dump", f"{ma}/x.tar.zst", f"{mb}/x.tar.zst"
            zc, zd, pgr = "zstd -q -T0 -3 -c", "zstd -q -dc", f"{PG_BIN}/pg_restore"
            recreate = f"{PG_BIN}/dropdb {dst_opts} mastodon && {PG_BIN}/createdb {dst_opts} -T template0 mastodon"
            xdir = f"{b_root_dir}/x-extract"
            for d in (ma, mb):
                Path(d).mkdir(parents=True, exist_ok=True)
            cmds = [
                ("dump", "pg_dump -Fc -Z0 | zstd -T0 -3 > file", "a",
                 f"{PG_BIN}/pg_dump -w -Fc -Z0 {q('--dbname=' + dsn_src)} | {zc} > {fd}"),
                ("dump", "read-back: zstd -dc | pg_restore -f /dev/null", "a", f"{zd} < {fd} | {pgr} -f /dev/null"),
                ("archive", "tar -cf with zstd -T0 (the whole step)", "a",
                 f"tar --no-unquote -C {q(str(old_sys))} --use-compress-program='zstd -T0 -q' -cf {td} ."),
                ("transfer", "copy of the dump (scp, for the bytes alone)", "a",
                 f"scp -q {scp_opts} -c aes128-gcm@openssh.com {fd} {to_b}{fb}"),
                ("transfer", "copy of the archive (scp, for the bytes alone)", "a",
                 f"scp -q {scp_opts} -c aes128-gcm@openssh.com {td} {to_b}{tb}"),
                ("transfer", "sha256 of the archive on the target (openssl)", "b", f"openssl dgst -sha256 {tb}"),
                ("restore", "zstd -dc to a file (for pg_restore -j)", "b", f"{zd} < {fb} > {fb}.restore.part"),
                ("restore", "pg_restore -j 2 --clean --if-exists from that file", "b",
                 f"{recreate} && {pgr} -w --no-owner --role=postgres --clean --if-exists -j 2 "
                 f"{q('--dbname=' + dsn_dst)} -- {fb}.restore.part"),
                ("restore", "(for comparison: zstd -dc | pg_restore, serial, no file)", "b",
                 f"{recreate} && {zd} < {fb} | {pgr} -w --no-owner --role=postgres --clean --if-exists "
                 f"{q('--dbname=' + dsn_dst)}"),
                ("extract", "tar -xpf with zstd -d", "b",
                 f"mkdir -p {xdir} && tar --no-unquote -C {xdir} --use-compress-program='zstd -d' -xpf {tb}"),
                ("extract", "chown -R", "b", f"chown -R {owner} {xdir}"),
            ]
            print("breakdown (each command alone, once):", flush=True)
            for step, what, host, cmd in cmds:
                m = run_measured(H.ssh_base(host) + [cmd])
                if m.returncode != 0:
                    print(f"  {what}: failed {m.stderr[-500:]}", flush=True)
                    continue
                parts.append((step, what, m.seconds))
                print(f"  {step}: {what}: {m.seconds:.1f}s", flush=True)
        n_files_end = sum(1 for _ in old_sys.rglob("*") if _.is_file())

    # -- figures
    s = res.get("seed")
    rows = []
    for x in res.values():
        rows.append([f"`{x.name}`", f"{x.med:.1f}", ", ".join(f"{v:.1f}" for v in x.seconds),
                     f"{x.med_of('downtime'):.1f}", ", ".join(f"{v:.1f}" for v in x.extra.get("downtime", [])),
                     f"{x.med / s.med:.2f}" if s and s.ok else "", f"{x.med_of('downtime') / s.med_of('downtime'):.2f}"
                     if s and s.ok else ""])
    lines = [
        f"Database `mastodon_production` {db_bytes / MiB:.0f} MiB on disk ("
        + ", ".join(f"{n:,} {t}" for t, n in sorted(counts.items(), key=lambda x: -x[1]))
        + f"; indexes; made by {generator}); public/system {n_files} files, "
        f"{tree_bytes / MiB:.0f} MiB at the start ({n_files_end} files at the end: the old app writes while it runs); "
        f"a secret env file. Median of {runs} alternating round(s); every run's copy verified (row counts and "
        f"row checksums of every table, sequences, every file's sha256, mode and owner, the env file). "
        f"{machine()}; {end_load} at the end.", "",
        table(["way", "median s", "runs (s)", "downtime s", "downtime runs (s)", "time / seed", "downtime / seed"],
              rows), ""]
    if s and s.ok and "mdsl" in res and res["mdsl"].ok:
        lines.append(f"- ratio mdsl / seed, whole migration: **{res['mdsl'].med / s.med:.2f}** (target <= 0.5)")
    if s and s.ok and "mdsl-live" in res and res["mdsl-live"].ok:
        lines.append(f"- downtime window with the live pre-sync: **{res['mdsl-live'].med_of('downtime'):.1f} s** "
                     f"against {s.med_of('downtime'):.1f} s by hand and {res['mdsl'].med_of('downtime'):.1f} s "
                     "with mdsl's archive plan" if "mdsl" in res else "")
    fails = {k: v.failures for k, v in res.items() if v.failures}
    if fails:
        lines.append(f"- failed or unverified runs (not counted): {fails}")
    lines += ["", "Where the time goes (median seconds per step; mdsl's from its journal):", ""]
    for name, st in steps_seen.items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k} {median(v):.1f}" for k, v in st.items()))
    if sizes:
        lines += ["", "Artifacts: " + "; ".join(f"`{k}` " + ", ".join(f"{w} {n / MiB:.0f} MiB" for w, n in v.items())
                                                for k, v in sizes.items()) + "."]
    if parts:
        lines += ["", "Inside mdsl's steps (the commands it compiles, each run alone once after the rounds, "
                  "with the app stopped):", ""]
        lines += [f"- {step}: {what}" + (f": {secs:.1f} s" if step != "sizes" else "") for step, what, secs in parts]
    text = "\n".join(lines)
    print()
    print(text)
    if args.write_docs:
        write_doc_block("migration", f"`{command_line()}`\n\n" + text)
    ok = s is not None and "mdsl" in res and s.ok and res["mdsl"].ok and res["mdsl"].med <= 0.5 * s.med
    return 0 if ok else 1


def _free_port(addr: str) -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
