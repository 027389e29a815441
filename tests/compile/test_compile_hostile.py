"""Hostile values (quotes, `$()`, backticks, `;`, newlines, leading `-`, unicode) in every engine's
commands: each stays one argument, and running the commands on the local backend runs nothing injected
(a canary file `pwned` would appear in the working directory)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import stat
import sys

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.compile.actions import CopyArtifact, Shell
from mdsl.stores.postgres.commands import conninfo
from mdsl.run.executor import Executor
from mdsl.run.secrets import SecretStore
from mdsl.run.local import LocalBackend
from mdsl.run.transfer import Copier
from mdsl.syntax.parser import parse_text

CANARY = "pwned"
# Values that are valid in a path (no NUL, no newline, no '/').
PATH_VALUES = [
    "it's", 'say "hi"', "$(touch pwned)", "`touch pwned`", "; touch pwned ;", "-rf", "--help",
    "ünï cødé ✓ 日本", "a\\b", "x && touch pwned", "$HOME", "*", " lead", "|touch pwned", ">pwned",
]
# Values for names (databases, users) may also hold a newline.
NAME_VALUES = PATH_VALUES + ["line1\ntouch pwned", "x' host='evil"]


def q(value: str) -> str:
    """A plan string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def compiled(text: str):
    bound = resolve(parse_text(text, "hostile.plan"))
    assert bound.ok, [f.message for f in bound.findings]
    return compile_plan(bound)


def run_all(cp, plan_dir, environ=None):
    """Run every compiled action on local backends (no check, no journal)."""
    backends = {name: LocalBackend(h, cwd=str(plan_dir)) for name, h in cp.bound.hosts.items()}
    ex = Executor(backends, SecretStore(environ or {}, str(plan_dir)))
    for leaf in cp.leaves():
        for a in leaf.actions:
            if isinstance(a, Shell):
                res = ex.run(a.command, timeout=30)
                assert res.ok, (leaf.summary, a.command.render(), res.stderr)
            elif isinstance(a, CopyArtifact):
                Copier(ex, cp.bound.hosts).copy(a)


@pytest.mark.parametrize("value", PATH_VALUES)
def test_file_engines_run_hostile_paths_without_injection(tmp_path, value):
    root = tmp_path / "w"
    src = root / f"src {value}"
    (src / f"files {value}" / f"skip {value}").mkdir(parents=True)
    (src / f"files {value}" / f"keep {value}").mkdir()
    (src / f"files {value}" / f"keep {value}" / "f.txt").write_text("kept\n")
    (src / f"files {value}" / f"skip {value}" / "g.txt").write_text("skipped\n")
    db = sqlite3.connect(src / f"db {value}.sqlite")
    db.execute("create table t (v text)")
    db.execute("insert into t values (?)", (value,))
    db.commit()
    db.close()
    R = str(root)
    text = f"""
host a {{ local = true }}
host b {{ local = true }}
sqlite src_db on a {{ path = {q(R + '/src ' + value + '/db ' + value + '.sqlite')} }}
sqlite dst_db on b {{ path = {q(R + '/dst ' + value + '/db ' + value + '.sqlite')} fresh = true }}
dir src_dir on a {{ path = {q(R + '/src ' + value + '/files ' + value)} }}
dir dst_dir on b {{ path = {q(R + '/dst ' + value + '/files ' + value)} fresh = true }}
steps {{
  dump src_db to a:{q(R + '/out ' + value + '/dump ' + value)}
  archive src_dir to a:{q(R + '/out ' + value + '/arch ' + value + '.tar.gz')} exclude {q('skip ' + value)}
  transfer a:{q(R + '/out ' + value + '/dump ' + value)} to b:{q(R + '/in ' + value + '/dump ' + value)}
  transfer a:{q(R + '/out ' + value + '/arch ' + value + '.tar.gz')} to b:{q(R + '/in ' + value + '/a.tar.gz')}
  restore b:{q(R + '/in ' + value + '/dump ' + value)} into dst_db
  extract b:{q(R + '/in ' + value + '/a.tar.gz')} into dst_dir
  move b:{q(R + '/in ' + value + '/dump ' + value)} to b:{q(R + '/in ' + value + '/moved ' + value)}
  delete b:{q(R + '/in ' + value + '/moved ' + value)}
}}
"""
    cp = compiled(text)
    for leaf in cp.leaves():
        for a in leaf.actions:
            for c in a.commands():
                rendered = c.render()
                # the value only ever appears inside one quoted word
                assert any(value in w for w in shlex.split(rendered)), rendered
    run_all(cp, tmp_path)
    assert not (tmp_path / CANARY).exists()
    assert not (root / CANARY).exists()
    dst = root / f"dst {value}"
    got = sqlite3.connect(dst / f"db {value}.sqlite").execute("select v from t").fetchall()
    assert got == [(value,)]
    assert (dst / f"files {value}" / f"keep {value}" / "f.txt").read_text() == "kept\n"
    assert not (dst / f"files {value}" / f"skip {value}").exists()
    assert not (root / f"in {value}" / f"moved {value}").exists()  # deleted: exactly that path
    assert (root / f"in {value}" / "a.tar.gz").exists()  # and nothing beside it
    assert (root / f"out {value}" / f"dump {value}").exists()


