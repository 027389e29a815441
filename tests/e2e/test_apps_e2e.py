"""Apps named in their plans, moved for real between the sshd test hosts with a live writer: the
plan the profile accepts moves everything (secrets included, 0600), runs the app's own commands
on the new host, and the plan the profile rejects (a secret not copied, hooks not regenerated) is
refused by `mdsl apply` before anything is stopped.

The test hosts share one file system, so each host's layout sits under its root (a's
/home/mastodon/live is `a.root/home/mastodon/live`); the app's commands (`mastodon-tootctl`,
`gitea`) are stand-in scripts on b that record how they were called.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from conftest import APP_USER
from hosts import FileTree, Writer, plan_str
from reliability_helpers import mdsl, no_traceback, output
from test_migration import populate_public_system, render_plan, tree_content, wait_until

pytestmark = pytest.mark.e2e

OWNER_USER, OWNER_GROUP = "nobody", "nogroup"


def _stand_in(path: Path, record: Path) -> str:
    """An executable that appends its arguments to `record`: the app's CLI on host b."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def app_writers(pg_source, pg_target, ssh_hosts, request):
    """The app on a (writing into its data dir, given by the test) and on b (writing into the restored db)."""
    made = []

    def make(files_dir: Path, new: bool = False) -> Writer:
        if new:
            w = Writer(ssh_hosts.b.root / "app-run", pg_target.dsn(pg_target.db, "mastodon"),
                       ssh_hosts.b.root / "app-state", table="new_app_events", rate=20, name="new-writer")
        else:
            w = Writer(ssh_hosts.a.root / "run", pg_source.dsn(pg_source.db, APP_USER), files_dir)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()


def _values(ssh_hosts, pg_source, pg_target, old: Writer, new: Writer, **more) -> dict:
    return dict(
        host_a=ssh_hosts.plan_host_decl("a"), host_b=ssh_hosts.plan_host_decl("b"),
        old_db=pg_source.plan_decl("old_db", "a", password_env="MDSL_E2E_SOURCE_PASSWORD"),
        new_db=pg_target.plan_decl("new_db", "b", password_env="MDSL_E2E_TARGET_PASSWORD", fresh=True),
        a_root=str(ssh_hosts.a.root), b_root=str(ssh_hosts.b.root), owner=f"{OWNER_USER}:{OWNER_GROUP}",
        old_start=plan_str(old.start_cmd), old_stop=plan_str(old.stop_cmd), old_status=plan_str(old.status_cmd),
        new_start=plan_str(new.start_cmd), new_stop=plan_str(new.stop_cmd), new_status=plan_str(new.status_cmd),
        verify_cmd=plan_str(new.status_cmd), **more)


