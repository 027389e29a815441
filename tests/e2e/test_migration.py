"""The issue's scenarios end to end: `mdsl check` / `mdsl apply` as subprocesses against real sshd,
PostgreSQL and a writer service, asserting on the real data afterwards.

Plans are templates in tests/e2e/plans/ (`${name}` placeholders), written into
each test's tmp dir, so the journal (`.mdsl/` beside the plan) is per test.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import random
import re
import stat
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hosts import REGISTRY, FileTree, Writer, free_port, plan_str
from reliability_helpers import human, journal_events, mdsl, output

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PLANS = Path(__file__).resolve().parent / "plans"
OWNER_USER, OWNER_GROUP = "nobody", "nogroup"  # exist on every Debian; differ from the source's root
MiB = 1 << 20


# ---------------------------------------------------------------- helpers


def render_plan(template: str, dest: Path, **values) -> Path:
    """Fill a template from tests/e2e/plans/ and write it as dest (a .plan in the test's tmp dir)."""
    text = string.Template((PLANS / template).read_text()).substitute(values)
    dest.write_text(text)
    return dest


def no_traceback(text: str) -> None:
    """A failure is reported as a message, never as a Python traceback or an internal error."""
    assert "Traceback (most recent call last)" not in text, text
    assert "internal error" not in text, text


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"{what} not met within {timeout}s")


def populate_public_system(root: Path, seed: int = 1) -> None:
    """A Mastodon-like public/system: accounts, media, emojis and a cache/ of remote avatars (random bytes)."""
    rnd = random.Random(seed)
    layout = {
        "accounts/avatars/000/000/001/original": 8,
        "accounts/headers/000/000/001/original": 4,
        "media_attachments/files/109/000/000/original": 20,
        "custom_emojis/images/000/000/007/static": 6,
        "cache/accounts/avatars/110/200/300/original": 60,
        "cache/accounts/headers/110/200/300/original": 30,
        "cache/preview_cards/images/000/001/original": 20,
    }
    for sub, n in layout.items():
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            p = d / f"{hashlib.md5(f'{seed}-{sub}-{i}'.encode()).hexdigest()[:16]}.png"
            p.write_bytes(rnd.randbytes(rnd.randint(200, 24_000)))
            p.chmod(0o644 if i % 3 else 0o640)
    (root / "cache" / "README keep me.txt").write_text("remote avatars: not ephemeral at all\n")


def tree_content(snapshot: dict) -> dict:
    """A FileTree snapshot without owners: {path: (digest, mode)}."""
    return {k: (v[0], v[1]) for k, v in snapshot.items()}


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def owner_ids():
    """(uid, gid) of the declared owner of the target dir and secrets file."""
    return pwd.getpwnam(OWNER_USER).pw_uid, grp.getgrnam(OWNER_GROUP).gr_gid


@pytest.fixture
def new_writer(ssh_hosts, pg_target):
    """The application on b (a writer into the restored database), started by the plan, stopped here."""
    b = ssh_hosts.b
    w = Writer(b.root / "app-run", pg_target.dsn(pg_target.db, "mastodon"), b.root / "app-state",
               table="new_app_events", rate=20, name="new-writer")
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def mounts(ssh_hosts):
    """mount(host, path, options): a tmpfs made in that host's mount namespace (the hosts share no mounts
    with this machine); unmounted (lazily if busy) afterwards."""
    made: list[tuple] = []

    def mount(host, path: Path, options: str) -> None:
        path.mkdir()
        subprocess.run(host.in_namespace(["mount", "-t", "tmpfs", "-o", options, "mdsl-e2e", str(path)]), check=True)
        made.append((host, path))

    yield mount
    for host, m in reversed(made):
        if subprocess.run(host.in_namespace(["umount", str(m)]), capture_output=True).returncode != 0:
            subprocess.run(host.in_namespace(["umount", "-l", str(m)]), capture_output=True)


# ---------------------------------------------------------------- 1. the seed's migration, done right


