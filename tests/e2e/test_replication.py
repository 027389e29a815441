"""`replicate DB to DB live` and its final pass end to end: two PostgreSQL clusters (the source with
`wal_level = logical`), two sshd hosts, the replication carried by mdsl's own SSH tunnel, and the
writer service inserting rows (and using its identity sequence) until the plan stops it. Afterwards
the target equals the source, every table's rows and every sequence, and nothing of the
replication is left: no slot, publication or subscription. A run killed while the live pass copies
leaves a slot behind; the next apply removes it and ends with none."""

from __future__ import annotations

import secrets

import pytest

from hosts import PgCluster, plan_str
from reliability_helpers import Apply, human, mdsl, no_traceback, output, wait_until

pytestmark = pytest.mark.e2e

REPLICA_DB = "mastodon_replica"
PASSWORD_ENV = "MDSL_E2E_REPL_PASSWORD"


@pytest.fixture
def logical_source(pg_source: PgCluster, monkeypatch) -> PgCluster:
    """The source cluster restarted with `wal_level = logical`, its superuser given a password (the
    subscription logs in over TCP, through the tunnel, as the source's declared login)."""
    pg_source.extra_conf = "wal_level = logical\n"
    pg_source.restart()
    password = secrets.token_urlsafe(12)
    pg_source.psql(f"alter role postgres password '{password}';")
    monkeypatch.setenv(PASSWORD_ENV, password)
    return pg_source


def _plan(tmp_path, ssh_hosts, src: PgCluster, dst: PgCluster, writer, steps: str, name: str = "repl"):
    plan = tmp_path / f"{name}.plan"
    plan.write_text(f"""
plan "replicate while the app runs"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
postgres old_db on a {{ database = {plan_str(src.db)}  user = "postgres"  tcp = {plan_str(src.tcp)}
                        password = env({plan_str(PASSWORD_ENV)}) }}
postgres new_db on b {{ database = {plan_str(REPLICA_DB)}  user = "postgres"  socket = {plan_str(str(dst.sockdir))}
                        port = {dst.port} }}
{writer.plan_decl("old_app", "a", writes=["old_db"])}
steps {{
{steps}
}}
""")
    return plan


STEPS = """  replicate old_db to new_db live  port = {port}
  # mdsl: allow H301 "e2e: only the database moves; the writer is not started anywhere else"
  stop old_app
  replicate old_db to new_db  port = {port}"""


def _leftovers(src: PgCluster, dst: PgCluster) -> dict:
    return {
        "slots": src.psql("select slot_name from pg_replication_slots"),
        "publications": src.psql("select pubname from pg_publication", db=src.db),
        "subscriptions": dst.psql("select subname from pg_subscription"),
    }


def _assert_equal(src: PgCluster, dst: PgCluster) -> None:
    assert dst.table_checksum(REPLICA_DB) == src.table_checksum(src.db)
    assert dst.sequences(REPLICA_DB) == src.sequences(src.db)


def test_replicate_live_then_final_pass_leaves_an_equal_database(ssh_hosts, logical_source, pg_target, writer,
                                                                 tmp_path):
    from hosts import free_port
    src, dst = logical_source, pg_target
    writer.start()  # creates its table: a table must exist before the live pass publishes the tables
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote rows")
    plan = _plan(tmp_path, ssh_hosts, src, dst, writer, STEPS.format(port=free_port()))
    r = mdsl("check", str(plan))
    assert r.returncode == 0, output(r)
    rows_before = src.row_counts(src.db)["writer_events"]

    r = mdsl("apply", "--yes", str(plan), timeout=600)
    no_traceback(output(r))
    assert r.returncode == 0, human(output(r))

    assert not writer.running
    rows = src.row_counts(src.db)["writer_events"]
    assert rows > rows_before  # the writer ran on while the live pass copied
    _assert_equal(src, dst)
    # the identity sequence moved: the next id on the target follows the source's last one
    assert dst.sequences(REPLICA_DB)["writer_events_id_seq"] == src.sequences(src.db)["writer_events_id_seq"] > 0
    assert _leftovers(src, dst) == {"slots": "", "publications": "", "subscriptions": ""}
    # the target no longer carries the mark of a replica being filled
    assert dst.psql(f"select coalesce(shobj_description(oid, 'pg_database'), '') from pg_database "
                    f"where datname = '{REPLICA_DB}'") == ""


