"""Target 4: dump + copy + restore of a PostgreSQL database, mdsl's way against the seed's.

    python3 bench/database.py                # ~1.1 GB of Mastodon-like rows, 2 rounds of 6 ways (~10 minutes)
    python3 bench/database.py --quick        # ~190 MB, 1 round, seed and mdsl's default only
    python3 bench/database.py --ways all     # also `format = directory jobs = 2` with pg_dump's gzip (slow)
    python3 bench/database.py --pgbench 100  # pgbench's data instead (its filler compresses ~50x)
    python3 bench/database.py --write-docs   # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a) and .3 (b), and two PostgreSQL 15
clusters made with initdb (tests/e2e/hosts.py): the source, reached from a, and
an empty target, reached from b, both over their unix sockets as `postgres`.
The source is filled inside the cluster with generate_series, random() and
md5 (no row goes through Python): Mastodon-like accounts, statuses,
favourites and media_attachments with their indexes; status text is HTML of
Zipf-distributed words, mentions and links, accounts carry base64 public keys,
media jsonb metadata, so it compresses like real data (about 3.7x) and not
like pgbench's blank filler. Before each run the target database is dropped
and created empty and the dump files are removed (not timed). Each round, in
turn (the order rotates):

  seed            pg_dump -Fc (its gzip) on a; scp a -> b; pg_restore (serial) on b
  mdsl-default    `mdsl apply` of dump, transfer, restore replace with mdsl's defaults:
                  check, connect, preflight, journal, the dump's read-back and the
                  stream copy's sha256 on both ends all included
  the others      the same plan with other options, to justify the default

and then, once each (full mode), pg_dump on a alone into other compressions,
to choose the level.

It prints the times (and each way's dump / copy / restore split, from the
journal), the ratio to the seed and the dump sizes; after each mdsl run the
target's row counts are compared with the source's, and after the last run
of each mdsl way every table's checksum (count and the sum of every row's
md5) and the list of indexes too. Exits 1 when mdsl's default is not faster
than the seed.

Both clusters, both sshd and the control machine share this machine's CPUs:
a parallel restore competes with nothing on a real target, so pg_restore -j
pays more there than here.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, Tuple

from _common import (
    MiB, BenchHosts, Side, add_runs, alternate, bench_parser, bench_start, hand_made_scp, journal_seconds, load,
    machine, mdsl_apply, parse_bench_args, report, table, timed,
)
from hosts import PG_BIN

# (dump options, restore options, file name) of each mdsl way, after `dump DB to LOC` / `restore LOC into DB replace`
WAYS: Dict[str, Tuple[str, str, str]] = {
    "mdsl-default": ("", "", "db.dump"),
    "zstd, serial restore": ("", " jobs = 1", "db.dump"),
    "gzip, restore -j 2": (" compress = gzip", "", "db.dump"),
    "gzip, serial restore": (" compress = gzip", " jobs = 1", "db.dump"),
    "-Z0, restore -j 2": (" compress = none", "", "db.dump"),
    "directory -j 2 -Z0, restore -j 2": (" format = directory jobs = 2 compress = none", "", "db.dir"),
    "directory -j 2 gzip, restore -j 2": (" format = directory jobs = 2", "", "db.dir"),
}
DEFAULT_WAYS = ["mdsl-default", "zstd, serial restore", "gzip, restore -j 2", "-Z0, restore -j 2",
                "directory -j 2 -Z0, restore -j 2"]
EXPLAIN = {
    "mdsl-default": "`pg_dump -Fc -Z0 \\| zstd -T0 -3`, read back through zstd; stream copy; "
                    "`zstd -dc` to a file, `pg_restore -j 2`",
    "zstd, serial restore": "the same dump; `zstd -dc \\| pg_restore` (what a `run_as` target gets)",
    "gzip, restore -j 2": "`pg_dump -Fc` (gzip level 6, in pg_dump's one process); `pg_restore -j 2`",
    "gzip, serial restore": "the seed's dump and restore with mdsl's read-back and copy (mdsl's old default)",
    "-Z0, restore -j 2": "`pg_dump -Fc -Z0`: nothing compressed, 3-4x the bytes to copy",
    "directory -j 2 -Z0, restore -j 2": "`pg_dump -Fd -j 2 -Z0`, copied as a tar stream",
    "directory -j 2 gzip, restore -j 2": "`pg_dump -Fd -j 2`: one job per table, and one table is most of the data",
}

# pg_dump alone into other compressions (DSN and OUT replaced): how the level was chosen.
LEVELS = [
    ("pg_dump's gzip, level 1 (`-Z1`)", "-Fc -Z1 -f OUT DSN"),
    ("none (`-Z0`)", "-Fc -Z0 -f OUT DSN"),
    ("`-Z0 \\| zstd -T0 -1`", "-Fc -Z0 DSN | zstd -q -T0 -1 -c > OUT"),
    ("`-Z0 \\| zstd -T0 -3` (mdsl's default)", "-Fc -Z0 DSN | zstd -q -T0 -3 -c > OUT"),
    ("`-Z0 \\| zstd -T0 -6`", "-Fc -Z0 DSN | zstd -q -T0 -6 -c > OUT"),
]

# Mastodon-like tables. Run in three parts: `setup` (one session), then `load_a` and `load_b` in two
# sessions at once (each fills half of statuses), then `finish` (indexes, analyze) in one session.
SETUP_SQL = r"""
set timezone = 'UTC';
create table bench_vocab (w text[]);
alter table bench_vocab alter w set storage plain;  -- not compressed: read per word, it must not be detoasted
insert into bench_vocab select array[
 'the','of','and','to','a','in','is','it','you','that','he','was','for','on','are','with','as','I','his','they',
 'be','at','one','have','this','from','or','had','by','not','word','but','what','some','we','can','out','other','were','all',
 'there','when','up','use','your','how','said','an','each','she','which','do','their','time','if','will','way','about','many',
 'then','them','write','would','like','so','these','her','long','make','thing','see','him','two','has','look','more','day','could',
 'go','come','did','number','sound','no','most','people','my','over','know','water','than','call','first','who','may','down',
 'side','been','now','find','any','new','work','part','take','get','place','made','live','where','after','back','little','only',
 'round','man','year','came','show','every','good','me','give','our','under','name','very','through','just','form','sentence','great',
 'think','say','help','low','line','differ','turn','cause','much','mean','before','move','right','boy','old','too','same','tell',
 'does','set','three','want','air','well','also','play','small','end','put','home','read','hand','port','large','spell','add',
 'even','land','here','must','big','high','such','follow','act','why','ask','men','change','went','light','kind','off','need',
 'house','picture','try','us','again','animal','point','mother','world','near','build','self','earth','father','head','stand','own','page',
 'should','country','found','answer','school','grow','study','still','learn','plant','cover','food','sun','four','between','state','keep','eye',
 'never','last','let','thought','city','tree','cross','farm','hard','start','might','story','saw','far','sea','draw','left','late',
 'run','don''t','while','press','close','night','real','life','few','north','open','seem','together','next','white','children','begin','got',
 'walk','example','ease','paper','group','always','music','those','both','mark','often','letter','until','mile','river','car','feet','care',
 'fediverse','toot','boost','server','instance','federation','timeline','mastodon','birdsite','moderation','admin','followers','hashtag','cat','coffee',
 'Linux','Rust','Python','postgres','migration','backup','nginx','docker','kubernetes','weekend','morning','today','tonight','really','thanks',
 'lol','yes','#caturday','#photography','#introduction','#nixos','#selfhosted','#fediverse','🙂','😂','❤️','🎉','👍','…','!','?'
]::text[];
create table bench_domains (d text[]);
alter table bench_domains alter d set storage plain;
insert into bench_domains select array(select 'inst' || i || case i % 5 when 0 then '.social' when 1 then '.online'
  when 2 then '.xyz' when 3 then '.cloud' else '.net' end from generate_series(1, 400) i);