def test_seed_migration_done_right(ssh_hosts, pg_source, pg_target, writer, new_writer, owner_ids, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    src_files = writer.files_dir
    populate_public_system(src_files)
    env_src = a.root / "live" / ".env.production"
    env_src.parent.mkdir(parents=True)
    secret_text = ("LOCAL_DOMAIN=m.example.social\nSECRET_KEY_BASE=" + os.urandom(32).hex()
                   + "\nOTP_SECRET=" + os.urandom(32).hex() + "\n")
    env_src.write_text(secret_text)
    env_src.chmod(0o600)
    (b.root / "public-system").mkdir()  # the empty dir the new machine provides

    writer.start()
    wait_until(lambda: len(writer.files()) >= 10, what="writer wrote files")

    plan = render_plan(
        "seed_done_right.plan", tmp_path / "seed.plan",
        host_a=ssh_hosts.plan_host_decl("a"), host_b=ssh_hosts.plan_host_decl("b"),
        old_db=pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD"),
        new_db=pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True),
        a_root=str(a.root), b_root=str(b.root), owner=f"{OWNER_USER}:{OWNER_GROUP}",
        old_start=plan_str(writer.start_cmd), old_stop=plan_str(writer.stop_cmd),
        old_status=plan_str(writer.status_cmd),
        new_start=plan_str(new_writer.start_cmd), new_stop=plan_str(new_writer.stop_cmd),
        new_status=plan_str(new_writer.status_cmd),
        verify_cmd=plan_str(f"{new_writer.status_cmd} && test -s {b.root}/public-system/cache/README\\ keep\\ me.txt"),
    )

    chk = mdsl("check", str(plan))
    assert chk.returncode == 0, output(chk)
    assert not re.search(r"\b(error|warning)\[", chk.stdout), output(chk)

    r = mdsl("apply", "--yes", str(plan))
    new_writer.track()
    writer.track()
    assert r.returncode == 0, output(r)
    no_traceback(output(r))

    # services: the old one stopped, the new one runs (stopped by the new_writer fixture)
    assert writer.status() == 3, "old writer still runs"
    assert new_writer.status() == 0, "new service is not running"

    # database: every source table, row for row (the writer's rows included, it stopped first)
    src_sum = pg_source.table_checksum(pg_source.db)
    dst_sum = pg_target.table_checksum(pg_target.db)
    assert src_sum["writer_events"].rows == len(writer.files()) > 0
    assert {k: v for k, v in dst_sum.items() if k != "new_app_events"} == src_sum
    assert {k: v for k, v in pg_target.sequences(pg_target.db).items() if not k.startswith("new_app")} \
        == pg_source.sequences(pg_source.db)
    # the new service really runs against the restored database
    wait_until(lambda: pg_target.row_counts(pg_target.db).get("new_app_events", 0) > 0, 15,
               what="new service writes into the restored db")

    # files: same content and modes, cache/ included, owned by the declared owner
    before = FileTree.snapshot(src_files)
    after = FileTree.snapshot(b.root / "public-system")
    assert any(k.startswith("cache/") for k in before)
    diff = FileTree.diff(tree_content(before), tree_content(after))
    assert diff == {"only_a": [], "only_b": [], "changed": []}, diff
    uid, gid = owner_ids
    wrong = {k: v[2:] for k, v in after.items() if v[2:] != (uid, gid)}
    assert not wrong, f"not owned by {OWNER_USER}:{OWNER_GROUP}: {sorted(wrong.items())[:5]}"
    top = (b.root / "public-system").stat()
    assert (top.st_uid, top.st_gid) == (uid, gid)

    # the secrets file: same bytes, 0600, the declared owner; its content never in the output or the journal
    env_dst = b.root / "live" / ".env.production"
    assert env_dst.read_bytes() == env_src.read_bytes()
    st = env_dst.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (uid, gid)
    secret_value = secret_text.split("SECRET_KEY_BASE=")[1].split("\n")[0]
    assert secret_value not in output(r)
    jtext = "".join(json.dumps(e) for e in journal_events(plan))
    assert secret_value not in jtext and jtext

    # no .part left anywhere
    parts = [p for root in (a.root, b.root) for p in root.rglob("*.part")]
    assert parts == []

    # the journal knows it is done: status says so, a second apply changes nothing
    st = mdsl("status", str(plan))
    assert st.returncode == 0, output(st)
    assert "10 done, 0 failed, 0 pending" in st.stdout, st.stdout
    again = mdsl("apply", "--yes", str(plan))
    assert again.returncode == 0 and "nothing to do" in again.stdout, output(again)
    assert new_writer.status() == 0


# ---------------------------------------------------------------- 2. a torn dump


def _torn_plan(tmp_path, ssh_hosts, pg_source, pg_target, writer, allow: str) -> Path:
    return render_plan(
        "torn_dump.plan", tmp_path / "torn.plan",
        host_a=ssh_hosts.plan_host_decl("a"), host_b=ssh_hosts.plan_host_decl("b"),
        old_db=pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD"),
        new_db=pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True),
        start=plan_str(writer.start_cmd), stop=plan_str(writer.stop_cmd), status=plan_str(writer.status_cmd),
        a_root=str(ssh_hosts.a.root), b_root=str(ssh_hosts.b.root), allow=allow,
    )


