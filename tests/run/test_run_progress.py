"""Progress while steps run (issue 17 item 4): a step longer than a second says what it does (a `stop`
that it waits), rsync's own progress and totals are read, preflight's sizes become the bars' totals,
and the summary counts the bytes a sync moved between hosts."""

from __future__ import annotations

import io
import os
import re
import subprocess

from mdsl.check import check_plan
from mdsl.compile import compile_plan
from mdsl.run.local import LocalBackend
from mdsl.run.preflight import run_preflight
from mdsl.run.progress import amount_text
from mdsl.run.rsync_meter import RsyncMeter
from mdsl.run.secrets import SecretStore
from mdsl.syntax.parser import parse_text
from run_helpers import apply

MIB = 1 << 20


def _tree(root, sizes):
    root.mkdir(parents=True)
    for i, n in enumerate(sizes):
        (root / f"f{i}.bin").write_bytes(os.urandom(n))


def test_the_meter_reads_real_rsync_output_in_any_chunks(tmp_path):
    _tree(tmp_path / "a", [3 * MIB, 5000, 1])
    out = subprocess.run(["rsync", "-a", "--info=progress2", "--stats", f"{tmp_path}/a/", f"{tmp_path}/b/"],
                         capture_output=True, check=True).stdout
    seen = []
    meter = RsyncMeter(lambda done, pct, rate, eta: seen.append((done, pct)))
    for i in range(0, len(out), 7):  # progress lines split anywhere, as a pipe delivers them
        meter.feed(out[i:i + 7])
    meter.close()
    total = 3 * MIB + 5001
    assert seen[-1] == (total, 100)
    assert meter.done == total
    assert meter.sent >= total and meter.received > 0
    assert meter.output() == ""  # progress and statistics are not output worth showing


def test_a_bar_says_bytes_total_rate_and_eta():
    assert amount_text(1.5 * MIB, 40 * MIB, 3 * MIB, 13) == "1.5 MiB / 40.0 MiB  3.0 MiB/s  eta 0:13"
    assert amount_text(2048, None, None, None) == "2.0 KiB"  # no `0/? bytes ?`


def plan_text(d, stop="true") -> str:
    return f"""plan "progress"
host old {{ local = true }}
host new {{ local = true }}
sqlite old_db on old {{ path = "{d}/old.db" }}
dir old_files on old {{ path = "{d}/a" }}
dir new_files on new {{
  path  = "{d}/b"
  fresh = true
}}
service old_app on old {{
  start  = "true"
  stop   = "{stop}"
  status = "false"
  writes = [old_db, old_files]
}}
steps {{
  stop old_app
  dump old_db to old:"{d}/old.db.backup"
  sync old_files to new_files
}}
"""


def _sqlite(path, rows: int) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("create table t (x blob)")
    con.executemany("insert into t values (?)", [(os.urandom(1000),) for _ in range(rows)])
    con.commit()
    con.close()


def test_the_summary_counts_what_rsync_moved_between_hosts(tmp_path):
    _tree(tmp_path / "a", [2 * MIB, 1000])
    _sqlite(tmp_path / "old.db", 10)
    plan = tmp_path / "p.plan"
    plan.write_text(plan_text(tmp_path))
    code, out, err = apply(plan)
    assert code == 0, out + err
    moved = re.search(r"done: ran .*; ([\d.]+) (KiB|MiB) moved between hosts", out)
    assert moved and moved.group(2) == "MiB" and float(moved.group(1)) >= 2.0, out


def test_preflight_sizes_become_the_bars_totals(tmp_path):
    _tree(tmp_path / "a", [MIB, 3000])
    _sqlite(tmp_path / "old.db", 300)
    plan = tmp_path / "p.plan"
    plan.write_text(plan_text(tmp_path))
    bound = check_plan(parse_text(plan.read_text(), str(plan))).bound
    backends = {h: LocalBackend(bound.hosts[h], cwd=str(tmp_path)) for h in bound.hosts}
    sizes: dict = {}
    findings = run_preflight(bound, compile_plan(bound), backends, secrets=SecretStore({}, str(tmp_path)),
                             estimates=sizes)
    assert not [f for f in findings if f.severity.name == "ERROR"], findings
    db_size = os.path.getsize(tmp_path / "old.db")
    assert sizes[("old", f"{tmp_path}/old.db.backup")] == db_size  # the dump's bar: the database's size
    assert MIB <= sizes[("new", f"{tmp_path}/b")] <= MIB + 64 * 1024  # the sync's: du of the source


def test_a_long_step_says_what_it_does_and_that_it_waits(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the width of the terminal the bars are drawn on
    _tree(tmp_path / "a", [1000])
    _sqlite(tmp_path / "old.db", 1)
    plan = tmp_path / "p.plan"
    plan.write_text(plan_text(tmp_path, stop="sleep 2.5"))
    term = io.StringIO()  # a terminal: the bars are drawn there
    from mdsl.run.apply import ApplyOptions, apply_plan

    code = apply_plan(ApplyOptions(plan=str(plan), yes=True, log_format="json"), out=io.StringIO(), err=term,
                      progress=True)
    assert code == 0, term.getvalue()
    shown = term.getvalue()
    assert "[1/3] stop old_app" in shown
    assert "stop old_app on old: waiting for it to finish" in shown
    assert "0:01  stop old_app" in shown or "0:02  stop old_app" in shown  # how long it has waited so far
