"""How `mdsl check` scales: plans of 1k, 10k and 100k steps, and one real plan.

    python3 bench/check_scale.py                      # the table in docs/performance.md
    python3 bench/check_scale.py --sizes 1000,10000   # fewer sizes
    python3 bench/check_scale.py --profile 10000      # cProfile of parse + check at that size

For each size it writes a realistic plan (many hosts, databases, dirs, files and
services; every step kind, parallel blocks, labels, options, comments; about
two lines per step) into a temporary directory, then measures

  wall    `mdsl check PLAN` as a subprocess, interpreter start included (median of --repeat)
  parse   parse_text in this process (median)
  check   check_plan in this process (median)

and prints the growth of each when the plan grows tenfold (target: at most 11x),
the 10k-step wall time (target: under 2 s) and the wall time of
`mdsl check plans/mastodon-ubuntu-to-nixos.plan` (target: under 0.25 s).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_GROWTH = 11.0
TARGET_10K_WALL = 2.0
TARGET_REAL_WALL = 0.25


# ---------------------------------------------------------------- the generated plan


def _unit_decls(u: int, old: str, new: str) -> str:
    """One application moving from `old` to `new`: a database, files, a secret file, two services."""
    return f"""
# app{u}: moves from {old} to {new}
postgres app{u}_old_db on {old} {{ database = "app{u}"  password = env("APP{u}_DB_PASSWORD") }}
postgres app{u}_new_db on {new} {{ database = "app{u}"  run_as = "app{u}"  fresh = true }}
sqlite app{u}_old_cache_db on {old} {{ path = "/srv/app{u}/cache.sqlite3" }}
sqlite app{u}_new_cache_db on {new} {{ path = "/srv/app{u}/cache.sqlite3"  fresh = true }}
dir app{u}_old_files on {old} {{ path = "/srv/app{u}/files"  owner = "app{u}:app{u}"
  derived "thumbnails" rebuild "app{u}-ctl thumbnails rebuild" }}
dir app{u}_new_files on {new} {{ path = "/srv/app{u}/files"  owner = "app{u}:app{u}" }}
dir app{u}_old_uploads on {old} {{ path = "/srv/app{u}/uploads"  owner = "app{u}:app{u}" }}
dir app{u}_new_uploads on {new} {{ path = "/srv/app{u}/uploads"  owner = "app{u}:app{u}" }}
file app{u}_old_env on {old} {{ path = "/srv/app{u}/.env"  secret = true }}
file app{u}_new_env on {new} {{ path = "/etc/app{u}/env"  owner = "app{u}:app{u}"  mode = "0600"  secret = true }}
service app{u}_old on {old} {{ systemd = ["app{u}-web", "app{u}-worker"]
  writes = [app{u}_old_db, app{u}_old_files, app{u}_old_uploads, app{u}_old_cache_db]  reads = [app{u}_old_env] }}
service app{u}_new on {new} {{ systemd = ["app{u}-web", "app{u}-worker"]  initially = stopped
  writes = [app{u}_new_db, app{u}_new_files, app{u}_new_uploads, app{u}_new_cache_db]  reads = [app{u}_new_env] }}
"""


def _unit_steps(u: int, old: str, new: str) -> str:
    """The move of one application: 20 steps (a parallel block counts with its members)."""
    b = f"/var/backups/mdsl/app{u}"
    return f"""
  # app{u}
  confirm "Announce the maintenance window of app{u}"
  app{u}_freeze: stop app{u}_old
  parallel {{
    app{u}_dump: dump app{u}_old_db to {old}:"{b}/db.dump" format = custom timeout = 7200
    archive app{u}_old_files to {old}:"{b}/files.tar.zst"
      exclude "thumbnails" compress = zstd timeout = 7200
    archive app{u}_old_uploads to {old}:"{b}/uploads.tar.gz" compress = gzip timeout = 7200
  }}
  transfer {old}:"{b}/db.dump" to {new}:"{b}/db.dump"
    via = rsync
  transfer {old}:"{b}/files.tar.zst" to {new}:"{b}/files.tar.zst" via = rsync
  transfer {old}:"{b}/uploads.tar.gz" to {new}:"{b}/uploads.tar.gz" via = rsync
  transfer app{u}_old_env to app{u}_new_env
  app{u}_restore: restore {new}:"{b}/db.dump" into app{u}_new_db replace
    jobs = 2 timeout = 7200
  extract {new}:"{b}/files.tar.zst" into app{u}_new_files timeout = 3600
  extract {new}:"{b}/uploads.tar.gz" into app{u}_new_uploads timeout = 3600
  run {old} "sqlite3 /srv/app{u}/cache.sqlite3 .dump > {b}/cache.sql"
    reads = [app{u}_old_cache_db]
  app{u}_cutover: start app{u}_new
  run {new} "app{u}-ctl thumbnails rebuild"
    writes = [app{u}_new_files] timeout = 3600
  verify http "https://app{u}.example.net/health" via = {new}
    status = 200
  app{u}_check: verify run {new} "systemctl is-active app{u}-web" timeout = 60
  restart app{u}_new
  verify http "https://app{u}.example.net/" via = {new} status = 200