def test_torn_dump_is_refused_and_really_torn_when_allowed(ssh_hosts, pg_source, pg_target, writer, tmp_path):
    a = ssh_hosts.a
    dump = a.root / "outbox" / "live.dump"
    writer.start()
    pid = writer.pid
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote files")

    plan = _torn_plan(tmp_path, ssh_hosts, pg_source, pg_target, writer, allow="")
    chk = mdsl("check", str(plan))
    assert chk.returncode == 1, output(chk)
    assert "H201" in chk.stdout, output(chk)
    assert "old_db" in chk.stdout

    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode != 0, output(r)
    no_traceback(output(r))
    assert "H201" in output(r)
    # nothing changed: the writer still runs (the same process), no dump, no journal
    assert writer.status() == 0 and writer.pid == pid
    assert not dump.exists() and not list(a.root.rglob("*.part"))
    assert pg_target.tables(pg_target.db) == []
    assert journal_events(plan) == []

    # with a reasoned suppression it runs; the writer keeps writing during and after the dump
    plan = _torn_plan(tmp_path, ssh_hosts, pg_source, pg_target, writer,
                      allow='# mdsl: allow H201 "e2e: prove that a dump of a running writer misses its later rows"')
    chk = mdsl("check", str(plan))
    assert chk.returncode == 0, output(chk)
    r = mdsl("apply", "--yes", str(plan))
    assert r.returncode == 0, output(r)
    no_traceback(output(r))
    assert dump.exists()
    assert writer.status() == 0 and writer.pid == pid
    at_restore = pg_target.row_counts(pg_target.db)["writer_events"]
    wait_until(lambda: pg_source.row_counts(pg_source.db)["writer_events"] > at_restore + 5,
               what="writer goes on after the restore")
    writer.stop()

    src, dst = pg_source.table_checksum(pg_source.db), pg_target.table_checksum(pg_target.db)
    # the data set the writer does not touch made it whole...
    assert {k: v for k, v in dst.items() if k != "writer_events"} == \
        {k: v for k, v in src.items() if k != "writer_events"}
    # ...but the rows written after the dump are missing on the target: the copy is not the final state
    assert dst["writer_events"].rows < src["writer_events"].rows == len(writer.files())
    assert dst["writer_events"] != src["writer_events"]
    missing = int(pg_source.psql("select count(*) from writer_events where seq > "
                                 f"{int(pg_target.psql('select coalesce(max(seq), 0) from writer_events', db=pg_target.db))}",
                                 db=pg_source.db))
    assert missing == src["writer_events"].rows - dst["writer_events"].rows > 0


# ---------------------------------------------------------------- 3. a cut connection mid-transfer


BIG = 256 * MiB


