"""Faults at every step: `mdsl apply` SIGKILLed at step boundaries and in the middle of long
steps of the seed's Mastodon-style migration (dump, archive, transfer, restore, extract), a
hung step stopped by its timeout, an sshd restart and a "reboot" of the target during a step,
and a target disk that fills up during a transfer.

After each fault: the source data is whole (no moment without a last copy), the journal reads
back, nothing half-made sits at a final path, and running `mdsl apply` again (nothing to clear by
hand: the lock is a flock the kernel drops with the killed process) converges to the same final state
an uninterrupted run reaches.

The suite kills at a few representative points; `bench/kill_every_step.py` runs every one
(MDSL_FAULTS_ALL=1).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hosts import REGISTRY, FileTree, descendants, plan_str
from reliability_helpers import (
    Apply, human, journal_events, lock_path, mdsl, no_traceback, output, wait_until,
)
from test_migration import owner_ids, new_writer, populate_public_system, render_plan, tree_content  # noqa: F401

pytestmark = pytest.mark.e2e

# ---------------------------------------------------------------- the migration under test


class Migration:
    """The seed's migration (tests/e2e/plans/seed_done_right.plan) set up on a and b, and its checks."""

    LEAVES = ["1", "2.1", "2.2", "3", "4", "5", "6", "7", "8", "9"]

    def __init__(self, ssh_hosts, pg_source, pg_target, writer, new_writer, owner, tmp_path):
        self.hosts, self.src_db, self.dst_db = ssh_hosts, pg_source, pg_target
        self.writer, self.new_writer, self.owner = writer, new_writer, owner
        a, b = ssh_hosts.a, ssh_hosts.b
        self.a, self.b = a, b
        self.src_files = writer.files_dir
        populate_public_system(self.src_files)
        # a bigger artifact, so the kills can land inside the archive, transfer and extract
        for i in range(12):
            d = self.src_files / "media_attachments" / "files" / f"{i:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "original.bin").write_bytes(os.urandom(2 << 20))
        self.env_src = a.root / "live" / ".env.production"
        self.env_src.parent.mkdir(parents=True)
        self.env_src.write_text("SECRET_KEY_BASE=" + os.urandom(32).hex() + "\n")
        self.env_src.chmod(0o600)
        (b.root / "public-system").mkdir()
        self.plan = render_plan(
            "seed_done_right.plan", tmp_path / "seed.plan",
            host_a=ssh_hosts.plan_host_decl("a"), host_b=ssh_hosts.plan_host_decl("b"),
            old_db=pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD"),
            new_db=pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True),
            a_root=str(a.root), b_root=str(b.root), owner=f"{owner[0]}:{owner[1]}",
            old_start=plan_str(writer.start_cmd), old_stop=plan_str(writer.stop_cmd),
            old_status=plan_str(writer.status_cmd),
            new_start=plan_str(new_writer.start_cmd), new_stop=plan_str(new_writer.stop_cmd),
            new_status=plan_str(new_writer.status_cmd),
            verify_cmd=plan_str(f"{new_writer.status_cmd} && test -s {b.root}/public-system/cache/README\\ keep\\ me.txt"),
        )
        self.writer.start()
        wait_until(lambda: len(writer.files()) >= 5, what="writer wrote files")
        self.seen_rows = 0
        self.seen_files: set = set()
        self.static_sums = None

    # -- invariants

    def source_is_whole(self) -> None:
        """No moment without a last copy: the source only ever gains data (its writer may still run)."""
        sums = self.src_db.table_checksum(self.src_db.db)
        static = {k: v for k, v in sums.items() if k != "writer_events"}
        if self.static_sums is None:
            self.static_sums = static
        assert static == self.static_sums, "the source database lost or changed data"
        rows = sums["writer_events"].rows
        assert rows >= self.seen_rows, (rows, self.seen_rows)
        self.seen_rows = rows
        files = set(FileTree.snapshot(self.src_files))
        assert files >= self.seen_files, sorted(self.seen_files - files)[:5]
        self.seen_files = files
        assert self.env_src.exists()
        # nothing half-made under a final name on the target
        for p in (self.b.root / "inbox").glob("*") if (self.b.root / "inbox").exists() else ():
            assert p.name.endswith(".part") or p.name in ("backup.dump", "public-system.tar.gz"), p

    def converged(self) -> None:
        """The state an uninterrupted run ends in (tests/e2e/test_migration.py's first test asserts the same)."""
        self.new_writer.track()
        self.writer.track()
        assert self.writer.status() == 3, "the old service still runs"
        assert self.new_writer.status() == 0, "the new service is not running"
        src = self.src_db.table_checksum(self.src_db.db)
        dst = self.dst_db.table_checksum(self.dst_db.db)
        assert src["writer_events"].rows == len(self.writer.files()) > 0
        assert {k: v for k, v in dst.items() if k != "new_app_events"} == src
        before = FileTree.snapshot(self.src_files)
        after = FileTree.snapshot(self.b.root / "public-system")
        assert FileTree.diff(tree_content(before), tree_content(after)) == {"only_a": [], "only_b": [], "changed": []}
        env_dst = self.b.root / "live" / ".env.production"
        assert env_dst.read_bytes() == self.env_src.read_bytes()
        assert stat.S_IMODE(env_dst.stat().st_mode) == 0o600
        assert not [p for r in (self.a.root, self.b.root) for p in r.rglob("*.part")]
        # what mdsl made holds every user's data: private on both ends (umask 077), and so is its journal
        made = [self.a.root / "outbox", self.b.root / "inbox", self.plan.parent / ".mdsl"]
        made += [p for d in made for p in d.iterdir()]
        loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077}
        assert not loose, loose
        st = mdsl("status", str(self.plan))
        assert "10 done, 0 failed, 0 pending" in st.stdout, st.stdout
        again = mdsl("apply", "--yes", str(self.plan))
        assert again.returncode == 0 and "nothing to do" in again.stdout, output(again)

    # -- running it

    def resume(self, max_runs: int = 2) -> list:
        """Re-run until done (no hand work in between); returns each run's result."""
        results = []
        for _ in range(max_runs):
            r = mdsl("apply", "--yes", str(self.plan))
            text = output(r)
            no_traceback(text)
            assert "another apply" not in text, text  # the killed run's lock is free
            results.append(r)
            if r.returncode == 0:
                return results
            self.source_is_whole()
        raise AssertionError("did not converge:\n" + "\n---\n".join(human(output(r))[-3000:] for r in results))


