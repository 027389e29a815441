"""Shell injection over SSH: hostile paths, database names and unit names go through every
engine (pg_dump/pg_restore/createdb, tar, the stream copy, rsync `sync` and `transfer via
rsync/scp`, move, delete, systemctl) on real sshd hosts, and each ends up a literal file,
database or argument. An injected command would create a canary file; it never appears.
Hostile host addresses, labels and unit names are refused by `mdsl check` (E1xx) or fail
to connect, and run nothing either.

tests/compile/test_compile_hostile.py covers the same values on the local backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from hosts import plan_str
from reliability_helpers import hooked, human, mdsl, no_traceback, output, three  # noqa: F401

pytestmark = pytest.mark.e2e


def psql_in(cluster, db: str, sql: str) -> str:
    """SQL in a database whatever its name (the fixture's dsn() does not quote)."""
    from mdsl.stores.postgres.commands import libpq_quote

    dsn = f"host={libpq_quote(str(cluster.sockdir))} port={cluster.port} user=postgres dbname={libpq_quote(db)}"
    r = subprocess.run([str(cluster.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn,
                        "-c", sql], capture_output=True, text=True, env={**os.environ, "PGPASSFILE": "/dev/null"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


CANARY = "pwned"


def values():
    """Hostile values; an injection in any of them would `touch pwned` in the shell's working directory."""
    c = CANARY
    return [
        "it's", 'say "hi"', f"$(touch {c})", f"`touch {c}`", f"; touch {c} ;", f"| touch {c}", f"x && touch {c}",
        f">{c}", "-rf", "--help", " lead ünï cødé ✓ 日本", "a\\b", "$HOME *?[x]", "'\"$(touch " + c + ")\"'",
        "l" * 200,
    ]


def canaries(*dirs: Path):
    """Where an injected `touch pwned` would land: each host's working directory (the SSH user's home)."""
    return [Path.home() / CANARY, Path("/") / CANARY] + [Path(d) / CANARY for d in dirs]


STUB_SYSTEMCTL = r'''#!/usr/bin/env python3
import hashlib, json, os, sys
log, state = {log!r}, {state!r}
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\n")
units = args[args.index("--") + 1:]
marks = [os.path.join(state, hashlib.sha256(u.encode()).hexdigest()) for u in units]
if args[0] == "start":
    for m in marks:
        open(m, "w").close()
elif args[0] == "stop":
    for m in marks:
        if os.path.exists(m):
            os.unlink(m)
elif args[0] == "is-active":
    sys.exit(0 if all(os.path.exists(m) for m in marks) else 3)
'''


def test_hostile_values_are_literal_over_ssh(three, pg_source, pg_target, tmp_path):
    a, b, c, decls = three
    vals = values()
    watch = canaries(tmp_path, a.root, b.root, c.root)
    assert not any(p.exists() for p in watch)
    # systemctl on c records its argv (the service manager is a stub; the quoting is real)
    log, state = c.root / "systemctl.jsonl", c.root / "units"
    state.mkdir()
    stub = c.bindir / "systemctl"
    stub.write_text(STUB_SYSTEMCTL.format(log=str(log), state=str(state)))
    stub.chmod(0o755)
    c.set_hook(f"export PATH={c.bindir}:$PATH")

    A, B = str(a.root), str(b.root)
    q = plan_str
    body, steps = [decls], []
    for i, v in enumerate(vals):
        short = v[:40]  # database names hold 63 bytes
        src = a.root / f"src {v}"
        (src / f"files {v}" / f"keep {v}").mkdir(parents=True)
        (src / f"files {v}" / f"keep {v}" / f"f {v}.txt").write_text(v + "\n")
        (src / f"files {v}" / f"skip {v}").mkdir()
        (src / f"files {v}" / f"skip {v}" / "g").write_text("left behind\n")
        (src / f"blob {v}").write_bytes(hashlib.sha256(v.encode()).digest() * 1000)
        pg_source.createdb("s" + short)
        psql_in(pg_source, "s" + short, "create table t (v text); insert into t values (current_database());")
        unit = "u" + "".join(ch if not ch.isspace() and ch != "/" else "_" for ch in v)
        body.append(f"""
postgres sdb{i} on a {{ database = {q("s" + short)}  user = "postgres"  socket = {q(str(pg_source.sockdir))}  port = {pg_source.port} }}
postgres tdb{i} on b {{ database = {q("t" + short)}  user = "postgres"  socket = {q(str(pg_target.sockdir))}  port = {pg_target.port}  fresh = true }}
dir src{i} on a {{ path = {q(f"{A}/src {v}/files {v}")} }}
file blob{i} on a {{ path = {q(f"{A}/src {v}/blob {v}")} }}
dir dst{i} on b {{ path = {q(f"{B}/dst {v}/files {v}")}  owner = "root:root"  fresh = true }}
dir synced{i} on b {{ path = {q(f"{B}/synced {v}")}  owner = "root:root"  fresh = true }}
service svc{i} on c {{ systemd = [{q(unit)}] }}""")
        steps += [
            f"stop svc{i}",
            f"dump sdb{i} to a:{q(f'{A}/out {v}/dump {v}')}",
            f"archive src{i} to a:{q(f'{A}/out {v}/arch {v}.tar.gz')} exclude {q('skip ' + v)}",
            f"transfer a:{q(f'{A}/out {v}/dump {v}')} to b:{q(f'{B}/in {v}/dump {v}')}",
            f"transfer a:{q(f'{A}/out {v}/arch {v}.tar.gz')} to b:{q(f'{B}/in {v}/a.tar.gz')}",
            f"transfer blob{i} to b:{q(f'{B}/in {v}/rsync {v}')} via = rsync",
            f"transfer blob{i} to b:{q(f'{B}/in {v}/scp {v}')} via = scp",
            f"restore b:{q(f'{B}/in {v}/dump {v}')} into tdb{i}",
            f"extract b:{q(f'{B}/in {v}/a.tar.gz')} into dst{i}",
            f"sync src{i} to synced{i} exclude {q('skip ' + v)}",
            f"move b:{q(f'{B}/in {v}/dump {v}')} to b:{q(f'{B}/in {v}/moved {v}')}",
            f"delete b:{q(f'{B}/in {v}/moved {v}')}",
            f"start svc{i}",
        ]
    plan = tmp_path / "hostile.plan"
    # one parallel block per kind of step, a member per value: the same commands, less waiting
    phases = [[steps[k] for k in range(j, len(steps), len(steps) // len(vals))] for j in range(len(steps) // len(vals))]
    plan.write_text("\n".join(body) + "\nsteps {\n" + "".join(
        "  parallel {\n    " + "\n    ".join(p) + "\n  }\n" for p in phases) + "}\n")
    chk = mdsl("check", str(plan))
    assert chk.returncode in (0, 1), output(chk)  # warnings (e.g. a service that writes nothing) at most

    r = mdsl("apply", "--yes", str(plan), timeout=600)
    text = output(r)
    assert r.returncode == 0, human(text)[-6000:]
    no_traceback(text)
    assert not [p for p in watch if p.exists()], "an injected command ran"
    for h in (a, b, c):
        assert not list(h.root.rglob(CANARY))

    dbs = set(pg_target.databases())
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    for v in vals:
        short = v[:40]
        # the database with exactly that name, holding exactly what the source held
        assert "t" + short in dbs, (v, sorted(dbs))
        assert psql_in(pg_target, "t" + short, "select v from t") == "s" + short
        # the files, under exactly those names; the excluded subdir left behind
        for root in (b.root / f"dst {v}" / f"files {v}", b.root / f"synced {v}"):
            assert (root / f"keep {v}" / f"f {v}.txt").read_text() == v + "\n", root
            assert not (root / f"skip {v}").exists()
        blob = (a.root / f"src {v}" / f"blob {v}").read_bytes()
        assert (b.root / f"in {v}" / f"rsync {v}").read_bytes() == blob
        assert (b.root / f"in {v}" / f"scp {v}").read_bytes() == blob
        assert not (b.root / f"in {v}" / f"moved {v}").exists() and not (b.root / f"in {v}" / f"dump {v}").exists()
        assert (b.root / f"in {v}" / "a.tar.gz").exists()  # delete removed exactly the one path
        unit = "u" + "".join(ch if not ch.isspace() and ch != "/" else "_" for ch in v)
        assert ["stop", "--", unit] in calls and ["start", "--", unit] in calls, (unit, calls[:4])
    assert not list(b.root.rglob("*.part"))


@pytest.mark.parametrize("decl", [
    'host x { ssh = "root@-oProxyCommand=touch CANARY" }',
    'host x { ssh = "-oProxyCommand=touch${IFS}CANARY" }',
    'host x { ssh = "root@host; touch CANARY" }',
    'host x { ssh = "root@host\\ntouch CANARY" }',
    'host x { ssh = "-lroot@host" }',
    'host x { local = true }\nservice s on x { systemd = ["-rf"] }',
    'host x { local = true }\nservice s on x { systemd = ["a b"] }',
    'host x { local = true }\nservice s on x { systemd = ["../../etc/evil"] }',
    'host x { local = true }\nsteps { $(touch CANARY): run x "true" }',
    'host x; touch CANARY { local = true }',
], ids=["proxycommand-address", "proxycommand-no-user", "semicolon", "newline", "option-user", "unit-option",
        "unit-space", "unit-path", "label", "host-name"])
def test_hostile_hosts_units_and_labels_are_refused_at_check(tmp_path, decl):
    canary = tmp_path / "pwned"
    plan = tmp_path / "bad.plan"
    plan.write_text(decl.replace("CANARY", str(canary)) + "\n")
    r = mdsl("check", "--format", "json", str(plan))
    assert r.returncode == 2, output(r)
    codes = {f["code"] for f in json.loads(r.stdout)}
    assert codes and all(c.startswith("E1") for c in codes), codes
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 2, output(r)
    no_traceback(output(r))
    assert not canary.exists()


def test_an_address_that_looks_like_a_command_is_only_a_name_that_does_not_resolve(ssh_hosts, tmp_path):
    """`root@$(touch${IFS}X)` passes the check (a host name may be odd); it reaches no shell, only DNS."""
    canary = tmp_path / "pwned"
    a = ssh_hosts.a
    (a.root / "d").mkdir()
    plan = tmp_path / "odd.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
host x {{ ssh = {plan_str(f"root@$(touch${{IFS}}{canary})")}  identity = {plan_str(str(ssh_hosts.identity))}  known_hosts = {plan_str(str(ssh_hosts.known_hosts))} }}
dir src on a {{ path = {plan_str(str(a.root / "d"))} }}
dir dst on x {{ path = "/srv/d"  owner = "root:root"  fresh = true }}
file marker on a {{ path = {plan_str(str(a.root / ".mdsl-host"))} }}
steps {{
  sync src to dst
  transfer marker to x:"/srv/m" via = rsync
  transfer marker to x:"/srv/n" via = scp
}}
""")
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    assert "x" in human(text) and ("resolve" in text or "P401" in text), human(text)
    assert not canary.exists()