def _write_random(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    chunk = 8 * MiB
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(chunk, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    return h.hexdigest()


def _apply_and_cut(ssh_hosts, plan: Path, part: Path, host: str, at_least: int) -> tuple[int, subprocess.CompletedProcess]:
    """Start `mdsl apply`, cut host's SSH connections once PATH.part holds at_least bytes; returns (cut at, result)."""
    proc = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ref = REGISTRY.record(proc.pid, "mdsl apply (cut test)")
    try:
        def partway():
            try:
                return part.stat().st_size >= at_least
            except FileNotFoundError:
                return proc.poll() is not None
        try:
            wait_until(partway, 60, 0.002, "the transfer to get under way")
        except AssertionError:
            size = part.stat().st_size if part.exists() else None
            ref.stop()
            out, err = proc.communicate()
            raise AssertionError(f"apply neither got {at_least} bytes across nor ended within 60s "
                                 f"(.part: {size} bytes); it was stopped. Its output:\n{human(out + err)}") from None
        assert proc.poll() is None, "the transfer finished before the connection could be cut:\n" + \
            "".join(proc.communicate())
        cut_at = part.stat().st_size
        assert ssh_hosts[host].kill_connections() >= 1
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            ref.stop()
    ssh_hosts[host].reap_orphans()  # what the cut connection was running (the cut `cat`)
    return cut_at, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("cut", ["b", "a"], ids=["cut-target", "cut-source"])
def test_cut_connection_mid_transfer_resumes(ssh_hosts, tmp_path, cut):
    a, b = ssh_hosts.a, ssh_hosts.b
    src = a.root / "outbox" / "big.bin"
    dst = b.root / "inbox" / "big.bin"
    part = dst.with_name(dst.name + ".part")
    want = _write_random(src, BIG)
    plan = render_plan("cut_transfer.plan", tmp_path / "cut.plan", host_a=ssh_hosts.plan_host_decl("a"),
                       host_b=ssh_hosts.plan_host_decl("b"), a_root=str(a.root), b_root=str(b.root))
    chk = mdsl("check", str(plan))
    assert chk.returncode == 0, output(chk)

    # cut the connection three times, each run getting further: every failure must be clean
    cuts = []
    for n, fraction in enumerate((0.2, 0.45, 0.7)):
        cut_at, r = _apply_and_cut(ssh_hosts, plan, part, cut, int(BIG * fraction))
        cuts.append(cut_at)
        text = output(r)
        assert r.returncode not in (0, None), text
        no_traceback(text)
        said = human(r.stderr)
        assert re.search(r"step 2\b.*transfer big_src to big_dst", said), said
        assert f"host {cut}" in said or f"`{cut}`" in said, said
        if n:
            assert "resuming" in r.stdout, r.stdout
        assert sha256_file(src) == want  # the source is intact
        assert not dst.exists()  # nothing half-copied in place
        assert cut_at < BIG
        st = mdsl("status", str(plan))
        assert re.search(r"\[1\] done .*prepare", st.stdout), st.stdout
        assert re.search(r"\[2\] (failed|pending)", st.stdout), st.stdout
        assert st.returncode == (1 if re.search(r"\[2\] failed", st.stdout) else 0), output(st)  # 1: a step failed

    r = mdsl("apply", "--yes", str(plan), timeout=180)
    assert r.returncode == 0, output(r)
    no_traceback(output(r))
    assert "resuming" in r.stdout, r.stdout
    # step 1 is not run again, step 2 completes, the copy is the source byte for byte
    assert (a.root / "prepare.log").read_text() == "prepared\n"
    assert sha256_file(dst) == want == sha256_file(src)
    assert not part.exists()
    assert not list(b.root.rglob("*.part"))
    starts = [e["step"] for e in journal_events(plan) if e.get("event") == "start"]
    assert starts.count("1") == 1 and starts.count("2") == 4 and starts.count("3") == 1, starts
    st = mdsl("status", str(plan))
    assert "3 done, 0 failed, 0 pending" in st.stdout, st.stdout
    # a broken stream resumes: the last run sends the rest, not the whole file again
    moved = [e.get("bytes") for e in journal_events(plan) if e.get("event") == "done" and e.get("step") == "2"]
    assert moved and moved[-1] < BIG, f"the last run sent {moved[-1]} of {BIG} bytes (cut at {cuts})"


# ---------------------------------------------------------------- 4. preflight catches, before anything is stopped


PREFLIGHT_CASES = ["ok", "unreachable-host", "wrong-db-password", "missing-pg-restore", "target-not-writable",
                   "too-little-space"]


@pytest.mark.parametrize("case", PREFLIGHT_CASES)
def test_preflight_catches_before_anything_is_stopped(case, ssh_hosts, pg_source, pg_target, writer, mounts,
                                                      tmp_path, monkeypatch):
    a, b = ssh_hosts.a, ssh_hosts.b
    inbox = b.root / "inbox"
    host_b = ssh_hosts.plan_host_decl("b")
    new_db = pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True)
    code, host, fix, must_name = None, "b", None, None
    if case == "unreachable-host":
        port = free_port(b.address)
        host_b = host_b.replace(f"port = {b.port}", f"port = {port}")
        code, fix = "P401", None
    elif case == "wrong-db-password":
        monkeypatch.setenv("MDSL_E2E_TARGET_PASSWORD", "not-the-password")
        code, fix = "P406", "password"
    elif case == "missing-pg-restore":
        head, _, _ = new_db.rpartition("}")
        new_db = head + '  bin      = "/nonexistent/postgresql/bin"\n}'
        code, fix = "P402", "bin"
        must_name = "pg_restore"
    elif case == "target-not-writable":
        inbox = b.root / "readonly"
        mounts(b, inbox, "ro,size=1g,mode=0755")
        code, fix = "P407", None
    elif case == "too-little-space":
        inbox = b.root / "small"
        mounts(b, inbox, "size=1m,mode=0755")
        code, fix = "P404", None

    plan = render_plan(
        "preflight.plan", tmp_path / "preflight.plan",
        host_a=ssh_hosts.plan_host_decl("a"), host_b=host_b,
        old_db=pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD"), new_db=new_db,
        start=plan_str(writer.start_cmd), stop=plan_str(writer.stop_cmd), status=plan_str(writer.status_cmd),
        a_root=str(a.root), inbox=str(inbox),
    )
    chk = mdsl("check", str(plan))
    assert chk.returncode == 0, output(chk)  # the plan itself is fine: only the hosts are not
    writer.start()
    pid = writer.pid
    before_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if "public-system" not in p.parts)
    before_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*"))

    if case == "ok":
        r = mdsl("apply", "--dry-run", str(plan))
        assert r.returncode == 0, output(r)
        assert not re.search(r"P4\d\d", output(r)), output(r)
    else:
        r = mdsl("apply", "--yes", str(plan))
        text = output(r)
        assert r.returncode != 0, text
        no_traceback(text)
        assert code in text, f"expected {code}:\n{text}"
        # the host is named in the message, or in the quoted declaration (`postgres new_db on b {`)
        assert re.search(rf"`{host}`|\bhost {host}\b|\bon {host} \{{", text), text
        assert "help:" in text, text
        if fix:
            m = re.search(r"help:.*", text[text.index(code):])
            assert m and fix in m.group(0), text
        if must_name:
            assert must_name in text, text
    print(f"--- {case}:\n{human(output(r))}")
    # nothing was stopped or created
    assert writer.status() == 0 and writer.pid == pid, "the service was stopped"
    assert sorted(p.relative_to(a.root) for p in a.root.rglob("*") if "public-system" not in p.parts) == before_a
    assert sorted(p.relative_to(b.root) for p in b.root.rglob("*")) == before_b
    assert not any(e.get("event") == "start" for e in journal_events(plan))
    assert pg_target.tables(pg_target.db) == []