create table accounts (
  id bigint primary key, username text not null, domain text, display_name text not null default '',
  note text not null default '', uri text not null default '', url text, avatar_remote_url text,
  public_key text not null default '', fields jsonb, discoverable boolean, locked boolean not null default false,
  followers_count int not null default 0, statuses_count int not null default 0,
  created_at timestamp not null, updated_at timestamp not null, last_webfingered_at timestamp);
create table statuses (
  id bigint primary key, uri text, text text not null default '', created_at timestamp not null,
  updated_at timestamp not null, in_reply_to_id bigint, reblog_of_id bigint, url text, sensitive boolean not null default false,
  visibility int not null default 0, spoiler_text text not null default '', reply boolean not null default false,
  language varchar, conversation_id bigint, local boolean, account_id bigint not null,
  application_id bigint, in_reply_to_account_id bigint, poll_id bigint, deleted_at timestamp, edited_at timestamp,
  trendable boolean, ordered_media_attachment_ids bigint[]);
create table favourites (id bigint primary key, created_at timestamp not null, updated_at timestamp not null,
  account_id bigint not null, status_id bigint not null);
create table media_attachments (id bigint primary key, status_id bigint, file_file_name varchar, file_content_type varchar,
  file_file_size int, created_at timestamp not null, updated_at timestamp not null, shortcode varchar, type int not null default 0,
  file_meta json, account_id bigint, remote_url varchar not null default '', description text, blurhash varchar);
