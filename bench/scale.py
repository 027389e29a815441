"""Target 7: 20 apps moved between 40 hosts at once, against the same apps moved one after the other.

    python3 bench/scale.py                  # 20 apps, 40 hosts, 3 rounds (about 8 minutes)
    python3 bench/scale.py --quick          # 6 apps, 12 hosts, smaller data, 2 rounds
    python3 bench/scale.py --write-docs     # put the figures into docs/performance.md
    python3 bench/scale.py --data-mib 1,4   # small apps (data dirs of 1-4 MiB); its own block with --write-docs
    python3 bench/scale.py --profile lanes  # one apply under py-spy (pip install py-spy): where its CPU goes

Forty sshd test hosts on 127.0.77.2..41 (tests/e2e/hosts.py). App i lives on
old host o<i> and moves to new host n<i>: a command service (start/stop/status
commands in POSIX sh, of a small daemon that keeps a heartbeat file while it
runs), a data dir of 5-40 MiB (a few incompressible files and some small text
files; sizes spread evenly over the apps, in shuffled order) and a SQLite
database of 0.7-2.9 MiB. Each app's move is nine steps:

    stop app_o<i>                                  dump db_o<i> to o<i>:".../app<i>.db"
    archive data_o<i> to o<i>:".../app<i>.tar.zst"  transfer the dump, transfer the archive
    restore ... into db_n<i> replace               extract ... into data_n<i>
    start app_n<i>                                 verify run n<i> "<status> && test -s heartbeat"

Each round, in turn (the order rotates):

  sequential  each app alone as its own plan, `mdsl apply` one after the other:
              the per-app times and their sum (interpreter start, check, connect
              and preflight of 2 hosts included in each)
  phases      one plan, all apps, a `parallel` block per phase: stop x N, then
              dump + archive x N, transfers x 2N, restore + extract x N,
              start x N, verify x N (every app waits for the slowest at each of
              the five barriers)
  lanes       one plan, `parallel { sequence { the app's nine steps } x N }`:
              each app runs its phases in order (a phase's steps in a block
              inside the lane), the apps concurrently

After every run, every app's data dir (sha256 of every file) and database
(sha256 of its SQL dump) on the new host must equal the old host's, and the
new app must be running; the old apps are started again for the next run.
Figures are medians over the rounds; the load average is printed with them.
Besides wall times: the CPU seconds of the whole machine (/proc/stat; every
host is this machine, so it includes all sshd and remote work) and of mdsl
with its ssh clients; each app's downtime (its `stop` starting to its `start`
done) from the JSON logs; the time before the first step, and in-process how
it splits (parse + check, compile, `_connect`, preflight with a thread per
host and capped at 8); the phases' barrier loss (per block, slowest member
minus median member); and one 20 MiB transfer on the OpenSSH route with
OpenSSH's default key exchange against curve25519 first.

Then the same moves are replayed as they would go on hosts with CPUs of their
own (here all 40 share 2, so the real runs are bound by this machine's CPU):
every step becomes `run HOST "sleep S"`, S = REPLAY x what that step took when
its app ran alone, in phases and in lanes, on the same hosts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Tuple

from _common import (
    ROOT, MiB, REGISTRY, BenchHosts, Side, alternate, command_line, compile_bytecode, load, machine, mdsl_apply,
    table, write_doc_block,
)
from hosts import FileTree, plan_str  # noqa: E402  (tests/e2e, put on sys.path by _common)

# Each app's service: `sh scale-app.sh start|stop|status HOME` (POSIX sh, so the service's own
# commands cost what `systemctl` would, not a Python start each); `run` is the daemon, which
# rewrites HOME/run/heartbeat every second while it runs.
APP_SCRIPT = r"""#!/bin/sh
home=$2
run=$home/run
pidf=$run/app.pid
alive() {
  pid=$(cat "$pidf" 2>/dev/null) && [ -n "$pid" ] || return 1
  st=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) && [ "$st" != Z ] && [ "$st" != X ] || return 1
  grep -q scale-app "/proc/$pid/cmdline" 2>/dev/null
}
case $1 in
status)
  alive && exit 0
  exit 3;;
stop)
  if alive; then
    kill "$pid"
    i=0
    while alive; do i=$((i + 1)); [ $i -lt 1000 ] || exit 1; sleep 0.02; done
  fi
  exit 0;;