# ---------------------------------------------------------------- 5. two applies at once, and a killed one's lock


def _lock_file(plan: Path) -> Path:
    return plan.parent / ".mdsl" / (plan.name[:-5] + ".lock")


def test_second_apply_is_refused_while_the_first_runs(ssh_hosts, tmp_path):
    a = ssh_hosts.a
    plan = render_plan("lock.plan", tmp_path / "lock.plan", host_a=ssh_hosts.plan_host_decl("a"),
                       a_root=str(a.root), sleep="6")
    log = a.root / "lock-test.log"
    first = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], cwd=REPO,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ref = REGISTRY.record(first.pid, "mdsl apply (first)")
    try:
        wait_until(lambda: any(e.get("event") == "start" and e.get("step") == "1" for e in journal_events(plan))
                   or first.poll() is not None, 30, what="the first apply to begin its first step")
        assert first.poll() is None, "".join(first.communicate())
        assert _lock_file(plan).exists()
        second = mdsl("apply", "--yes", str(plan), timeout=60)
        assert first.poll() is None, "the first apply ended before the second was tried"
        text = output(second)
        assert second.returncode != 0, text
        no_traceback(text)
        assert re.search(rf"\bpid {first.pid}\b", text), text
        assert "another apply" in text or "locked" in text, text
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            ref.stop()
    assert first.returncode == 0, out + err
    assert log.read_text() == "ran\n"  # the second step ran once, by the first apply
    assert not _lock_file(plan).exists()
    runs = [e for e in journal_events(plan) if e.get("event") == "run"]
    assert len(runs) == 1 and runs[0]["pid"] == first.pid


def test_a_lock_left_by_a_killed_apply_does_not_block_the_next(ssh_hosts, tmp_path):
    a = ssh_hosts.a
    plan = render_plan("lock.plan", tmp_path / "lock.plan", host_a=ssh_hosts.plan_host_decl("a"),
                       a_root=str(a.root), sleep="30")
    first = subprocess.Popen([sys.executable, "-m", "mdsl", "apply", "--yes", str(plan)], cwd=REPO,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref = REGISTRY.record(first.pid, "mdsl apply (killed)")
    try:
        wait_until(lambda: any(e.get("event") == "start" and e.get("step") == "1" for e in journal_events(plan))
                   or first.poll() is not None, 30, what="the first apply to begin its first step")
        assert first.poll() is None
        first.kill()  # SIGKILL: no release, the lock file stays, the kernel drops the flock
        first.wait()
    finally:
        if first.poll() is None:
            ref.stop()
    assert _lock_file(plan).exists()
    r = mdsl("apply", "--yes", str(plan), timeout=120)
    text = output(r)
    no_traceback(text)
    assert r.returncode == 0, text
    assert f"previous apply of this plan (pid {first.pid}" in text, text
    assert "stopped" in text, text  # the killed run's remote `sleep` was stopped before the re-run
    assert (a.root / "lock-test.log").read_text() == "ran\n"
    assert not _lock_file(plan).exists()
