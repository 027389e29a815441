"""Malformed answers from a host are detected, never trusted: a login banner on stdout, a
`sha256sum` that prints garbage or lies, a `pg_dump` that exits 0 after writing a cut file.

Each case runs `mdsl apply` against real sshd and PostgreSQL; afterwards nothing half-made
sits at a destination path, the source is intact, and once the host behaves, a re-run
finishes with a byte-identical copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hosts import PG_BIN, plan_str
from reliability_helpers import hooked, human, journal_events, mdsl, no_traceback, output, three  # noqa: F401

pytestmark = pytest.mark.e2e


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _transfer_plan(tmp_path: Path, decls: str, src: str, dst: str) -> Path:
    """`transfer src_file to dst_file`; src and dst are `HOST:"PATH"`."""
    (sh, sp), (dh, dp) = src.split(":", 1), dst.split(":", 1)
    plan = tmp_path / "answers.plan"
    plan.write_text(f'plan "untrusted answers"\n{decls}\nfile src_file on {sh} {{ path = {sp} }}\n'
                    f'file dst_file on {dh} {{ path = {dp}  fresh = true }}\n'
                    f'steps {{\n  transfer src_file to dst_file\n}}\n')
    r = mdsl("check", str(plan))
    assert r.returncode == 0, output(r)
    return plan


def _fake_tool(h, name: str, body: str) -> None:
    p = h.bindir / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)


def test_a_login_banner_on_stdout_is_refused_before_anything_runs(three, tmp_path):
    a, b, c, decls = three
    src = c.root / "outbox" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(300_000))
    dst = b.root / "inbox" / "data.bin"
    plan = _transfer_plan(tmp_path, decls, f'c:{plan_str(str(src))}', f'b:{plan_str(str(dst))}')

    c.set_hook('echo "Welcome to Ubuntu 22.04.3 LTS (GNU/Linux 5.15.0-91-generic x86_64)"')
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    assert "writes to stdout before every command" in text and "Welcome to Ubuntu" in text, human(text)
    assert "help:" in text
    assert not dst.exists() and not list(b.root.rglob("*.part"))
    assert not [e for e in journal_events(plan) if e.get("event") == "start"]

    c.set_hook("")  # the operator silences the banner: the same plan now runs
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert sha256(dst) == sha256(src)


@pytest.mark.parametrize("answer", ["garbage", "lie"])
def test_a_sha256sum_that_prints_garbage_or_lies_is_not_trusted(three, tmp_path, answer):
    a, b, c, decls = three
    src = a.root / "outbox" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(200_000))
    dst = c.root / "inbox" / "data.bin"
    plan = _transfer_plan(tmp_path, decls, f'a:{plan_str(str(src))}', f'c:{plan_str(str(dst))}')

    out = "this is not a checksum" if answer == "garbage" else "0" * 64 + "  -"
    for tool in ("sha256sum", "openssl"):  # openssl dgst is used where present
        _fake_tool(c, tool, f"cat >/dev/null; echo '{out}'")
    c.set_hook(f"export PATH={c.bindir}:$PATH")
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    if answer == "garbage":
        assert "not the expected shape; not trusting it" in said and "this is not a checksum" in said, said
    else:
        assert "checksum mismatch" in said, said
    assert "step 1" in said and "host c" in said, said
    assert not dst.exists()  # never renamed into place
    assert [e["event"] for e in journal_events(plan) if e.get("step") == "1"][-1] == "failed"

    c.set_hook("")
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert sha256(dst) == sha256(src)


def _cut_pg_dump(dirpath: Path, keep: int, exit_code: int = 0) -> Path:
    """A `bin` dir whose pg_dump writes only the first `keep` bytes of the real one and exits `exit_code`."""
    dirpath.mkdir(parents=True, exist_ok=True)
    dirpath.chmod(0o755)
    for tool in ("pg_restore", "psql", "createdb", "dropdb"):
        (dirpath / tool).symlink_to(PG_BIN / tool)
    p = dirpath / "pg_dump"
    p.write_text(f'#!/bin/sh\n{PG_BIN}/pg_dump "$@" | head -c {keep}\nexit {exit_code}\n')
    p.chmod(0o755)
    return dirpath


@pytest.mark.parametrize("fmt,exit_code", [("custom", 0), ("plain-gzip", 1)],
                         ids=["custom-exit0", "plain-gzip-exit1-hidden-by-the-pipe"])
def test_a_dump_cut_short_is_detected_before_it_is_renamed(ssh_hosts, pg_source, tmp_path, fmt, exit_code):
    a = ssh_hosts.a
    fake = _cut_pg_dump(a.root / "fakebin", keep=400_000, exit_code=exit_code)
    decl = pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")
    decl = decl.rpartition("}")[0] + f"  bin = {plan_str(str(fake))}\n}}"
    opts = {"custom": "", "plain": " format = plain", "plain-gzip": " format = plain compress = gzip"}[fmt]
    dump = a.root / "outbox" / "db.dump"
    plan = tmp_path / "cut-dump.plan"
    plan.write_text(f'{ssh_hosts.plan_host_decl("a")}\n{decl}\n'
                    f'steps {{\n  dump old_db to a:{plan_str(str(dump))}{opts}\n}}\n')
    chk = mdsl("check", str(plan))
    assert chk.returncode in (0, 1), output(chk)  # H201 (no writer stopped) is a warning at most
    before = pg_source.table_checksum(pg_source.db)
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    # a status pg_dump reports is its own (through the pipe, sh has no pipefail); exit 0 is caught by reading back
    assert ("pg_dump failed (exit 1)" if exit_code else "does not read back whole") in said, said
    assert not dump.exists()  # the cut file never gets the final name
    assert pg_source.table_checksum(pg_source.db) == before

    # with the real pg_dump behind the same `bin`, the step completes and the dump restores
    (fake / "pg_dump").unlink()
    (fake / "pg_dump").symlink_to(PG_BIN / "pg_dump")
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert dump.exists() and not list(a.root.rglob("*.part"))


def test_a_plain_dump_cut_after_transfer_is_refused_before_the_target_is_dropped(ssh_hosts, pg_source, pg_target,
                                                                                   tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    pg_target.psql("create table keep_me (v int); insert into keep_me values (42);", db=pg_target.db)
    dump_a, dump_b = a.root / "outbox" / "db.sql", b.root / "inbox" / "db.sql"
    plan = tmp_path / "cut-restore.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
{pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True)}
steps {{
  dump old_db to a:{plan_str(str(dump_a))} format = plain
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
  # a disk error, a bad copy by hand: the file the restore reads is no longer whole
  run b {plan_str(f"truncate -s 300000 {dump_b}")}
  restore b:{plan_str(str(dump_b))} into new_db replace
}}
""")
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    assert "lacks pg_dump's closing line" in human(text), human(text)
    assert "step 4" in human(text)
    # nothing was dropped: the target still holds what it held
    assert pg_target.psql("select v from keep_me", db=pg_target.db) == "42"
    assert "statuses" not in pg_target.tables(pg_target.db)