"""

# :lo and :hi bound the statuses this session writes.
STATUSES_SQL = r"""
set timezone = 'UTC';
insert into statuses
select id, 'https://' || coalesce(dom, 'example.social') || '/users/user' || acct || '/statuses/' || id,
  case when boost then '' else '<p>' || (select string_agg(
      case when random() < 0.03 then '<span class="h-card"><a href="https://'
               || (select d[1 + (random() * 399)::int + 0 * g] from bench_domains)
               || '/@user' || (g * 7919 + id) % 100000 || '" class="u-url mention">@<span>user'
               || (g * 7919 + id) % 100000 || '</span></a></span>'
           when random() < 0.02 then '<a href="https://' || (select d[1 + (random() * 399)::int + 0 * g] from bench_domains)
               || '/' || substr(md5(random()::text), 1, 10) || '" rel="nofollow noopener noreferrer" target="_blank">'
               || substr(md5(random()::text), 1, 10) || '</a>'
           else v.w[1 + floor(power(random(), 2) * array_length(v.w, 1))::int + 0 * g] end, ' ')
    from generate_series(1, 1 + (power(r1, 1.5) * 80)::int) g) || '</p>' end,
  ts, ts + case when r2 < 0.1 then interval '5 minutes' else interval '0' end,
  case when r2 < 0.15 then id - 1 - (r1 * 1000)::bigint end,
  case when boost then id - 100 - (r2 * 100000)::bigint end,
  case when dom is not null and not boost then 'https://' || dom || '/@user' || acct || '/' || id end,
  r1 < 0.03, (r2 * 4)::int % 4, case when r1 < 0.05 then 'cw: ' || v.w[1 + (r2 * 200)::int] else '' end,
  r2 < 0.15, (array['en', 'en', 'en', 'de', 'fr', 'ja', 'es', null])[1 + (r1 * 7)::int],
  id / 3 - (r2 * 1000)::bigint, dom is null, acct, case when dom is null then 1 + (r1 * 5)::int end,
  case when r2 < 0.15 then 1 + (r1 * :accounts)::int % :accounts end, null, null,
  case when r1 < 0.02 then ts + interval '1 hour' end, r2 > 0.5,
  case when r1 < 0.1 then array[id * 2, id * 2 + 1] end
from (select 100000000000000000 + i::bigint * 65536 * 997 + (i % 65536) as id, i, random() r1, random() r2,
             random() < 0.2 as boost, 1 + (power(random(), 3) * (:accounts - 1))::int as acct,
             timestamp '2019-01-01' + i * interval '43 seconds' as ts,
             case when i % 3 <> 0 then (select d[1 + (i * 11) % 400] from bench_domains) end as dom
      from generate_series(:lo, :hi) i) s, bench_vocab v;