start)
  alive && exit 0
  mkdir -p "$run"
  setsid sh "$0" run "$home" </dev/null >/dev/null 2>&1 &
  i=0
  while ! alive; do i=$((i + 1)); [ $i -lt 1000 ] || exit 1; sleep 0.01; done
  exit 0;;
run)
  trap 'rm -f "$pidf"; exit 0' TERM
  beat() { date +%s > "$run/heartbeat.tmp" && mv -f "$run/heartbeat.tmp" "$run/heartbeat"; }
  beat
  echo $$ > "$pidf.tmp" && mv -f "$pidf.tmp" "$pidf"
  while :; do sleep 1 & wait $!; beat; done;;
*)
  echo "usage: $0 start|stop|status HOME" >&2
  exit 2;;
esac
"""


class App:
    """One app: its hosts, paths, declarations and steps."""

    def __init__(self, i: int, old, new, app_py: Path, data_mib: float, db_rows: int):
        self.i, self.old, self.new = i, old, new
        self.data_mib, self.db_rows = data_mib, db_rows
        self.o, self.n = f"o{i}", f"n{i}"
        self.app_py = app_py

    # paths on a host (every host is this machine, under its own root)
    def home(self, h) -> Path:
        return h.root / "srv" / f"app{self.i}"

    def data(self, h) -> Path:
        return self.home(h) / "data"

    def db(self, h) -> Path:
        return self.home(h) / "app.db"

    def art(self, h, ext: str) -> Path:
        return h.root / "mdsl" / f"app{self.i}.{ext}"

    def ctl(self, h, verb: str) -> str:
        return shlex.join(["sh", str(self.app_py), verb, str(self.home(h))])

    def decls(self, H: BenchHosts) -> str:
        o, n, i = self.o, self.n, self.i
        lines = [H.host_decl(self.old, o), H.host_decl(self.new, n)]
        for side, h, extra in (("o", self.old, ""), ("n", self.new, "  fresh = true")):
            lines.append(f"dir data_{side}{i} on {side}{i} {{ path = {plan_str(str(self.data(h)))}  owner = \"root:root\" }}")
            lines.append(f"sqlite db_{side}{i} on {side}{i} {{ path = {plan_str(str(self.db(h)))}{extra} }}")
            init = "\n  initially = stopped" if side == "n" else ""
            lines.append(
                f"service app_{side}{i} on {side}{i} {{\n  start  = {plan_str(self.ctl(h, 'start'))}\n"
                f"  stop   = {plan_str(self.ctl(h, 'stop'))}\n  status = {plan_str(self.ctl(h, 'status'))}\n"
                f"  writes = [data_{side}{i}, db_{side}{i}]{init}\n}}")
        return "\n".join(lines)

    def steps(self) -> List[List[str]]:
        """The nine steps, grouped by phase (the phases plan puts each group's steps of every app in one block)."""
        o, n, i = self.o, self.n, self.i
        odb, ntar = self.art(self.old, "db"), self.art(self.new, "tar.zst")
        otar, ndb = self.art(self.old, "tar.zst"), self.art(self.new, "db")
        verify = f"{self.ctl(self.new, 'status')} && test -s {shlex.quote(str(self.home(self.new) / 'run' / 'heartbeat'))}"
        return [
            [f"stop app_o{i}"],
            [f"dump db_o{i} to {o}:{plan_str(str(odb))}",
             f"archive data_o{i} to {o}:{plan_str(str(otar))}"],
            [f"transfer {o}:{plan_str(str(odb))} to {n}:{plan_str(str(ndb))}",
             f"transfer {o}:{plan_str(str(otar))} to {n}:{plan_str(str(ntar))}"],
            [f"restore {n}:{plan_str(str(ndb))} into db_n{i} replace",
             f"extract {n}:{plan_str(str(ntar))} into data_n{i}"],
            [f"start app_n{i}"],
            [f"verify run {n} {plan_str(verify)}"],
        ]


def make_data(app: App, rng: random.Random) -> None:
    """The old host's data dir (a few incompressible files, 30 small text files) and SQLite database."""
    d = app.data(app.old)
    total = int(app.data_mib * MiB)
    text = 0
    for k in range(30):
        p = d / f"notes/{k % 4}/note-{k}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"app {app.i} note {k} line {j} {rng.random()}\n" for j in range(400))
        p.write_text(body)
        text += len(body)
    left, k = total - text, 0
    while left > 0:
        n = min(left, rng.choice((1, 2, 4)) * MiB)
        p = d / "media" / f"blob-{k}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(n))
        left -= n
        k += 1
    con = sqlite3.connect(app.db(app.old))
    con.execute("create table events (id integer primary key, at real, body text)")
    con.executemany("insert into events (at, body) values (?, ?)",
                    ((rng.random(), f"event {j} of app {app.i} " + "x" * rng.randrange(20, 200))
                     for j in range(app.db_rows)))
    con.commit()
    con.close()


def db_digest(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    finally:
        con.close()


def tree_digest(root: Path) -> Dict[str, str]:
    return {k: v[0] for k, v in FileTree.snapshot(root).items()}


def machine_cpu() -> float:
    """CPU seconds every process on this machine has used so far (all CPUs; /proc/stat, less idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def profile(plan: Path, out: Path) -> str:
    """`mdsl apply PLAN` under py-spy (sampling every thread, native frames off): the functions the
    control process spends its CPU in, self time and inclusive, as text."""
    raw = out.with_suffix(".txt")
    env = dict(os.environ)
    r = subprocess.run(["py-spy", "record", "--format", "raw", "-r", "200", "-o", str(raw), "--",
                        sys.executable, "-m", "mdsl", "apply", "--yes", "--restart", str(plan)],
                       capture_output=True, text=True, env=env, cwd=str(ROOT))
    if r.returncode != 0:
        raise SystemExit(f"py-spy failed ({r.returncode}):\n{r.stderr[-2000:]}")
    own: Dict[str, int] = {}
    incl: Dict[str, int] = {}
    idle = total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        leaf = frames[-1]
        if any(w in leaf for w in ("wait (threading", "select (selectors", "_wait_for_tstate_lock", "recv_into",
                                   "sleep", "acquire", "read (", "poll (", "readinto")):
            idle += n
            continue
        own[leaf] = own.get(leaf, 0) + n
        for f in set(frames[1:]):
            incl[f] = incl.get(f, 0) + n
    busy = max(1, total - idle)
    lines = [f"{total} samples, {busy} not waiting ({busy / max(1, total):.0%}); top self (share of busy samples):"]
    lines += [f"  {v / busy:6.1%}  {k}" for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:25]]
    lines.append("top inclusive:")
    lines += [f"  {v / busy:6.1%}  {k}" for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:40]]
    return "\n".join(lines)


def sh(cmd: str, check: bool = True) -> int:
    return subprocess.run(cmd, shell=True, check=check, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def pidfile(app: App, h) -> Path:
    return app.home(h) / "run" / "app.pid"


def track(app: App, h) -> None:
    """Record an app daemon's pid so the bench stops it at the end whatever happens."""
    try:
        REGISTRY.record(int(pidfile(app, h).read_text()), f"scale app {app.i} on {h.name}")
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------- plans


def write_plans(H: BenchHosts, apps: List[App]) -> Tuple[List[Path], Path, Path]:
    base = H.base
    singles = []
    for a in apps:
        steps = [s for phase in a.steps() for s in phase]
        p = base / f"app{a.i}.plan"
        p.write_text(f'plan "scale: app {a.i} alone"\n{a.decls(H)}\nsteps {{\n'
                     + "".join(f"  {s}\n" for s in steps) + "}\n")
        singles.append(p)
    decls = "\n".join(a.decls(H) for a in apps)
    phases = base / "phases.plan"
    body = []
    for k in range(len(apps[0].steps())):
        body.append("  parallel {\n" + "".join(f"    {s}\n" for a in apps for s in a.steps()[k]) + "  }\n")
    phases.write_text(f'plan "scale: {len(apps)} apps in phases"\n{decls}\nsteps {{\n' + "".join(body) + "}\n")
    lanes = base / "lanes.plan"
    lanes.write_text(f'plan "scale: {len(apps)} apps in lanes"\n{decls}\nsteps {{\n  parallel {{\n'
                     + "".join(lane(a.steps()) for a in apps) + "  }\n}\n")
    return singles, phases, lanes


def lane(groups: List[List[str]]) -> str:
    """An app's lane: its phases in order, the steps of one phase in a block of their own
    (`stop; parallel { dump  archive }; parallel { transfer  transfer }; ...`)."""
    out = []
    for g in groups:
        if len(g) == 1:
            out.append(f"      {g[0]}\n")
        else:
            out.append("      parallel {\n" + "".join(f"        {s}\n" for s in g) + "      }\n")
    return "    sequence {\n" + "".join(out) + "    }\n"


REPLAY = 5  # the replayed steps wait this many times as long as the step took alone on loopback


def write_replay_plans(H: BenchHosts, apps: List[App], took: Dict[int, List[float]]) -> Tuple[Path, Path]:
    """Phases and lanes again, each step replaced by `run HOST "sleep S"`: S is REPLAY times what that
    step of that app took when the app ran alone. This is the move as it goes when every host has
    CPUs of its own (on this machine all 40 share 2): the waits happen elsewhere, so what is left to
    compare is how the plan orders them, with the same 40 real sshd hosts, connections and preflight."""
    groups = [len(g) for g in apps[0].steps()]  # steps per phase: 1, 2, 2, 2, 1, 1

    def step(a: App, k: int) -> str:
        host = a.o if k < 5 else a.n  # stop, dump, archive, the transfers: old host; the rest: new
        return f'run {host} "sleep {REPLAY * took[a.i][k]:.3f}"'

    decls = "\n".join(f"{H.host_decl(a.old, a.o)}\n{H.host_decl(a.new, a.n)}" for a in apps)
    phases = H.base / "phases-replay.plan"
    body, k = [], 0
    for g in groups:
        body.append("  parallel {\n" + "".join(f"    {step(a, k + j)}\n" for a in apps for j in range(g)) + "  }\n")
        k += g
    phases.write_text(f'plan "replay in phases"\n{decls}\nsteps {{\n' + "".join(body) + "}\n")
    lanes = H.base / "lanes-replay.plan"
    bounds = [(sum(groups[:j]), sum(groups[:j + 1])) for j in range(len(groups))]
    lanes.write_text(f'plan "replay in lanes"\n{decls}\nsteps {{\n  parallel {{\n' + "".join(
        lane([[step(a, k) for k in range(lo_, hi_)] for lo_, hi_ in bounds]) for a in apps) + "  }\n}\n")
    return phases, lanes


def check_clean(plan: Path) -> None:
    """The plans must check without any finding (a warning would be a question without --yes)."""
    r = subprocess.run([sys.executable, "-m", "mdsl", "check", str(plan)], capture_output=True, text=True)
    if r.returncode != 0 or "no findings" not in r.stdout + r.stderr:
        raise SystemExit(f"mdsl check {plan.name} is not clean ({r.returncode}):\n{r.stdout}{r.stderr}")


# ---------------------------------------------------------------- the JSON log


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def timeline(stderr: str, t_launch: float) -> Dict[str, object]:
    """From an apply's JSON log: seconds before the first step, and each step's (start, end)."""
    start_at, steps = None, {}
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        e = ev.get("event")
        if e == "apply.start":
            start_at = _ts(ev["timestamp"])
        elif e == "step.start":
            steps.setdefault(ev["step"], [None, None])[0] = _ts(ev["timestamp"])
        elif e == "step.done":
            steps.setdefault(ev["step"], [None, None])[1] = _ts(ev["timestamp"])
    return {"before_steps": (start_at - t_launch) if start_at else float("nan"), "steps": steps}


def barrier_loss(steps: Dict[str, List[float]]) -> Tuple[float, List[Tuple[str, float, float]]]:
    """Per parallel block (top id): (block, slowest member s, median member s); summed slowest - median."""
    by_top: Dict[str, List[float]] = {}
    for sid, (a, b) in steps.items():
        if a is not None and b is not None:
            by_top.setdefault(sid.split(".")[0], []).append(b - a)
    rows = [(top, max(v), statistics.median(v)) for top, v in sorted(by_top.items(), key=lambda kv: int(kv[0]))]
    return sum(mx - med for _, mx, med in rows), rows


def downtimes(steps: Dict[str, List[float]], ids: List[Tuple[str, str]]) -> List[float]:
    """Each app's downtime: from the start of its `stop` step to the end of its `start` step."""
    out = []
    for stop, start in ids:
        a, b = steps.get(stop, (None, None))[0], steps.get(start, (None, None))[1]
        if a is not None and b is not None:
            out.append(b - a)
    return out


def app_spans(steps: Dict[str, List[float]], n_apps: int, per_app: int) -> List[float]:
    """Lanes plan: each app's own span (first step start to last step end), from step ids 1.<lane>.<k>."""
    spans = []
    for lane in range(1, n_apps + 1):
        ts = [v for sid, v in steps.items() if sid.startswith(f"1.{lane}.") and None not in v]
        if len(ts) == per_app:
            spans.append(max(b for _, b in ts) - min(a for a, _ in ts))
    return spans


# ---------------------------------------------------------------- before the first step, in-process


def startup_profile(plan: Path, reps: int) -> Dict[str, float]:
    """Medians of what `mdsl apply` does before its first step on this plan, in this process:
    parse + check, compile, `_connect` (backends made in a pool of at most 8 threads) and
    preflight (connects and checks every host, one thread per host); and preflight again with
    its pool capped at 8 threads, to see what such a cap would cost at this many hosts."""
    import io

    import mdsl.run.preflight as PF
    from mdsl.compile import compile_plan
    from mdsl.run import apply as AP
    from mdsl.run import log
    from mdsl.run.load import check_findings
    from mdsl.syntax.parser import parse_file

    times: Dict[str, List[float]] = {}

    def note(key: str, t0: float) -> None:
        times.setdefault(key, []).append(time.perf_counter() - t0)

    log.configure("json", "error")  # quiet
    pool = PF.ThreadPoolExecutor
    for _ in range(reps):
        t0 = time.perf_counter()
        bound, findings = check_findings(parse_file(str(plan)))
        note("parse + check", t0)
        t0 = time.perf_counter()
        compiled = compile_plan(bound)
        note("compile", t0)
        for cap in (None, 8):
            runner = AP.Apply(AP.ApplyOptions(plan=str(plan), yes=True), out=io.StringIO(), err=io.StringIO())
            try:
                t0 = time.perf_counter()
                runner._connect(bound, sorted(bound.hosts))
                note("_connect (makes the backends; the pool is capped at 8)", t0)
                if cap:
                    PF.ThreadPoolExecutor = lambda max_workers=None, cap=cap, **kw: pool(max_workers=min(cap, max_workers), **kw)
                t0 = time.perf_counter()
                found = PF.run_preflight(bound, compiled, runner.backends, secrets=runner.secrets)
                note(f"preflight, {'8 threads' if cap else 'a thread per host'} (connects, checks)", t0)
                if any(f.severity.name == "ERROR" for f in found):
                    raise SystemExit("preflight found errors: " + "; ".join(f.message for f in found))
            finally:
                PF.ThreadPoolExecutor = pool
                for b in runner.backends.values():
                    b.close()
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apps", type=int, default=None, help="apps (default 20; 6 with --quick); hosts = 2 x apps")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 3; 2 with --quick)")
    ap.add_argument("--sides", default="sequential,phases,lanes", help="which ways to run (comma-separated)")
    ap.add_argument("--data-mib", default=None, metavar="LO,HI",
                    help="each app's data dir size in MiB, spread from LO to HI (default 5,40; 2,10 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", choices=("phases", "lanes"), help="only run that plan once under py-spy")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    n = args.apps or (6 if args.quick else 20)
    runs = args.runs or (2 if args.quick else 3)
    lo, hi = (2.0, 10.0) if args.quick else (5.0, 40.0)
    if args.data_mib:
        try:
            lo, hi = (float(x) for x in args.data_mib.split(","))
        except ValueError:
            ap.error("--data-mib wants LO,HI in MiB, e.g. 0.2,1")
    sides = [s for s in args.sides.split(",") if s]
    compile_bytecode()
    rng = random.Random(7)
    sizes = [lo + (hi - lo) * k / max(1, n - 1) for k in range(n)]
    rng.shuffle(sizes)  # the big apps are not all at one end

    t_setup = time.perf_counter()
    with BenchHosts(2 * n) as H:
        hosts = H.cluster.hosts
        app_py = H.base / "scale-app.sh"
        app_py.write_text(APP_SCRIPT)
        apps = [App(i + 1, hosts[i], hosts[n + i], app_py, sizes[i], 5000 + 15000 * i // max(1, n - 1))
                for i in range(n)]
        for a in apps:
            make_data(a, rng)
        want = {a.i: (tree_digest(a.data(a.old)), db_digest(a.db(a.old))) for a in apps}
        total_mib = sum(sum(p.stat().st_size for p in a.data(a.old).rglob("*") if p.is_file())
                        + a.db(a.old).stat().st_size for a in apps) / MiB
        singles, phases, lanes = write_plans(H, apps)
        for p in [singles[0], phases] + ([lanes] if "lanes" in sides else []):
            check_clean(p)
        print(f"{n} apps on {2 * n} hosts, {total_mib:.0f} MiB in all; set up in "
              f"{time.perf_counter() - t_setup:.1f}s; {load()}", flush=True)

        def reset() -> None:
            for a in apps:
                sh(a.ctl(a.new, "stop"), check=False)
                for p in (a.home(a.new), a.art(a.old, "db"), a.art(a.old, "tar.zst"), a.art(a.new, "db"),
                          a.art(a.new, "tar.zst")):
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
                sh(a.ctl(a.old, "start"))
                track(a, a.old)

        def verify(what: str) -> None:
            bad = []
            for a in apps:
                track(a, a.new)
                if sh(a.ctl(a.new, "status"), check=False) != 0:
                    bad.append(f"app {a.i}: not running on {a.n}")
                if sh(a.ctl(a.old, "status"), check=False) == 0:
                    bad.append(f"app {a.i}: still running on {a.o}")
                files, db = want[a.i]
                if not a.db(a.new).exists() or db_digest(a.db(a.new)) != db:
                    bad.append(f"app {a.i}: database differs")
                got = tree_digest(a.data(a.new)) if a.data(a.new).exists() else {}
                if got != files:
                    diff = FileTree.diff(files, got)
                    bad.append(f"app {a.i}: data differs ({sum(map(len, diff.values()))} paths)")
            if bad:
                raise SystemExit(f"{what}: the data did not arrive intact:\n  " + "\n  ".join(bad))

        logs: Dict[str, List[dict]] = {"phases": [], "lanes": []}
        took: Dict[int, Dict[int, List[float]]] = {}  # app -> step index -> seconds, when alone

        def sequential(side: Side) -> float:
            total, slowest, own, cpu = 0.0, 0.0, 0.0, machine_cpu()
            down = []
            for a, p in zip(apps, singles, strict=False):
                m = mdsl_apply(p)
                tl = timeline(m.stderr, 0)["steps"]
                down += downtimes(tl, [("1", "8")])
                for k in range(9):
                    t = tl.get(str(k + 1), (None, None))
                    if None not in t:
                        took.setdefault(a.i, {}).setdefault(k, []).append(t[1] - t[0])
                side.add(f"app{a.i}", m.seconds)
                total += m.seconds
                own += m.cpu
                slowest = max(slowest, m.seconds)
            side.add("machine_cpu", machine_cpu() - cpu)
            side.add("cpu", own)
            side.add("down_median", statistics.median(down))
            side.add("down_max", max(down))
            verify("sequential")
            side.add("slowest", slowest)
            return total

        def parallel(name: str, plan: Path):
            def run(side: Side) -> float:
                t_launch, cpu = time.time(), machine_cpu()
                m = mdsl_apply(plan)
                side.add("machine_cpu", machine_cpu() - cpu)
                verify(name)
                tl = timeline(m.stderr, t_launch)
                logs[name].append(tl)
                side.add("before_steps", tl["before_steps"])
                side.add("rss_mib", m.max_rss_kib / 1024)
                side.add("cpu", m.cpu)
                ids = ([(f"1.{a}", f"5.{a}") for a in range(1, n + 1)] if name == "phases"
                       else [(f"1.{a}.1", f"1.{a}.5") for a in range(1, n + 1)])
                down = downtimes(tl["steps"], ids)
                side.add("down_median", statistics.median(down))
                side.add("down_max", max(down))
                if name == "phases":
                    side.add("barrier_loss", barrier_loss(tl["steps"])[0])
                else:
                    spans = app_spans(tl["steps"], n, 9)
                    if spans:
                        side.add("slowest_lane", max(spans))
                return m.seconds
            return run

        if args.profile:
            reset()
            try:
                text = profile(phases if args.profile == "phases" else lanes, H.base / "profile")
                verify(args.profile)
            finally:
                for a in apps:
                    for h in (a.old, a.new):
                        track(a, h)
                        sh(a.ctl(h, "stop"), check=False)
            print(text)
            print(load())
            return 0

        todo = {"sequential": sequential, "phases": parallel("phases", phases), "lanes": parallel("lanes", lanes)}
        try:
            res = alternate(runs, {k: v for k, v in todo.items() if k in sides}, before=reset)
            replay, model = {}, {}
            if took:
                med = {i: [statistics.median(v[k]) for k in range(9)] for i, v in took.items()}
                rphases, rlanes = write_replay_plans(H, apps, med)
                check_clean(rlanes)

                def replayed(plan: Path):
                    return lambda side: mdsl_apply(plan).seconds

                print(f"replay, each step waiting {REPLAY}x what it took alone:", flush=True)
                replay = alternate(runs, {"phases": replayed(rphases), "lanes": replayed(rlanes)})
                # what the waits alone come to: all in a row; the slowest app's (the lanes' floor);
                # and per phase block its longest member, added up (the phases' floor)
                blocks = ((0, 1), (1, 3), (3, 5), (5, 7), (7, 8), (8, 9))
                model = {"sum": sum(REPLAY * sum(v) for v in med.values()),
                         "alone": max(REPLAY * sum(v) for v in med.values()),
                         "slowest": max(sum(REPLAY * max(v[lo_:hi_]) for lo_, hi_ in blocks) for v in med.values()),
                         "phases": sum(max(REPLAY * v[k] for v in med.values() for k in range(lo_, hi_))
                                       for lo_, hi_ in blocks)}
            reset()
            print("before the first step, in-process (median of 3):", flush=True)
            startup = {f"{2 * n} hosts: {k}": v for k, v in startup_profile(phases, 3).items()}
            startup.update({f"2 hosts: {k}": v for k, v in startup_profile(singles[0], 3).items()})
            for k, v in startup.items():
                print(f"  {k}: {v:.3f}s", flush=True)
        finally:
            for a in apps:  # the plans started the new apps: stop them (and the old ones) by their stop command
                for h in (a.old, a.new):
                    track(a, h)
                    sh(a.ctl(h, "stop"), check=False)
        end_load = load()

    # ------------------------------------------------------------ figures
    out = [f"{n} apps, each moved from its own old host to its own new host ({2 * n} sshd hosts on "
           f"127.0.77.2-{1 + 2 * n}); data dirs of {lo:g}-{hi:g} MiB plus a SQLite database each, "
           f"{total_mib:.3g} MiB in all; nine steps per app (stop, dump, archive, two transfers, restore, "
           f"extract, start, verify run). Median of {runs} alternating rounds. {machine()}; {end_load} at the end.", ""]
    rows = []
    seq = res.get("sequential")
    seq_sum = seq.med if seq else float("nan")
    slowest = seq.med_of("slowest") if seq else float("nan")
    if seq:
        per_app = {a.i: seq.med_of(f"app{a.i}") for a in apps}
        fastest = min(per_app.values())
        rows.append(["sequential: sum of the per-app applies", f"{seq_sum:.1f}", "1.00", f"{seq_sum / slowest:.1f}",
                     ", ".join(f"{x:.1f}" for x in seq.seconds)])
        rows.append(["sequential: slowest single app", f"{slowest:.2f}", f"{slowest / seq_sum:.3f}", "1.0",
                     ", ".join(f"{x:.2f}" for x in seq.extra["slowest"])])
    for name, what in (("phases", "one plan, a `parallel` block per phase"),
                       ("lanes", "one plan, `parallel { sequence { ... } x N }`")):
        s = res.get(name)
        if s is None:
            continue
        rows.append([f"{name}: {what}", f"{s.med:.2f}", f"{s.med / seq_sum:.3f}", f"{s.med / slowest:.2f}",
                     ", ".join(f"{x:.2f}" for x in s.seconds)])
    for r, name in zip(rows, [x for x in ("sequential", "sequential", "phases", "lanes") if x in res], strict=False):
        s = res[name]
        r[4:4] = [f"{s.med_of('machine_cpu'):.1f}", f"{s.med_of('cpu'):.1f}"] if "slowest single" not in r[0] else ["", ""]
    out.append(table(["way", "median wall s", "/ sum", "/ slowest app", "machine CPU s", "mdsl CPU s", "runs (s)"],
                     rows, "lrrrrrr"))
    out.append("")
    out.append("- machine CPU: /proc/stat, every process on this machine: the 40 hosts' sshd and commands, mdsl, "
               "and anything else that ran meanwhile; mdsl CPU: the `mdsl apply` processes and their ssh clients")
    if seq:
        out.append(f"- per-app apply alone: {fastest:.2f}-{slowest:.2f} s (median per app; interpreter, check, "
                   f"connect and preflight of its 2 hosts included)")
    for name in ("phases", "lanes"):
        s = res.get(name)
        if s is None:
            continue
        floor = s.med_of("machine_cpu") / (os.cpu_count() or 1)
        rest = (s.med_of("machine_cpu") - s.med_of("cpu")) / (os.cpu_count() or 1)
        out.append(f"- {name}: **{s.med / seq_sum:.3f}** of the sum, **{s.med / slowest:.2f}x** the slowest app; "
                   f"{s.med_of('before_steps'):.2f} s before the first step (interpreter, check, compile, connect "
                   f"and preflight of {2 * n} hosts); mdsl CPU {s.med_of('cpu'):.1f} s (its ssh clients included), "
                   f"peak RSS {s.med_of('rss_mib'):.0f} MiB; the CPU floor (machine CPU / {os.cpu_count()} CPUs, "
                   f"the least wall time the work it did could take here) {floor:.2f} s: wall / floor "
                   f"**{s.med / floor:.2f}**; without mdsl's own CPU (its ssh clients included) the floor would "
                   f"still be {rest:.2f} s, {rest / slowest:.1f}x the slowest app")
    if "phases" in res:
        loss, blocks = barrier_loss(logs["phases"][-1]["steps"])
        out.append(f"- phases: at each barrier every app waits for the slowest member; slowest minus median member, "
                   f"summed over the blocks: {res['phases'].med_of('barrier_loss'):.2f} s (last run per block: "
                   + ", ".join(f"{b} {mx:.2f}/{med:.2f}" for b, mx, med in blocks) + " s slowest/median)")
    out.append("- each app's downtime (its `stop` starting to its `start` done; median / longest over the apps): "
               + "; ".join(f"{k} {res[k].med_of('down_median'):.1f} / {res[k].med_of('down_max'):.1f} s"
                           for k in ("sequential", "phases", "lanes") if k in res)
               + " (sequential: each app alone, with the machine to itself)")
    out.append("- before the first step, in-process, median of 3: " + "; ".join(
        f"{k} {v:.2f} s" for k, v in startup.items()))
    if replay:
        rp, rl = replay["phases"], replay["lanes"]
        out += ["", f"The same moves replayed as on hosts with CPUs of their own: every step becomes "
                f"`run HOST \"sleep S\"`, S = {REPLAY} x what that step of that app took when the app ran alone "
                f"(median of the sequential rounds), on the same {2 * n} sshd hosts; median of {runs} alternating "
                f"rounds. The floor is what the waits alone come to (no interpreter, connect or preflight):", "",
                table(["way", "median wall s", "floor s", "runs (s)"], [
                    ["all the waits one after the other", "", f"{model['sum']:.1f}", ""],
                    ["phases (per block, its longest wait, added up)", f"{rp.med:.2f}", f"{model['phases']:.2f}",
                     ", ".join(f"{x:.2f}" for x in rp.seconds)],
                    ["lanes (the slowest app's waits, a phase's steps at once)", f"{rl.med:.2f}",
                     f"{model['slowest']:.2f}",
                     ", ".join(f"{x:.2f}" for x in rl.seconds)]], "lrrr"), "",
                f"- replayed: lanes take **{rl.med / model['slowest']:.2f}x** the slowest app's waits and "
                f"**{rl.med / model['sum']:.3f}** of their sum; phases {rp.med / model['slowest']:.2f}x and "
                f"{rp.med / model['sum']:.3f}; lanes / phases {rl.med / rp.med:.2f}"]
    if "lanes" in res and res["lanes"].extra.get("slowest_lane"):
        out.append(f"- lanes: the slowest app's own span inside the run: {res['lanes'].med_of('slowest_lane'):.2f} s")
    text = "\n".join(out)
    print()
    print(text)
    if args.write_docs:
        # a run with other data sizes gets a block of its own, after the default one
        write_doc_block("scale-small" if args.data_mib else "scale", f"`{command_line()}`\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