STUB = r'''#!{python}
import json, os, sys
rec = {{"tool": os.path.basename(sys.argv[0]), "argv": sys.argv[1:]}}
if os.environ.get("PGPASSFILE"):
    p = os.environ["PGPASSFILE"]
    rec["pgpass"] = open(p).read()
    rec["pgpass_mode"] = oct(os.stat(p).st_mode & 0o777)
    rec["pgpass_path"] = p
if rec["tool"] == "pg_restore" and not any(a.startswith("/") for a in sys.argv[1:]):
    rec["stdin"] = sys.stdin.read()
with open({log!r}, "a") as f:
    f.write(json.dumps(rec) + "\n")
if rec["tool"] == "psql":
    sys.exit(1)  # "the database does not exist yet": createdb runs
'''

SUDO = r'''#!{python}
import os, sys
args = sys.argv[1:]
rest = args[args.index("--") + 1:]
os.execvp(rest[0], rest)
'''


@pytest.fixture
def stub_tools(tmp_path, monkeypatch):
    """pg_dump, pg_restore, psql, createdb, dropdb, systemctl and sudo that record their argv."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.jsonl"
    for tool in ("pg_dump", "pg_restore", "psql", "createdb", "dropdb", "systemctl"):
        p = bindir / tool
        p.write_text(STUB.format(python=sys.executable, log=str(log)))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    p = bindir / "sudo"
    p.write_text(SUDO.format(python=sys.executable))
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")

    def calls():
        if not log.exists():
            return []
        return [json.loads(x) for x in log.read_text().splitlines()]

    return calls


def _libpq_parse(s: str) -> dict:
    out = {}
    for m in re.finditer(r"(\w+)=('(?:[^'\\]|\\.)*'|\S+)", s):
        v = m.group(2)
        if v.startswith("'"):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1)] = v
    return out


@pytest.mark.parametrize("value", NAME_VALUES)
def test_postgres_and_systemd_commands_pass_hostile_names_as_single_arguments(tmp_path, stub_tools, value):
    password = "pw'$(touch pwned)`x`:\\;" + value
    unit = re.sub(r"\s", "_", value).lstrip("-") or "u"
    R = str(tmp_path / "w")
    text = f"""
host h {{ local = true }}
postgres src on h {{
  database = {q(value)}
  user = {q(value)}
  socket = {q('/run/pg ' + value)}
  password = env("MDSL_TEST_PW")
}}
postgres peer on h {{
  database = {q(value + '2')}
  run_as = {q(value)}
}}
service svc on h {{ systemd = [{q(unit)}] }}
steps {{
  stop svc
  dump src to h:{q(R + '/dump ' + value.replace(chr(10), ' '))}
  restore h:{q(R + '/dump ' + value.replace(chr(10), ' '))} into peer replace
  drop src
  start svc
}}
"""
    cp = compiled(text)
    for leaf in cp.leaves():
        for a in leaf.actions:
            for c in a.commands():
                assert password not in c.render() and password not in c.render(masked=False)
    run_all(cp, tmp_path, environ={"MDSL_TEST_PW": password})
    assert not (tmp_path / CANARY).exists()
    calls = stub_tools()
    by_tool = {}
    for c in calls:
        by_tool.setdefault(c["tool"], []).append(c)
        assert not any(password in a for a in c["argv"]), c  # never in argv
    dump = by_tool["pg_dump"][0]
    info = _libpq_parse(next(a for a in dump["argv"] if a.startswith("--dbname="))[len("--dbname="):])
    assert info == {"host": "/run/pg " + value, "user": value, "dbname": value}
    assert dump["pgpass_mode"] == "0o600"
    esc = password.replace("\\", "\\\\").replace(":", "\\:")
    assert dump["pgpass"] == f"*:*:*:*:{esc}\n"
    assert by_tool["createdb"][0]["argv"][-1] == value + "2"
    assert by_tool["createdb"][0]["argv"][-2] == "--"
    # the dump (zstd by default) is read back whole before its rename (zstd -dc < PART | pg_restore -f /dev/null)
    verify = by_tool["pg_restore"][0]
    assert verify["argv"] == ["-f", "/dev/null"]
    assert os.path.isfile(R + "/dump " + value.replace(chr(10), " "))
    restore = by_tool["pg_restore"][1]
    assert "--role=" + value in restore["argv"] and "--clean" in restore["argv"]
    assert by_tool["dropdb"][0]["argv"][-2:] == ["--", value]
    assert {"--host=/run/pg " + value, "--username=" + value} <= set(by_tool["dropdb"][0]["argv"])
    systemctl = [c["argv"] for c in by_tool["systemctl"]]
    assert ["stop", "--", unit] in systemctl and ["start", "--", unit] in systemctl
    # every temp PGPASSFILE is gone again
    assert all(not os.path.exists(c["pgpass_path"]) for c in calls if "pgpass_path" in c)


def test_conninfo_quotes_values_that_libpq_would_split():
    from mdsl.stores.postgres import Postgres

    db = Postgres(name="x", host="h", database="x' host='evil", user="u")
    assert _libpq_parse(conninfo(db)) == {"user": "u", "dbname": "x' host='evil"}


def test_delete_refuses_root_and_system_directories():
    from mdsl.compile.parts import CompileError

    for path in ("/", "//", "/.", "/etc", "/var/lib", "/tmp/.."):
        with pytest.raises(CompileError):
            compiled(f'host h {{ local = true }}\nsteps {{ delete h:{q(path)} }}\n')