"""

ACCOUNTS_SQL = r"""
set timezone = 'UTC';
insert into accounts
select i, u, dom, initcap(u) || case when r1 < 0.3 then ' ' || v.w[1 + (r2 * 300)::int] else '' end,
  case when r1 < 0.8 then '<p>' || (select string_agg(v.w[1 + floor(power(random(), 2) * array_length(v.w, 1))::int + 0 * g], ' ')
                                 from generate_series(1, 3 + (r2 * 40)::int) g) || '</p>' else '' end,
  'https://' || coalesce(dom, 'example.social') || '/users/' || u,
  'https://' || coalesce(dom, 'example.social') || '/@' || u,
  case when dom is not null then 'https://' || dom || '/system/accounts/avatars/' || substr(md5(i::text), 1, 18)
                                 || '/original/' || md5(u) || '.png' end,
  case when dom is not null then E'-----BEGIN PUBLIC KEY-----\n' || encode(sha512(u::bytea) || sha512(dom::bytea)
       || sha512((u || dom)::bytea) || sha512(md5(u)::bytea), 'base64') || E'\n-----END PUBLIC KEY-----\n' else '' end,
  case when r1 < 0.4 then jsonb_build_array(jsonb_build_object('name', 'Website', 'value', '<a href="https://' || u
       || '.example">' || u || '.example</a>', 'verified_at', null)) end,
  r2 < 0.5, r1 < 0.05, (power(r2, 4) * 20000)::int, (power(r1, 3) * 30000)::int,
  timestamp '2017-04-01' + (i * interval '19 minutes'), timestamp '2023-01-01' + r1 * interval '500 days',
  case when dom is not null then timestamp '2024-01-01' + r2 * interval '100 days' end
from (select i, random() r1, random() r2, 'user' || i || '_' || substr(md5(i::text), 1, (i % 6)) as u,
        case when i % 4 <> 0 then (select d[1 + (i * 7) % 400] from bench_domains) end as dom
      from generate_series(1, :accounts) i) s, bench_vocab v;
"""

REST_SQL = r"""
set timezone = 'UTC';
insert into favourites
select i, ts, ts, 1 + i % :accounts, 100000000000000000
  + (1 + ((i / :accounts) * (:statuses / (:favourites / :accounts + 1)) + (i % :accounts) * 7) % :statuses)::bigint * 65536 * 997
from (select i, timestamp '2019-01-01' + i * interval '20 seconds' ts from generate_series(1, :favourites) i) s;
insert into media_attachments
select i, 100000000000000000 + (1 + (random() * (:statuses - 1))::bigint) * 65536 * 997, md5(i::text) || '.jpg',
  (array['image/jpeg', 'image/png', 'video/mp4', 'image/webp'])[1 + (i % 4)], (random() * 4000000)::int, ts, ts,
  substr(md5('s' || i), 1, 20), i % 4 % 3,
  json_build_object('original', json_build_object('width', w, 'height', h, 'size', w || 'x' || h, 'aspect', round(w::numeric / h, 6)),
                    'small', json_build_object('width', w / 3, 'height', h / 3, 'size', w / 3 || 'x' || h / 3,
                                               'aspect', round(w::numeric / h, 6)),
                    'focus', json_build_object('x', 0.0, 'y', 0.0)),
  1 + (random() * (:accounts - 1))::int,
  'https://files.inst' || (i % 400) || '.social/media_attachments/files/' || substr(md5(i::text), 1, 3) || '/'
    || substr(md5(i::text), 4, 3) || '/original/' || md5('r' || i) || '.jpg',
  case when random() < 0.4 then 'A photo of ' || (array['a cat', 'the sea', 'a mountain', 'my desk', 'a screenshot of code',
                                                          'a dog', 'food'])[1 + (random() * 6)::int] end,
  substr(encode(sha256(i::text::bytea), 'base64'), 1, 28)
from (select i, timestamp '2019-01-01' + i * interval '3 minutes' ts, 200 + (random() * 3800)::int w,
             200 + (random() * 3000)::int h from generate_series(1, :media) i) s;
