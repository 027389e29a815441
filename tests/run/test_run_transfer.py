"""Transfers between two local backends: .part, same-pass hash, verify, rename, resume."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from mdsl.model import Host
from mdsl.compile.actions import CopyArtifact, Location
from mdsl.run.executor import Executor
from mdsl.run.secrets import SecretStore
from mdsl.run.local import LocalBackend
from mdsl.run.errors import TransferError
from mdsl.run.transfer import Copier

HOSTS = {"a": Host("a", local=True), "b": Host("b", local=True)}


@pytest.fixture
def copier(tmp_path):
    backends = {n: LocalBackend(h, cwd=str(tmp_path)) for n, h in HOSTS.items()}
    seen = []
    c = Copier(Executor(backends, SecretStore({})), HOSTS, on_bytes=seen.append)
    c.seen = seen
    return c


def action(src, dst, **kw):
    return CopyArtifact(Location("a", str(src)), Location("b", str(dst)), **kw)


def test_stream_copies_verifies_and_renames(copier, tmp_path):
    data = os.urandom(2_500_000)
    src, dst = tmp_path / "src.dump", tmp_path / "out" / "dst.dump"
    src.write_bytes(data)
    got = copier.copy(action(src, dst, mode="0600"))
    assert dst.read_bytes() == data and not (tmp_path / "out" / "dst.dump.part").exists()
    assert got.sha256 == hashlib.sha256(data).hexdigest() and got.size == len(data) and not got.resumed
    assert sum(copier.seen) == len(data)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600


def test_a_broken_transfer_resumes_from_its_part(copier, tmp_path):
    data = os.urandom(1_000_000)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    (tmp_path / "dst.part").write_bytes(data[:400_000])
    got = copier.copy(action(src, dst))
    assert got.resumed and got.bytes_sent == 600_000
    assert dst.read_bytes() == data


def test_a_part_that_does_not_match_the_source_starts_over(copier, tmp_path):
    data = os.urandom(500_000)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    (tmp_path / "dst.part").write_bytes(b"\0" * 100_000)
    got = copier.copy(action(src, dst))
    assert dst.read_bytes() == data and not got.resumed


def test_a_source_changed_since_the_journal_is_refused(copier, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"now")
    with pytest.raises(TransferError, match="changed since"):
        copier.copy(action(src, dst), expected_sha=hashlib.sha256(b"then").hexdigest())
    assert not dst.exists()


def test_directories_travel_as_a_tar_stream_and_compare_by_tree_hash(copier, tmp_path):
    src = tmp_path / "dump.d"
    (src / "sub").mkdir(parents=True)
    (src / "toc.dat").write_bytes(os.urandom(1000))
    (src / "sub" / "3001.dat.gz").write_bytes(os.urandom(5000))
    dst = tmp_path / "copy.d"
    copier.copy(action(src, dst))
    assert (dst / "sub" / "3001.dat.gz").read_bytes() == (src / "sub" / "3001.dat.gz").read_bytes()
    assert not (tmp_path / "copy.d.part").exists()


def test_a_missing_source_fails_with_the_host(copier, tmp_path):
    with pytest.raises(TransferError) as e:
        copier.copy(action(tmp_path / "nope", tmp_path / "dst"))
    assert e.value.host == "a" and "does not exist" in e.value.stderr


def test_rsync_via_runs_locally_between_local_hosts(copier, tmp_path):
    import shutil

    if not shutil.which("rsync"):
        pytest.skip("rsync not installed")
    from mdsl.check.resolve import resolve
    from mdsl.compile import compile_plan
    from mdsl.syntax.parser import parse_text

    src = tmp_path / "s.bin"
    src.write_bytes(os.urandom(10000))
    text = (f'host a {{ local = true }}\nhost b {{ local = true }}\n'
            f'steps {{ transfer a:"{src}" to b:"{tmp_path}/r.bin" via = rsync }}\n')
    cp = compile_plan(resolve(parse_text(text)))
    copier.copy(cp.steps[0].actions[0])
    assert (tmp_path / "r.bin").read_bytes() == src.read_bytes()