@pytest.fixture
def migration(ssh_hosts, pg_source, pg_target, writer, new_writer, owner_ids, tmp_path):  # noqa: F811
    m = Migration(ssh_hosts, pg_source, pg_target, writer, new_writer, owner_ids, tmp_path)
    yield m
    for h in (ssh_hosts.a, ssh_hosts.b):
        h.reap_orphans()


# ---------------------------------------------------------------- kill points


def _events(plan, event, step):
    return any(e.get("event") == event and e.get("step") == step for e in journal_events(plan))


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def _count_files(d: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(d)) if d.exists() else 0


def kill_points(m: Migration):
    """name -> a predicate that is true at the moment to SIGKILL."""
    a, b = m.a.root, m.b.root
    points = {}
    for s in m.LEAVES:
        points[f"after-start-{s}"] = lambda s=s: _events(m.plan, "start", s)
        points[f"after-done-{s}"] = lambda s=s: _events(m.plan, "done", s)
    points.update({
        "mid-dump": lambda: _size(a / "outbox" / "backup.dump.part") > 0,
        "mid-archive": lambda: _size(a / "outbox" / "public-system.tar.gz.part") > 1 << 20,
        "mid-transfer-dump": lambda: _size(b / "inbox" / "backup.dump.part") > 0,
        "mid-transfer-archive": lambda: _size(b / "inbox" / "public-system.tar.gz.part") > 1 << 20,
        "mid-restore": lambda: _events(m.plan, "start", "6") and "statuses" in m.dst_db.tables(m.dst_db.db),
        "mid-extract": lambda: _count_files(b / "public-system") > 20,
    })
    return points


ALL_POINTS = [f"after-{w}-{s}" for s in Migration.LEAVES for w in ("start", "done")] + [
    "mid-dump", "mid-archive", "mid-transfer-dump", "mid-transfer-archive", "mid-restore", "mid-extract"]
# The suite kills one migration four times, each re-run getting further; the bench kills each point alone.
SUITE_SEQUENCE = ["mid-dump", "mid-transfer-archive", "mid-restore", "mid-extract"]
CASES = [[p] for p in ALL_POINTS] if os.environ.get("MDSL_FAULTS_ALL") else [SUITE_SEQUENCE]