"""

FINISH_SQL = r"""
set maintenance_work_mem = '256MB';
drop table bench_vocab, bench_domains;
create unique index index_accounts_on_username_and_domain_lower on accounts (lower(username), coalesce(lower(domain), ''));
create index index_accounts_on_uri on accounts (uri);
create index index_accounts_on_domain_and_id on accounts (domain, id);
create index index_statuses_on_account_id_id on statuses (account_id, id desc);
create unique index index_statuses_on_uri on statuses (uri);
create index index_statuses_on_in_reply_to_id on statuses (in_reply_to_id) where in_reply_to_id is not null;
create index index_statuses_on_reblog_of_id_and_account_id on statuses (reblog_of_id, account_id);
create index index_statuses_local_20190824 on statuses (id desc, account_id) where (local or uri is null) and deleted_at is null;
create unique index index_favourites_on_account_id_and_status_id on favourites (account_id, status_id);
create index index_favourites_on_status_id on favourites (status_id);
create index index_media_attachments_on_status_id on media_attachments (status_id);
create index index_media_attachments_on_account_id_and_status_id on media_attachments (account_id, status_id);
create unique index index_media_attachments_on_shortcode on media_attachments (shortcode) include (id);
analyze;
checkpoint;
"""


def psql_script(pg, db: str, sql: str, variables: Dict[str, int]) -> subprocess.Popen:
    """psql running `sql` (ON_ERROR_STOP, `:name` variables set) in the background."""
    script = "".join(f"\\set {k} {v}\n" for k, v in variables.items()) + sql
    p = subprocess.Popen([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(pg.sockdir),
                          "-p", str(pg.port), "-U", "postgres", "-d", db, "-f", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PGPASSFILE": "/dev/null"})
    p.stdin.write(script)
    p.stdin.close()
    return p


def wait_ok(*procs: subprocess.Popen) -> None:
    for p in procs:
        err = p.stderr.read()
        if p.wait() != 0:
            raise RuntimeError(f"psql failed: {err}")


def load_mastodon(pg, db: str, statuses: int) -> None:
    """Fill `db` with Mastodon-like rows inside the cluster: two sessions at once, then the indexes."""
    v = {"statuses": statuses, "accounts": max(statuses // 15, 100), "favourites": statuses * 4 // 3,
         "media": max(statuses * 2 // 15, 10)}
    wait_ok(psql_script(pg, db, SETUP_SQL, v))
    half = statuses // 2
    one = psql_script(pg, db, STATUSES_SQL + ACCOUNTS_SQL, {**v, "lo": 1, "hi": half})
    two = psql_script(pg, db, STATUSES_SQL + REST_SQL, {**v, "lo": half + 1, "hi": statuses})
    wait_ok(one, two)
    wait_ok(psql_script(pg, db, FINISH_SQL, v))


def checksums(pg, db: str) -> Dict[str, str]:
    """Per public table: rows and the sum of every row's md5 (order-free), and the index definitions."""
    tables = pg.tables(db)
    parts = [f"select '{t}', count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) "
             f"from public.{t} t" for t in tables]
    out = pg.psql("set timezone = 'UTC'; set datestyle = 'ISO, YMD';\n" + "\nunion all\n".join(parts) + ";", db=db)
    sums = {line.split("|")[0]: line.split("|", 1)[1] for line in out.splitlines()}
    sums["indexes"] = pg.psql("select string_agg(indexdef, '; ' order by indexname) from pg_indexes "
                              "where schemaname = 'public'", db=db)
    return sums