def _owned(path: Path) -> tuple:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_mastodon_source_install_to_the_nixos_layout(ssh_hosts, pg_source, pg_target, app_writers, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    system = a.root / "home" / "mastodon" / "live" / "public" / "system"
    old, new = app_writers(system), app_writers(None, new=True)
    populate_public_system(system)
    env_src = system.parent.parent / ".env.production"
    secret = os.urandom(32).hex()
    env_src.write_text(f"LOCAL_DOMAIN=m.example.social\nSECRET_KEY_BASE={secret}\nOTP_SECRET={os.urandom(32).hex()}\n")
    env_src.chmod(0o600)
    (b.root / "var" / "lib" / "mastodon" / "public-system").mkdir(parents=True)
    record = b.root / "tootctl.calls"
    tootctl = _stand_in(b.root / "bin" / "mastodon-tootctl", record)
    old.start()
    wait_until(lambda: len(old.files()) >= 10, what="the app on a wrote files")

    # The hand-edited plan without the secrets copy: A101, refused before anything stops.
    bad = render_plan("mastodon_app.plan", tmp_path / "bad.plan", env_copy="",
                      feeds_build=plan_str(f"{tootctl} feeds build"),
                      **_values(ssh_hosts, pg_source, pg_target, old, new))
    chk = mdsl("check", str(bad))
    assert chk.returncode == 1 and "error[A101]" in chk.stdout, output(chk)
    assert "SECRET_KEY_BASE" in chk.stdout and "two-factor" in chk.stdout
    pid = old.pid
    r = mdsl("apply", "--yes", str(bad))
    assert r.returncode != 0 and "A101" in output(r), output(r)
    no_traceback(output(r))
    assert old.status() == 0 and old.pid == pid, "the app on a was stopped by a refused plan"
    assert not (b.root / "var" / "lib" / "mastodon" / "secrets").exists()
    assert not record.exists()

    plan = render_plan("mastodon_app.plan", tmp_path / "mastodon.plan", env_copy="  transfer old_env to new_env",
                       feeds_build=plan_str(f"{tootctl} feeds build"),
                       **_values(ssh_hosts, pg_source, pg_target, old, new))
    chk = mdsl("check", str(plan))
    assert chk.returncode == 0 and "error[" not in chk.stdout and "warning[" not in chk.stdout, output(chk)
    r = mdsl("apply", "--yes", str(plan))
    old.track()
    new.track()
    assert r.returncode == 0, output(r)
    no_traceback(output(r))

    assert old.status() == 3 and new.status() == 0
    src, dst = pg_source.table_checksum(pg_source.db), pg_target.table_checksum(pg_target.db)
    assert src["writer_events"].rows == len(old.files()) > 0
    assert {k: v for k, v in dst.items() if k != "new_app_events"} == src
    after = FileTree.snapshot(b.root / "var" / "lib" / "mastodon" / "public-system")
    before = FileTree.snapshot(system)
    assert any(k.startswith("cache/") for k in before)  # the remote avatars the seed lost came along
    assert FileTree.diff(tree_content(before), tree_content(after)) == {"only_a": [], "only_b": [], "changed": []}
    env_dst = b.root / "var" / "lib" / "mastodon" / "secrets" / "env.production"
    assert env_dst.read_bytes() == env_src.read_bytes()
    uid, gid = pwd.getpwnam(OWNER_USER).pw_uid, grp.getgrnam(OWNER_GROUP).gr_gid
    assert _owned(env_dst) == (uid, gid, 0o600)
    assert secret not in output(r)
    # the command the profile asks for ran on b, after the restore
    assert record.read_text().split("\n")[0] == "feeds build"


def test_gitea_binary_move_with_a_live_writer(ssh_hosts, pg_source, pg_target, app_writers, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    repos = a.root / "var" / "lib" / "gitea" / "data" / "gitea-repositories"
    old, new = app_writers(repos), app_writers(None, new=True)
    files = a.root / "var" / "lib" / "gitea" / "data" / "files"
    (files / "attachments" / "a" / "b").mkdir(parents=True)
    (files / "attachments" / "a" / "b" / "ab0123").write_bytes(os.urandom(4096))
    (files / "avatars").mkdir()
    (files / "avatars" / "1").write_bytes(os.urandom(512))
    ini = a.root / "etc" / "gitea" / "app.ini"
    ini.parent.mkdir(parents=True)
    key = os.urandom(24).hex()
    ini.write_text(f"[security]\nSECRET_KEY = {key}\nINTERNAL_TOKEN = {os.urandom(24).hex()}\n")
    ini.chmod(0o640)
    (b.root / "var" / "lib" / "gitea" / "data").mkdir(parents=True)  # what installing Gitea on b made
    record = b.root / "gitea.calls"
    gitea = _stand_in(b.root / "bin" / "gitea", record)
    hooks = f'  run b {plan_str(f"{gitea} admin regenerate hooks --config {b.root}/etc/gitea/app.ini")}' \
            " reads = [new_ini] writes = [new_repos]"
    old.start()
    wait_until(lambda: len(old.files()) >= 10, what="the app on a wrote files")

    # Without the hook regeneration: A104, a warning: without --yes and a terminal, apply refuses.
    bad = render_plan("gitea_app.plan", tmp_path / "bad.plan", hooks="",
                      **_values(ssh_hosts, pg_source, pg_target, old, new))
    chk = mdsl("check", str(bad))
    assert chk.returncode == 1 and "warning[A104]" in chk.stdout and "push" in chk.stdout, output(chk)
    pid = old.pid
    r = mdsl("apply", str(bad))
    assert r.returncode != 0 and "A104" in output(r), output(r)
    assert old.status() == 0 and old.pid == pid
    assert not any((b.root / "var" / "lib" / "gitea" / "data").iterdir())

    plan = render_plan("gitea_app.plan", tmp_path / "gitea.plan", hooks=hooks,
                       **_values(ssh_hosts, pg_source, pg_target, old, new))
    chk = mdsl("check", str(plan))
    assert chk.returncode == 0 and "error[" not in chk.stdout and "warning[" not in chk.stdout, output(chk)
    r = mdsl("apply", "--yes", str(plan))
    old.track()
    new.track()
    assert r.returncode == 0, output(r)
    no_traceback(output(r))

    assert old.status() == 3 and new.status() == 0
    src, dst = pg_source.table_checksum(pg_source.db), pg_target.table_checksum(pg_target.db)
    # every row the writer wrote while the repositories were pre-synced, and after, is there
    assert src["writer_events"].rows == len(old.files()) > 0
    assert {k: v for k, v in dst.items() if k != "new_app_events"} == src
    for here, there in ((repos, b.root / "var" / "lib" / "gitea" / "data" / "gitea-repositories"),
                        (files, b.root / "var" / "lib" / "gitea" / "data" / "files")):
        diff = FileTree.diff(tree_content(FileTree.snapshot(here)), tree_content(FileTree.snapshot(there)))
        assert diff == {"only_a": [], "only_b": [], "changed": []}, (here, diff)
    ini_dst = b.root / "etc" / "gitea" / "app.ini"
    assert ini_dst.read_bytes() == ini.read_bytes()
    uid, gid = pwd.getpwnam(OWNER_USER).pw_uid, grp.getgrnam(OWNER_GROUP).gr_gid
    assert _owned(ini_dst) == (uid, gid, 0o640)
    assert key not in output(r)
    assert record.read_text().strip() == f"admin regenerate hooks --config {b.root}/etc/gitea/app.ini"