def _kill_at(m: Migration, point: str) -> None:
    """Run apply (nothing to clear after the last kill: its lock is free) and SIGKILL it at `point`."""
    when = kill_points(m)[point]
    run = Apply(m.plan)
    hit = False
    try:
        deadline = time.monotonic() + 120
        while run.running and time.monotonic() < deadline:
            if when():
                run.kill()
                hit = True
                break
            time.sleep(0.002)
        r = run.finish()
    finally:
        if run.running:
            run.kill()
    if not hit:
        pytest.fail(f"the run ended (exit {r.returncode}) before {point}:\n{human(output(r))[-2000:]}")
    assert r.returncode == -9
    print(f"killed at {point}; journal ends {[(e['event'], e.get('step')) for e in journal_events(m.plan)][-3:]}")


@pytest.mark.parametrize("points", CASES, ids=["+".join(c) for c in CASES])
def test_sigkill_then_rerun_converges(migration, points):
    m = migration
    for point in points:
        _kill_at(m, point)
        m.source_is_whole()
    results = m.resume()
    m.converged()
    m.source_is_whole()
    if len(results) > 1:
        print(f"converged after {len(results)} runs; the first said: {human(output(results[0]))[-1500:]}")


# ---------------------------------------------------------------- a step that hangs


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_hung_step_is_stopped_by_its_timeout_and_says_so(ssh_hosts, tmp_path, where):
    marker = f"mdsl-hang-{os.getpid()}-{where}"
    host = ssh_hosts.plan_host_decl("a") if where == "ssh" else "host a { local = true }"
    scratch = ssh_hosts.a.root if where == "ssh" else tmp_path  # where host a and this test both look
    plan = tmp_path / "hang.plan"
    plan.write_text(f'{host}\nsteps {{\n  quick: run a "true"\n  hang: run a "sleep 300; : {marker}" timeout = 2\n'
                    f'  after: run a "touch {scratch}/after"\n}}\n')
    t = time.monotonic()
    r = mdsl("apply", "--yes", str(plan), timeout=60)
    took = time.monotonic() - t
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    assert re.search(r"step 2 .*hang", said) and ("timed out after 2s" in said or "longer than 2s" in said), said
    assert "timeout" in said  # how to give it longer
    assert took < 30, took
    assert not (scratch / "after").exists()
    # the hung command is gone from the host, not left running
    wait_until(lambda: not subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout, 10,
               what="the timed-out command to be stopped")
    ev = [e for e in journal_events(plan) if e.get("step") == "2"]
    assert ev[-1]["event"] == "failed" and ("2s" in ev[-1]["error"])
    assert [e for e in journal_events(plan) if e.get("event") == "done"][0]["step"] == "1"


# ---------------------------------------------------------------- the target goes away during a step