def main() -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--statuses", type=int, default=None, help="statuses rows (default 1,150,000: ~1.1 GB; "
                    "200,000 with --quick); accounts, favourites and media scale with it")
    ap.add_argument("--pgbench", type=int, metavar="SCALE", help="load `pgbench -i -s SCALE` instead")
    add_runs(ap)
    ap.add_argument("--ways", default=None, help="comma-separated mdsl ways besides the seed, or `all` "
                    f"(default: {', '.join(DEFAULT_WAYS)}; with --quick mdsl-default only). Known: {', '.join(WAYS)}")
    ap.add_argument("--levels", action=argparse.BooleanOptionalAction, default=None,
                    help="also time pg_dump alone into other compressions (default: on, off with --quick)")
    args = parse_bench_args(ap)
    statuses = args.statuses or (200_000 if args.quick else 1_150_000)
    runs = args.runs
    ways = (list(WAYS) if args.ways == "all" else args.ways.split(",") if args.ways
            else ["mdsl-default"] if args.quick else DEFAULT_WAYS)
    unknown = [w for w in ways if w not in WAYS]
    if unknown or "mdsl-default" not in ways:
        ap.error(f"unknown ways {unknown} (mdsl-default is always measured)" if unknown else "mdsl-default is needed")
    q = shlex.quote
    started = bench_start()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src, dst = H.postgres("source"), H.postgres("target")
        src.psql("create database bench;")
        t0 = time.perf_counter()
        if args.pgbench:
            what = f"pgbench scale {args.pgbench}"
            subprocess.run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(args.pgbench), "-h", str(src.sockdir),
                            "-p", str(src.port), "-U", "postgres", "bench"], check=True, capture_output=True)
        else:
            what = f"Mastodon-like rows ({statuses:,} statuses)"
            load_mastodon(src, "bench", statuses)
        db_bytes = int(src.psql("select pg_database_size('bench')", db="bench"))
        print(f"loaded {what}: {db_bytes / MiB:.0f} MiB in {time.perf_counter() - t0:.0f} s; {load()}", flush=True)
        want_counts = src.row_counts("bench")
        want_sums = checksums(src, "bench")

        def pg_decl(name, host, pg, db, fresh=False):
            return (f'postgres {name} on {host} {{ database = "{db}"  user = "postgres"  socket = "{pg.sockdir}"  '
                    f'port = {pg.port}  bin = "{PG_BIN}"' + ("  fresh = true" if fresh else "") + " }")

        def plan_for(i, dump_opts, restore_opts, path):
            p = H.base / f"way{i}.plan"
            p.write_text(f'''plan "database bench"
{H.host_decl("a")}
{H.host_decl("b")}
{pg_decl("old_db", "a", src, "bench")}
{pg_decl("new_db", "b", dst, "bench_new", fresh=True)}
steps {{
  dump old_db to a:"{a.root}/{path}"{dump_opts}
  transfer a:"{a.root}/{path}" to b:"{b.root}/{path}"
  restore b:"{b.root}/{path}" into new_db replace{restore_opts}
}}
''')
            return p

        plans = {w: plan_for(i, *WAYS[w]) for i, w in enumerate(ways)}
        sizes: Dict[str, int] = {}
        checked = set()
        dsn_src = f"host={src.sockdir} port={src.port} user=postgres dbname=bench"
        dsn_dst = f"host={dst.sockdir} port={dst.port} user=postgres dbname=bench_new"
        # the hosts share nothing: a's own key for b, as an admin would set up (not timed)
        scp_opts = hand_made_scp(a, b)

        def clean():
            subprocess.run(f"rm -rf {q(str(a.root))}/db.* {q(str(b.root))}/db.*", shell=True, check=True)
            dst.psql("drop database if exists bench_new;")
            dst.psql("create database bench_new template template0;")

        def seed(side: Side) -> float:
            dump_a, dump_b = f"{a.root}/db.dump", f"{b.root}/db.dump"
            t1 = timed(H.ssh_base("a") + [f"{PG_BIN}/pg_dump -Fc -f {q(dump_a)} {q('--dbname=' + dsn_src)}"])
            sizes["seed"] = os.path.getsize(dump_a)
            t2 = timed(H.ssh_base("a") + [f"scp -q {scp_opts} {q(dump_a)} {q(f'root@{b.address}:{dump_b}')}"])
            t3 = timed(H.ssh_base("b") + [f"{PG_BIN}/pg_restore --no-owner --clean --if-exists "
                                          f"{q('--dbname=' + dsn_dst)} {q(dump_b)}"])
            for k, v in (("dump", t1), ("copy", t2), ("restore", t3)):
                side.add(k, v)
            got = dst.row_counts("bench_new")
            assert got == want_counts, ("seed", got, want_counts)
            return t1 + t2 + t3

        def mdsl(name):
            def run(side: Side) -> float:
                m = mdsl_apply(plans[name])
                for k, v in journal_seconds(plans[name]).items():
                    side.add(k, v)
                out = subprocess.run(["du", "-sb", *(str(p) for p in b.root.glob("db.*") if p.suffix != ".part")],
                                     capture_output=True, text=True).stdout.split()
                sizes[name] = int(out[0]) if out else 0
                got = dst.row_counts("bench_new")
                assert got == want_counts, (name, got, want_counts)
                if len(side.seconds) == runs - 1:  # its last run: every row and index, not just counts
                    sums = checksums(dst, "bench_new")
                    assert sums == want_sums, (name, sums, want_sums)
                    checked.add(name)
                return m.seconds
            return run

        print(f"{runs} round(s) of {1 + len(ways)} ways; database {db_bytes / MiB:.0f} MiB; {load()}", flush=True)
        sides = {"seed": seed, **{w: mdsl(w) for w in ways}}
        res = alternate(runs, sides, before=clean)
        levels = []
        if args.levels if args.levels is not None else not args.quick:
            print(f"pg_dump alone, once each; {load()}", flush=True)
            out_a = f"{a.root}/db.level"
            for name, pipe in LEVELS:
                cmd = f"{PG_BIN}/pg_dump {pipe.replace('DSN', q('--dbname=' + dsn_src))}".replace("OUT", q(out_a))
                secs = timed(H.ssh_base("a") + [cmd])
                levels.append((name, secs, os.path.getsize(out_a)))
                os.unlink(out_a)
                print(f"  {name}: {secs:.1f}s {levels[-1][2] / MiB:.0f} MiB   ({load()})", flush=True)
        end_load = load()

    s, d = res["seed"], res["mdsl-default"]
    rows = []
    for x in res.values():
        rows.append([f"`{x.name}`" if x.name in ("seed", "mdsl-default") else x.name,
                     EXPLAIN.get(x.name, "`pg_dump -Fc`; scp; `pg_restore` (serial)"),
                     f"**{x.med:.1f}**" if x.name == "mdsl-default" else f"{x.med:.1f}",
                     x.runs_text(), x.parts_text(), f"{sizes[x.name] / MiB:.0f} MiB",
                     f"{x.med / s.med:.2f}"])
    text = "\n".join([
        f"{what}, {db_bytes / MiB:.0f} MiB on disk with its indexes; dump on a, copy a -> b, restore on b; "
        f"median of {runs} alternating round(s). {machine()}; {end_load} at the end; "
        f"{(time.perf_counter() - started) / 60:.1f} minutes in all.", "",
        table(["way", "what", "median s", "runs (s)", "dump / copy / restore s", "dump size", "time / seed"], rows,
              align="llrrrrr"), "",
        f"- ratio mdsl's default / seed: **{d.med / s.med:.2f}** ({d.med:.1f} s vs {s.med:.1f} s; target < 1.0)",
        f"- the restored database equals the source: row counts after every run; every table's checksum "
        f"(count, sum of the rows' md5) and every index definition after the last run of "
        f"{'; '.join(sorted(checked))}",
        "- the mdsl ways include `mdsl apply`'s own cost (check, connect, preflight, journal), the dump's "
        "read-back and the copy's sha256 on both ends; the seed's parts are timed alone",
    ])
    if levels:
        seed_dump = s.med_of("dump")
        lrows = [["pg_dump's gzip, level 6 (the seed's `-Fc`)", f"{seed_dump:.1f} (the seed's median above)",
                  f"{sizes['seed'] / MiB:.0f} MiB"]]
        lrows += [[name, f"{secs:.1f}", f"{size / MiB:.0f} MiB"] for name, secs, size in levels]
        text += "\n\n" + "\n".join([
            "pg_dump on a alone (no read-back, no copy), into other compressions, one run each after the rounds:", "",
            table(["compression", "dump s", "size"], lrows)])
    report("database", text, args.write_docs)
    return 0 if d.med < s.med else 1


if __name__ == "__main__":
    sys.exit(main())
