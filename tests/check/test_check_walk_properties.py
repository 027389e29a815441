"""Random plans over a fixed set of declarations: the walk never crashes, reports only
catalogued codes at places inside the plan, and is deterministic."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsl.check import catalog
from check_helpers import findings_of

DECLS = '''plan "random"
host a { ssh = "root@a.example" }
host b { ssh = "root@b.example" }
postgres db_a on a { database = "x" }
postgres db_b on b { database = "x"  fresh = true }
sqlite lite on a { path = "/srv/lite.db" }
dir files_a on a { path = "/srv/files"  owner = "u:u"  derived "cache" rebuild "rebuild-cache" }
dir files_b on b { path = "/srv/files" }
file env_a on a { path = "/srv/env"  secret = true }
file env_b on b { path = "/srv/env" }
service app_a on a { systemd = ["app", "app.timer"]  writes = [db_a, files_a]  reads = [env_a] }
service app_b on b { systemd = ["app"]  writes = [db_b, files_b]  initially = stopped }
service agent on a { start = "agent start"  stop = "agent stop" }
'''

HOSTS = ["a", "b"]
PATHS = ['"/root/x.dump"', '"/root/y.tar"', '"/srv/files/cache"', '"/srv/files"', '"/srv"', '"/srv/files/media/1"',
         '"/srv/env"', '"/srv/lite.db"']
loc = st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(HOSTS), st.sampled_from(PATHS))
target = st.one_of(loc, st.sampled_from(["env_a", "env_b"]))
db = st.sampled_from(["db_a", "db_b", "lite"])
dirs = st.sampled_from(["files_a", "files_b"])
svc = st.sampled_from(["app_a", "app_b", "agent"])
host = st.sampled_from(HOSTS)

simple = st.one_of(
    st.builds(lambda s: f"stop {s}", svc),
    st.builds(lambda s: f"start {s}", svc),
    st.builds(lambda s: f"restart {s}", svc),
    st.builds(lambda d, t, o: f"dump {d} to {t} {o}", db, loc,
              st.sampled_from(["", "format = plain", "format = directory jobs = 2", "jobs = 2"])),
    st.builds(lambda t, d, o: f"restore {t} into {d} {o}", loc, db, st.sampled_from(["", "replace", "jobs = 2"])),
    st.builds(lambda d, t, o: f"archive {d} to {t} {o}", dirs, loc,
              st.sampled_from(["", 'exclude "cache"', 'exclude "media", "cache/tmp"'])),
    st.builds(lambda t, d, o: f"extract {t} into {d} {o}", loc, dirs, st.sampled_from(["", "replace"])),
    st.builds(lambda s, d, o: f"sync {s} to {d} {o}", st.just("files_a"), st.just("files_b"),
              st.sampled_from(["", 'exclude "cache"'])),
    st.builds(lambda s, d, o: f"transfer {s} to {d} {o}", target, target, st.sampled_from(["", "verify = false"])),
    st.builds(lambda h, p, q: f"move {h}:{p} to {h}:{q}", host, st.sampled_from(PATHS), st.sampled_from(PATHS)),
    st.builds(lambda t: f"delete {t}", target),
    st.builds(lambda d: f"drop {d}", db),
    st.builds(lambda h, c, o: f'run {h} "{c}" {o}', host,
              st.sampled_from(["rm -rf /srv/files", "rebuild-cache --all", "du /srv/files", "true"]),
              st.sampled_from(["", "deletes = [files_a]", "writes = [files_b]", "reads = [db_a]"])),
    st.builds(lambda o: f'verify http "https://x/" {o}', st.sampled_from(["", "via = a", "via = b"])),
    st.builds(lambda h: f'verify dns "x" is {h}', host),
    st.builds(lambda h: f'verify run {h} "true"', host),
    st.sampled_from(['confirm "Point DNS at b"', 'confirm "go?"']),
)


def _block(members):
    return "parallel {\n" + "\n".join("  " + m for m in members) + "\n}"


step = st.one_of(simple, st.lists(simple, min_size=1, max_size=3).map(_block))
CODES = {r.code for r in catalog.RULES}


@settings(max_examples=int(os.environ.get("MDSL_FUZZ", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25))
def test_random_plans_never_crash(steps):
    text = DECLS + "steps {\n" + "\n".join(steps) + "\n}\n"
    n_lines = text.count("\n") + 1
    first = findings_of(text, "random.plan")
    for f in first:
        assert f.code in CODES, f
        assert 1 <= f.span.line <= n_lines
        assert f.message
    again = findings_of(text, "random.plan")
    assert [(f.code, f.span, f.message) for f in first] == [(f.code, f.span, f.message) for f in again]