def _big_transfer_plan(ssh_hosts, tmp_path, size=96 << 20) -> tuple:
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "outbox" / "big.bin"
    src.parent.mkdir(parents=True)
    with open(src, "wb") as f:
        for _ in range(size // (8 << 20)):
            f.write(os.urandom(8 << 20))
    dst = b.root / "inbox" / "big.bin"
    plan = render_plan("cut_transfer.plan", tmp_path / "cut.plan", host_a=ssh_hosts.plan_host_decl("a"),
                       host_b=ssh_hosts.plan_host_decl("b"), a_root=str(a.root), b_root=str(b.root))
    return src, dst, plan


def _sha(p: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("how", ["sshd-restart", "reboot"])
def test_target_sshd_restart_or_reboot_mid_transfer(ssh_hosts, tmp_path, how):
    b = ssh_hosts.b
    src, dst, plan = _big_transfer_plan(ssh_hosts, tmp_path)
    want = _sha(src)
    part = dst.with_name(dst.name + ".part")
    run = Apply(plan)
    try:
        wait_until(lambda: _size(part) > 8 << 20 or not run.running, 60, 0.002, "the transfer to get going")
        assert run.running, human(output(run.finish()))
        if how == "sshd-restart":
            b.restart()  # every session dies with the daemon; it is back at once, same port and key
        else:
            b.stop()  # the host is gone for a while...
        r = run.finish(timeout=120)
    finally:
        if run.running:
            run.kill()
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    assert re.search(r"step 2\b.*(transfer|copy)", said) and "host b" in said, said
    assert not dst.exists() and _sha(src) == want
    assert [e["event"] for e in journal_events(plan) if e.get("step") == "2"][-1] == "failed"
    if how == "reboot":
        r2 = mdsl("apply", "--yes", str(plan))  # ...and apply says so instead of hanging
        assert r2.returncode == 1 and "b" in human(output(r2)), output(r2)
        no_traceback(output(r2))
        b.start()
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert "resuming" in r.stdout
    assert _sha(dst) == want and not part.exists()


def test_target_disk_fills_up_mid_transfer(ssh_hosts, tmp_path, request):
    size = 64 << 20
    src, dst, plan = _big_transfer_plan(ssh_hosts, tmp_path, size)
    want = _sha(src)
    b = ssh_hosts.b

    def on_b(*argv: str) -> subprocess.CompletedProcess:
        """argv in host b's mount namespace: the small disk is mounted there only, as on a real machine."""
        return subprocess.run(b.in_namespace(list(argv)), capture_output=True, text=True)

    inbox = dst.parent
    inbox.mkdir(parents=True)
    assert on_b("mount", "-t", "tmpfs", "-o", "size=160m,mode=0755", "mdsl-e2e-full", str(inbox)).returncode == 0
    request.addfinalizer(lambda: on_b("umount", "-l", str(inbox)))
    part = dst.with_name(dst.name + ".part")

    def size_on_b(path: Path) -> int:
        return int(on_b("stat", "-c", "%s", str(path)).stdout.strip() or 0)

    def sha_on_b(path: Path) -> str:
        return on_b("sha256sum", str(path)).stdout.split()[0]

    run = Apply(plan)
    try:
        wait_until(lambda: size_on_b(part) > 0 or not run.running, 60, 0.002, "the transfer to start")
        # another process takes the room the preflight saw
        on_b("dd", "if=/dev/zero", f"of={inbox}/hog", "bs=1M", "count=160")
        r = run.finish(timeout=120)
    finally:
        if run.running:
            run.kill()
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    assert "No space left on device" in said and "host b" in said, said
    assert on_b("test", "-e", str(dst)).returncode == 1 and _sha(src) == want
    assert [e["event"] for e in journal_events(plan) if e.get("step") == "2"][-1] == "failed"
    assert on_b("rm", "--", f"{inbox}/hog").returncode == 0  # the operator frees the space; the same plan finishes
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    assert sha_on_b(dst) == want and on_b("test", "-e", str(part)).returncode == 1


def test_connection_cut_mid_dump_leaves_no_dump_and_a_rerun_finishes(ssh_hosts, pg_source, tmp_path):
    """The cut session's pg_dump goes on on the host (as it would); the re-run stops it, then ends with one
    whole dump."""

    a, b = ssh_hosts.a, ssh_hosts.b
    dump_a, dump_b = a.root / "outbox" / "db.dump", b.root / "inbox" / "db.dump"
    plan = tmp_path / "cutdump.plan"
    plan.write_text(f"""
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
{pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD")}
steps {{
  dump old_db to a:{plan_str(str(dump_a))} format = plain
  transfer a:{plan_str(str(dump_a))} to b:{plan_str(str(dump_b))}
}}
""")
    part = dump_a.with_name(dump_a.name + ".part")
    run = Apply(plan)
    try:
        wait_until(lambda: _size(part) > 0 or not run.running, 60, 0.002, "the dump to start")
        assert run.running, human(output(run.finish()))
        assert a.kill_connections() >= 1
        r = run.finish(timeout=120)
    finally:
        if run.running:
            run.kill()
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    assert "connection lost" in said and "host a" in said and "step 1" in said, said
    assert not dump_b.exists()
    # The orphaned dump is stopped before the step runs again (unless it ended first): one re-run settles it.
    r = mdsl("apply", "--yes", str(plan))
    no_traceback(output(r))
    assert r.returncode == 0, output(r)
    stopped = re.findall(r"stopped `.*` \(pid ([0-9]+) on host a\), left running by the interrupted run", r.stdout)
    print(f"the re-run stopped {len(stopped)} orphaned command(s)")
    assert dump_a.read_bytes() == dump_b.read_bytes()
    tail = dump_b.read_bytes()[-300:]
    assert b"PostgreSQL database dump complete" in tail
    assert not list(a.root.rglob("*.part")) and not list(b.root.rglob("*.part"))


# ---------------------------------------------------------------- what a killed apply leaves running


def _pids_with(marker: str) -> list:
    """Pids whose command line contains `marker` (the wrapper shell of the command under test)."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(d))
            except OSError:
                continue
    return found


def _comms(pids) -> list:
    """The command names of the pids still there."""
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return out


def _tree_refs(pids) -> list:
    """The processes and their descendants, recorded (pid + start time) so a reused pid is never confused."""
    return [REGISTRY.record(p, f"orphan {p}") for pid in pids for p in [pid, *descendants(pid)]]


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_command_a_killed_apply_left_running_is_stopped_before_the_rerun(ssh_hosts, tmp_path, where):
    """SIGKILL mdsl while a step's command runs: the command goes on; the re-run stops it, then finishes."""
    marker = f"mdsl-orphan-{os.getpid()}-{where}"
    host = ssh_hosts.plan_host_decl("a") if where == "ssh" else "host a { local = true }"
    scratch = ssh_hosts.a.root if where == "ssh" else tmp_path  # where host a and this test both look
    once, after = scratch / "once", scratch / "after"
    slow = f": {marker}; test -e {once} || {{ touch {once}; sleep 300; }}"  # long only the first time
    plan = tmp_path / "orphan.plan"
    plan.write_text(f'{host}\nsteps {{\n  first: run a "true"\n  slow: run a {plan_str(slow)}\n'
                    f'  after: run a {plan_str(f"touch {after}")}\n}}\n')
    left: list = []
    run = Apply(plan)
    try:
        wait_until(lambda: _pids_with(marker) or not run.running, 60, what="the slow command to start")
        assert run.running, human(output(run.finish()))
        recorded = wait_until(lambda: [e for e in journal_events(plan) if e.get("event") == "pid"
                                       and e.get("step") == "2"], 10, what="the command's pid in the journal")
        # the shell shows the marker before it has started its sleep: kill mdsl once the sleep runs
        wait_until(lambda: "sleep" in _comms(descendants(recorded[0]["pid"])), 10, what="the command's sleep")
        run.kill()
        assert run.finish().returncode == -9
        leader = recorded[0]["pid"]
        assert re.fullmatch(r"[0-9a-f]{16}", recorded[0]["token"]) and marker in recorded[0]["command"]
        assert _pids_with(marker) == [leader]  # the process group's leader, the wrapper shell
        left = _tree_refs([leader])
        assert len(left) >= 2  # the shell and its sleep
        if where == "ssh":  # the session is gone on the host, and the command is not
            wait_until(lambda: not ssh_hosts.a.connection_pids(), 10, what="sshd to notice the dead client")
        assert all(ref.alive() for ref in left), "the command ended with mdsl: nothing to test"

        assert lock_path(plan).exists()  # no release ran; the kernel dropped the flock
        r = mdsl("apply", "--yes", str(plan))
        text = output(r)
        assert r.returncode == 0, text
        no_traceback(text)
        said = human(text)
        assert re.search(rf"stopped `: {marker}; test -e .*` \(pid {leader} on host a\), left running by the "
                         r"interrupted run", said), said
        assert said.index("stopped `") < said.index("slow: run")  # before the step ran again
        for ref in left:
            assert ref.wait_gone(10), f"{ref.label} still runs"
        assert after.exists() and once.exists()
        reaped = [e for e in journal_events(plan) if e.get("event") == "reaped"]
        assert [e["stopped"] for e in reaped] == [[leader]]
        again = mdsl("apply", "--yes", str(plan))
        assert again.returncode == 0 and "stopped" not in again.stdout, output(again)  # checked once, forgotten
    finally:
        if run.running:
            run.kill()
        for ref in left + _tree_refs(_pids_with(marker)):
            ref.stop(signal.SIGKILL, timeout=5)


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_command_killed_by_a_signal_is_reported_with_the_signal(ssh_hosts, tmp_path, where):
    """sshd's exit-signal (which paramiko ignores) becomes exit 128+N and the signal's name, not "connection lost"."""
    host = ssh_hosts.plan_host_decl("a") if where == "ssh" else "host a { local = true }"
    plan = tmp_path / "signal.plan"
    scratch = ssh_hosts.a.root if where == "ssh" else tmp_path  # where host a and this test both look
    # $$ is the wrapper shell itself (the wrapper exec'd it): the command's whole session dies
    plan.write_text(f'{host}\nsteps {{\n  run a "kill -KILL $$"\n  run a {plan_str(f"touch {scratch}/after")}\n}}\n')
    r = mdsl("apply", "--yes", str(plan))
    text = output(r)
    assert r.returncode == 1, text
    no_traceback(text)
    said = human(text)
    assert "killed by SIGKILL (exit status 137)" in said and re.search(r"step 1\b.*failed on host a", said), said
    assert "connection lost" not in said
    assert not (scratch / "after").exists()
    failed = [e for e in journal_events(plan) if e.get("event") == "failed"]
    assert len(failed) == 1 and "SIGKILL" in failed[0]["error"]