def test_kill_during_the_live_pass_then_apply_again_leaves_no_slot(ssh_hosts, logical_source, pg_target, writer,
                                                                   tmp_path):
    from hosts import free_port
    src, dst = logical_source, pg_target
    # a large table keeps the initial copy busy long enough to kill mdsl in the middle of it
    src.psql("create table big (id bigint primary key, pad text); "
             "insert into big select g, repeat('x', 200) from generate_series(1, 400000) g;", db=src.db)
    writer.start()
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote rows")
    plan = _plan(tmp_path, ssh_hosts, src, dst, writer, STEPS.format(port=free_port()), name="killed")

    run = Apply(plan)
    try:
        wait_until(lambda: src.psql("select count(*) from pg_replication_slots where slot_name like 'mdsl_%'") == "1"
                   or not run.running, timeout=120, step=0.05, what="the live pass made its slot")
        assert run.running, human(output(run.finish()))
        run.kill()
        run.finish()
    finally:
        run.ref.stop()
    # killed: the slot is still there (the target's subscription goes on retrying without the tunnel)
    assert src.psql("select count(*) from pg_replication_slots") != "0"

    r = mdsl("apply", "--yes", str(plan), timeout=600)
    no_traceback(output(r))
    assert r.returncode == 0, human(output(r))
    _assert_equal(src, dst)
    assert _leftovers(src, dst) == {"slots": "", "publications": "", "subscriptions": ""}


def test_preflight_refuses_what_replication_cannot_do_before_anything_changes(ssh_hosts, pg_source, pg_target,
                                                                               writer, tmp_path, monkeypatch):
    from hosts import free_port
    src, dst = pg_source, pg_target  # the source left at the default wal_level = replica
    password = secrets.token_urlsafe(12)
    src.psql(f"alter role postgres password '{password}';")
    monkeypatch.setenv(PASSWORD_ENV, password)
    src.psql("create table keyless (a int, b text);", db=src.db)
    plan = _plan(tmp_path, ssh_hosts, src, dst, writer, STEPS.format(port=free_port()), name="refused")

    r = mdsl("apply", "--yes", str(plan), timeout=300)
    no_traceback(output(r))
    text = human(output(r))
    assert r.returncode != 0, text
    assert "P413" in text and "wal_level = replica" in text and "restart" in text, text
    assert "public.keyless" in text and "replica_identity = full" in text, text
    # nothing changed: no target database, no publication, no slot
    assert dst.psql(f"select count(*) from pg_database where datname = '{REPLICA_DB}'") == "0"
    assert _leftovers(src, dst) == {"slots": "", "publications": "", "subscriptions": ""}


def _plan_held_at_a_gate(tmp_path, ssh_hosts, src: PgCluster, dst: PgCluster, writer, name: str):
    """The writer running, and a plan whose `run` step between the stop and the final pass fails until the
    gate file exists: a first run ends after the live pass, a second one (gate written) finishes."""
    from hosts import free_port
    writer.start()
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote rows")
    gate = ssh_hosts.a.root / "go-on"  # the run step reads it on host a, which has its own /tmp
    port = free_port()
    steps = (f"  replicate old_db to new_db live  port = {port}\n"
             '  # mdsl: allow H301 "e2e: only the database moves; the writer is not started anywhere else"\n'
             f"  stop old_app\n  run a {plan_str('test -e ' + str(gate))}\n"
             f"  replicate old_db to new_db  port = {port}")
    return _plan(tmp_path, ssh_hosts, src, dst, writer, steps, name=name), gate