"""


STEPS_PER_UNIT = 20
UNITS_PER_HOST_PAIR = 8


def generate(steps: int) -> str:
    """A plan of about `steps` steps."""
    units = max(1, steps // STEPS_PER_UNIT)
    pairs = max(1, (units + UNITS_PER_HOST_PAIR - 1) // UNITS_PER_HOST_PAIR)
    out = [f'plan "benchmark: {units} applications, {units * STEPS_PER_UNIT} steps"\n']
    for p in range(pairs):
        out.append(f'host old{p} {{ ssh = "root@old{p}.example.net" }}\n')
        out.append(f'host new{p} {{ ssh = "root@new{p}.example.net"  port = 22 }}\n')
    for u in range(units):
        p = u // UNITS_PER_HOST_PAIR
        out.append(_unit_decls(u, f"old{p}", f"new{p}"))
    out.append("\nsteps {")
    for u in range(units):
        p = u // UNITS_PER_HOST_PAIR
        out.append(_unit_steps(u, f"old{p}", f"new{p}"))
    out.append("}\n")
    return "".join(out)


# ---------------------------------------------------------------- measuring


def mdsl_command():
    """How to run `mdsl`: the installed console script beside this interpreter, else `python -m mdsl`."""
    script = Path(sys.executable).with_name("mdsl")
    if script.exists():
        return [str(script)], "console script"
    return [sys.executable, "-m", "mdsl"], "python -m mdsl"


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wall(cmd, path: str, repeat: int, args=("check",)):
    """Median wall time and CPU time (user + sys) of `mdsl check PATH`, and its exit status."""
    times, cpus, code = [], [], None
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(repeat):
        c = _children_cpu()
        t = time.perf_counter()
        p = subprocess.run([*cmd, *args, path] if path else cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=env)
        times.append(time.perf_counter() - t)
        cpus.append(_children_cpu() - c)
        code = p.returncode
        if code not in (0, 1):
            raise SystemExit(f"mdsl check {path} exited {code}: {p.stderr.decode(errors='replace')[-2000:]}")
    return statistics.median(times), statistics.median(cpus), code


def in_process(text: str, path: str, repeat: int):
    """Median CPU time of parse and of check in this process, and the number of findings."""
    from mdsl.check import check_plan
    from mdsl.syntax.parser import parse_text

    parse_t, check_t, findings = [], [], 0
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        plan = parse_text(text, path)
        parse_t.append(time.process_time() - t)
        t = time.process_time()
        findings = len(check_plan(plan).findings)
        check_t.append(time.process_time() - t)
        del plan
    return statistics.median(parse_t), statistics.median(check_t), findings


_TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[a-z_][a-z0-9_]*[ \t]*:(?![ \t]*")|[a-z_][a-z0-9_]*|[0-9]+|\S')


def count_tokens(text: str) -> int:
    """Tokens the parser sees (comments not counted; a label `name:` is one token, as in the grammar)."""
    return sum(1 for m in _TOKEN_RE.finditer(text) if not m.group().startswith("#"))


def profile(steps: int) -> None:
    import cProfile
    import pstats

    from mdsl.check import check_plan
    from mdsl.syntax.parser import parse_text

    text = generate(steps)
    parse_text("host a { local = true }", "warm.plan")
    pr = cProfile.Profile()
    pr.enable()
    plan = parse_text(text, "bench.plan")
    check_plan(plan)
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
    pstats.Stats(pr).sort_stats("tottime").print_stats(20)


def _compile_bytecode() -> None:
    """Write mdsl's bytecode, as installing the package does, so imports are not timed as compiles."""
    import compileall

    compileall.compile_dir(str(ROOT / "mdsl"), quiet=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="step counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (the median is shown)")
    ap.add_argument("--profile", type=int, metavar="STEPS", help="profile parse + check at this size instead")
    args = ap.parse_args(argv)
    if args.profile:
        profile(args.profile)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    _compile_bytecode()
    cmd, how = mdsl_command()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdsl-bench-") as tmp:
        for n in sizes:
            text = generate(n)
            path = os.path.join(tmp, f"steps-{n}.plan")
            Path(path).write_text(text, encoding="utf-8")
            w, cpu, code = wall(cmd, path, args.repeat)
            p, c, nf = in_process(text, path, args.repeat)
            rows.append(dict(steps=n, lines=text.count("\n"), tokens=count_tokens(text), kb=len(text) // 1024,
                             wall=w, cpu=cpu, parse=p, check=c, findings=nf, code=code))
            print(f"  measured {n} steps", file=sys.stderr)
        real = ROOT / "plans" / "mastodon-ubuntu-to-nixos.plan"
        if not real.exists():
            real = Path(tmp) / "language-example.plan"
            doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
            real.write_text(re.search(r"```(?:plan)?\n(# comments run.*?)```", doc, re.S).group(1), encoding="utf-8")
        real_wall, real_cpu, _ = wall(cmd, str(real), max(args.repeat, 9))
        bare_wall, bare_cpu, _ = wall([sys.executable, "-c", "pass"], "", max(args.repeat, 9))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"`mdsl check` run as: {how}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
          f"load average {load:.2f}; median of {args.repeat} runs")
    print(f"a bare `python -c pass` takes {bare_wall:.3f} s wall, {bare_cpu:.3f} s CPU")
    print()
    print(f"{'steps':>7} {'lines':>8} {'tokens':>9} {'KiB':>6} {'findings':>8} | {'wall s':>7} {'cpu s':>7} | "
          f"{'parse s':>7} {'check s':>7}")
    for r in rows:
        print(f"{r['steps']:>7} {r['lines']:>8} {r['tokens']:>9} {r['kb']:>6} {r['findings']:>8} | "
              f"{r['wall']:>7.3f} {r['cpu']:>7.3f} | {r['parse']:>7.3f} {r['check']:>7.3f}")
    print("(wall and cpu: `mdsl check` as a subprocess, interpreter start included; "
          "parse and check: CPU seconds in-process)")
    print()
    ok = True
    for a, b in zip(rows, rows[1:], strict=False):
        k = b["steps"] / a["steps"]
        limit = TARGET_GROWTH * k / 10
        g = {key: b[key] / a[key] for key in ("wall", "cpu", "parse", "check")}
        gpc = (b["parse"] + b["check"]) / (a["parse"] + a["check"])
        flag = "ok" if gpc <= limit else "SLOW"
        ok &= flag == "ok"
        print(f"growth {a['steps']} -> {b['steps']} steps ({k:.0f}x): parse+check {gpc:.1f}x "
              f"[{flag}: target <= {limit:.0f}x]; parse {g['parse']:.1f}x, check {g['check']:.1f}x, "
              f"wall {g['wall']:.1f}x, cpu {g['cpu']:.1f}x")
    for r in rows:
        if r["steps"] == 10000:
            flag = "ok" if r["wall"] < TARGET_10K_WALL else "SLOW"
            ok &= flag == "ok"
            print(f"10k steps: {r['wall']:.3f} s wall, {r['cpu']:.3f} s CPU  [{flag}: target < {TARGET_10K_WALL} s wall]")
    flag = "ok" if real_wall < TARGET_REAL_WALL else "SLOW"
    ok &= flag == "ok"
    name = real.relative_to(ROOT) if real.is_relative_to(ROOT) else real.name
    print(f"mdsl check {name}: {real_wall:.3f} s wall, {real_cpu:.3f} s CPU  [{flag}: target < {TARGET_REAL_WALL} s wall]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
