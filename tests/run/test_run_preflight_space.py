"""P404 (free space) on local hosts with stand-in answers: what a restore decompresses beside its dump counts.

The hosts are this machine (`local = true`); their `df` is a shell function reporting a chosen free
space, and each database's `bin` holds a stand-in psql that reports a chosen database size. Nothing
real is dumped or restored: preflight only asks. The e2e suite (tests/e2e/test_preflight.py) does
the same against real sshd, PostgreSQL and tmpfs mounts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mdsl.check.resolve import resolve
from mdsl.compile import compile_plan
from mdsl.stores.postgres.commands import RESTORE_PART_FACTOR
from mdsl.run.secrets import SecretStore
from mdsl.run.local import LocalBackend
from mdsl.run.console import human_bytes
from mdsl.run.preflight import MARGIN, SLACK, run_preflight
from mdsl.syntax.parser import parse_text

GiB = 1 << 30
MiB = 1 << 20


class FakeDisk(LocalBackend):
    """This machine, with one file system of `free` bytes as far as `df` says."""

    def __init__(self, host, free: int, **kw):
        super().__init__(host, **kw)
        self.free = free

    def run(self, command, **kw):
        df = f"df() {{ printf 'fakefs 999999999 1 %s 1%% /fake-{self.name}\\n' {self.free // 1024}; }}\n"
        return super().run(df + command, **kw)


def pg_bin(where: Path, size: int) -> Path:
    """A `bin` directory whose psql answers preflight's probe with server 15.5 and `size` bytes."""
    where.mkdir(parents=True)
    scripts = {
        "psql": f"#!/bin/sh\necho '150005|{size}'\n",
        "pg_dump": "#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.5'\n",
        "pg_restore": "#!/bin/sh\necho 'pg_restore (PostgreSQL) 15.5'\n",
        "createdb": "#!/bin/sh\nexit 0\n",
        "dropdb": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (where / name).write_text(text)
        (where / name).chmod(0o755)
    return where


class Setup:
    """Two local hosts, a (plenty of room) and b (`free_b`), and a source database of `db_size` bytes."""

    def __init__(self, tmp_path: Path, db_size: int = GiB):
        self.root = tmp_path
        self.old_bin = pg_bin(tmp_path / "old-bin", db_size)
        self.new_bin = pg_bin(tmp_path / "new-bin", 8 * MiB)
        (tmp_path / "a").mkdir()
        (tmp_path / "b" / "in").mkdir(parents=True)

    def plan(self, steps: str, dump_opts: str = "") -> str:
        r = self.root
        return f"""plan "space"
host a {{ local = true }}
host b {{ local = true }}
postgres old_db on a {{ database = "old"  bin = "{self.old_bin}" }}
postgres new_db on b {{ database = "new"  bin = "{self.new_bin}"  fresh = true }}
postgres other_db on b {{ database = "other"  bin = "{self.new_bin}"  fresh = true }}
steps {{
{steps.replace("DUMP_OPTS", dump_opts).replace("ROOT", str(r))}
}}
"""

    def p404(self, text: str, free_b: int) -> list:
        bound = resolve(parse_text(text, str(self.root / "space.plan")))
        assert bound.ok, [f.message for f in bound.findings]
        backends = {"a": FakeDisk(bound.hosts["a"], 1 << 50, cwd=str(self.root)),
                    "b": FakeDisk(bound.hosts["b"], free_b, cwd=str(self.root))}
        findings = run_preflight(bound, compile_plan(bound), backends, secrets=SecretStore({}, str(self.root)))
        return [f for f in findings if f.code == "P404"]


MIGRATE = """  dump old_db to a:"ROOT/a/db.dump"DUMP_OPTS
  transfer a:"ROOT/a/db.dump" to b:"ROOT/b/in/db.dump"
  restore b:"ROOT/b/in/db.dump" into new_db replace"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def room_for(copies: float, size: int = GiB) -> int:
    """Free space between what `copies` and `copies + 1` copies of `size` bytes need."""
    return int(size * copies * MARGIN) + SLACK + int(size * MARGIN / 2)


def test_room_for_the_dump_but_not_its_decompressed_copy_is_p404(tmp_path):
    s = Setup(tmp_path)
    text = s.plan(MIGRATE)
    [f] = s.p404(text, room_for(1))
    # named where the space runs out: the restore, while it decompresses
    assert f.span.line == line_of(text, "restore b:")
    assert f"{tmp_path}/b/in/db.dump.restore.part" in f.message and "/fake-b" in f.message
    assert f"`{tmp_path}/b/in/db.dump` (1.0 GiB, from `transfer`" in f.notes[0]
    assert f"`{tmp_path}/b/in/db.dump.restore.part` (1.0 GiB, from `restore`" in f.notes[0]
    assert "removed when that step ends" in f.notes[0]
    assert "(2.0 GiB estimated x1.2" in f.message  # the dump and its copy, 1 GiB each
    assert s.p404(text, room_for(2)) == []


@pytest.mark.parametrize("dump_opts", [" compress = gzip", " compress = none", " format = directory",
                                       " format = plain compress = zstd"])
def test_restores_that_read_the_dump_in_place_need_no_room_for_a_copy(tmp_path, dump_opts):
    s = Setup(tmp_path)
    assert s.p404(s.plan(MIGRATE, dump_opts), room_for(1)) == []


def test_a_serial_restore_needs_no_room_for_a_copy(tmp_path):
    s = Setup(tmp_path)
    assert s.p404(s.plan(MIGRATE + " jobs = 1"), room_for(1)) == []


def test_the_dump_alone_not_fitting_is_named_at_the_dump_as_before(tmp_path):
    s = Setup(tmp_path)
    text = s.plan(MIGRATE)
    [f] = s.p404(text, GiB)
    assert f.span.line == line_of(text, "transfer a:")
    assert f"{tmp_path}/b/in/db.dump`" in f.message


def test_the_peak_counts_one_decompressed_copy_at_a_time(tmp_path):
    # two restores of the same dump, one after the other: the dump and one copy at once, not two copies
    s = Setup(tmp_path)
    twice = MIGRATE + '\n  restore b:"ROOT/b/in/db.dump" into other_db replace'
    assert s.p404(s.plan(twice), room_for(2)) == []
    # in a parallel block both copies exist at once
    both = MIGRATE.rsplit("\n", 1)[0] + ('\n  parallel {\n    restore b:"ROOT/b/in/db.dump" into new_db replace\n'
                                         '    restore b:"ROOT/b/in/db.dump" into other_db replace\n  }')
    [f] = s.p404(s.plan(both), room_for(2))
    assert f.notes[0].count(".restore.part") == 2 and "(3.0 GiB estimated" in f.message


def test_what_lands_after_the_restore_still_adds_up(tmp_path):
    # the decompressed copy is gone by then, the second transfer stays: two copies of the dump at the
    # end, as many as during the restore (the dump and its copy); never three
    s = Setup(tmp_path)
    later = MIGRATE + '\n  transfer a:"ROOT/a/db.dump" to b:"ROOT/b/in/again.dump"'
    [f] = s.p404(s.plan(later), room_for(1))
    assert "again.dump" in f.notes[0] and "(2.0 GiB estimated" in f.message
    assert s.p404(s.plan(later), room_for(2)) == []


OUTSIDE = """  # mdsl: allow H203 "made by an earlier plan"
  restore b:"ROOT/b/in/old.dump" into new_db replace"""


def sparse(path: Path, size: int, head: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def test_a_zstd_dump_found_on_the_host_counts_its_decompressed_size(tmp_path):
    s = Setup(tmp_path)
    dump = 300 * MiB
    sparse(tmp_path / "b" / "in" / "old.dump", dump, b"\x28\xb5\x2f\xfd")  # zstd's magic
    text = s.plan(OUTSIDE)
    [f] = s.p404(text, room_for(RESTORE_PART_FACTOR - 1, dump))
    assert f.span.line == line_of(text, "restore b:")
    assert f"({human_bytes(RESTORE_PART_FACTOR * dump)}, from `restore`" in f.notes[0]
    assert s.p404(text, room_for(RESTORE_PART_FACTOR, dump)) == []


@pytest.mark.parametrize("what", ["custom", "directory", "missing"])
def test_a_dump_found_on_the_host_that_is_not_zstd_is_read_in_place(tmp_path, what):
    s = Setup(tmp_path)
    p = tmp_path / "b" / "in" / "old.dump"
    if what == "custom":
        sparse(p, 300 * MiB, b"PGDMP\x01\x0e\x00")
    elif what == "directory":
        p.mkdir()
        sparse(p / "toc.dat", 300 * MiB, b"PGDMP")
    assert s.p404(s.plan(OUTSIDE), 10 * MiB + SLACK) == []


def test_a_copy_of_a_dump_found_on_another_host_is_measured_there(tmp_path):
    s = Setup(tmp_path)
    sparse(tmp_path / "a" / "old.dump", 300 * MiB, b"\x28\xb5\x2f\xfd")
    text = s.plan('  # mdsl: allow H203 "made by an earlier plan"\n'
                  '  transfer a:"ROOT/a/old.dump" to b:"ROOT/b/in/old.dump"\n'
                  '  restore b:"ROOT/b/in/old.dump" into new_db replace')
    # the copy (300 MiB) and its decompressed copy (5 x 300 MiB) at once
    [f] = s.p404(text, room_for(RESTORE_PART_FACTOR, 300 * MiB))
    assert "(300.0 MiB, from `transfer`" in f.notes[0]
    assert f"({human_bytes(RESTORE_PART_FACTOR * 300 * MiB)}, from `restore`" in f.notes[0]
    assert s.p404(text, room_for(RESTORE_PART_FACTOR + 1, 300 * MiB)) == []