def test_final_pass_in_a_later_run_reopens_the_tunnel_and_catches_up(ssh_hosts, logical_source, pg_target, writer,
                                                                     tmp_path):
    """The first run ends after the live pass (a step fails), closing the tunnel: the subscription's worker
    loses its connection and retries. Rows written meanwhile reach the target once the next run's final pass
    has opened the tunnel again on the same port."""
    src, dst = logical_source, pg_target
    plan, gate = _plan_held_at_a_gate(tmp_path, ssh_hosts, src, dst, writer, name="resumed")
    r = mdsl("apply", "--yes", str(plan), timeout=600)
    assert r.returncode != 0 and "step 3" in human(output(r)), human(output(r))
    src.psql("insert into writer_events (seq, file, payload) select 1000000 + g, 'between', '{}' "
             "from generate_series(1, 500) g;", db=src.db)
    gate.write_text("")

    r = mdsl("apply", "--yes", str(plan), timeout=600)
    no_traceback(output(r))
    assert r.returncode == 0, human(output(r))
    _assert_equal(src, dst)
    assert dst.psql("select count(*) from writer_events where file = 'between'", db=REPLICA_DB) == "500"
    assert _leftovers(src, dst) == {"slots": "", "publications": "", "subscriptions": ""}


def test_final_pass_resumed_after_its_subscription_was_dropped_removes_the_slot(ssh_hosts, logical_source,
                                                                               pg_target, writer, tmp_path):
    """A final pass killed between dropping the target's subscription and dropping the source's slot: run
    again, it does not wait for a slot nobody reads, and removes it."""
    import time as _time

    src, dst = logical_source, pg_target
    plan, gate = _plan_held_at_a_gate(tmp_path, ssh_hosts, src, dst, writer, name="half-final")
    r = mdsl("apply", "--yes", str(plan), timeout=600)
    assert r.returncode != 0, human(output(r))
    name = dst.psql("select subname from pg_subscription")
    assert name.startswith("mdsl_")
    # what the killed final pass had done: the subscription dropped, detached from its slot
    dst.psql(f"alter subscription {name} disable; alter subscription {name} set (slot_name = none); "
             f"drop subscription {name};", db=REPLICA_DB)
    assert src.psql("select count(*) from pg_replication_slots") == "1"
    gate.write_text("")

    t = _time.monotonic()
    r = mdsl("apply", "--yes", str(plan), timeout=600)
    no_traceback(output(r))
    assert r.returncode == 0, human(output(r))
    assert _time.monotonic() - t < 50  # it did not wait out the 60 s a slot without a reader gets
    assert _leftovers(src, dst) == {"slots": "", "publications": "", "subscriptions": ""}


def test_a_plan_edited_between_the_passes_still_has_the_slot_removed(ssh_hosts, logical_source, pg_target, writer,
                                                                    tmp_path):
    """The first run stops after the live pass (a step fails): slot, publication and subscription exist. The
    plan is then edited so that it no longer replicates at all: the next apply removes them from what the
    journal recorded at the live pass (the plan no longer names them)."""
    from hosts import free_port
    src, dst = logical_source, pg_target
    writer.start()
    wait_until(lambda: len(writer.files()) >= 5, what="writer wrote rows")
    gate = ssh_hosts.a.root / "never"
    port = free_port()
    steps = (f"  replicate old_db to new_db live  port = {port}\n"
             '  # mdsl: allow H301 "e2e: only the database moves; the writer is not started anywhere else"\n'
             f"  stop old_app\n  run a {plan_str('test -e ' + str(gate))}\n"
             f"  replicate old_db to new_db  port = {port}")
    plan = _plan(tmp_path, ssh_hosts, src, dst, writer, steps, name="edited")
    r = mdsl("apply", "--yes", str(plan), timeout=600)
    assert r.returncode != 0 and "step 3" in human(output(r)), human(output(r))
    assert src.psql("select count(*) from pg_replication_slots") == "1"

    plan = _plan(tmp_path, ssh_hosts, src, dst, writer, "  stop old_app", name="edited")
    r = mdsl("apply", "--yes", str(plan), timeout=600)
    no_traceback(output(r))
    assert r.returncode == 0, human(output(r))
    assert "removed replication mdsl_" in human(output(r))
    assert _leftovers(src, dst) == {"slots": "", "publications": "", "subscriptions": ""}
