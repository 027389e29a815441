"""The local backend: bash -c, stdin, timeouts that kill the whole process group, streams."""

from __future__ import annotations

import os
import time

import pytest

from mdsl.model import Host
from mdsl.run.backend import CommandTimeout
from mdsl.run.local import LocalBackend


@pytest.fixture
def local(tmp_path):
    b = LocalBackend(Host("here", local=True), cwd=str(tmp_path))
    b.connect()
    return b


def test_run_collects_output_exit_and_stdin(local, tmp_path):
    res = local.run("cat; echo err >&2; pwd; exit 3", stdin=b"in\n")
    assert (res.exit, res.stdout, res.stderr) == (3, f"in\n{tmp_path}\n", "err\n")


def test_timeout_kills_the_process_group(local, tmp_path):
    pidfile = tmp_path / "child.pid"
    t = time.monotonic()
    with pytest.raises(CommandTimeout):
        local.run(f"sleep 30 & echo $! > {pidfile}; wait", timeout=0.5)
    assert time.monotonic() - t < 10
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the background child survived the timeout")


def test_a_daemon_keeping_stdout_open_does_not_block_run(local, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    t = time.monotonic()
    res = local.run(f"setsid sleep 30 & echo $! > {pidfile}; echo started")
    try:
        assert res.ok and res.stdout == "started\n"
        assert time.monotonic() - t < 5
    finally:
        os.kill(int(pidfile.read_text()), 9)


def test_streams_are_chunked_both_ways(local, tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = []
    res = local.read_stream(f"cat {src}", got.append)
    assert res.ok and b"".join(got) == data and len(got) > 1
    res = local.write_stream(f"cat > {tmp_path / 'dst.bin'}", iter(got))
    assert res.ok and (tmp_path / "dst.bin").read_bytes() == data


def test_a_failing_sink_stops_the_reader(local):
    def sink(chunk):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        local.read_stream("yes", sink, timeout=10)


def test_writer_exiting_early_returns_its_status(local):
    res = local.write_stream("head -c 1 >/dev/null; exit 4", iter([b"x" * 65536] * 64))
    assert res.exit == 4
