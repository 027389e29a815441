"""Target 13: a named Docker volume moved between Docker hosts, mdsl against the by-hand way; and a database
inside a container dumped and restored against the same database on the host.

    python3 bench/docker.py                # 20,000 files, 1 GiB volume; ~1.1 M-row database; 2 rounds
    python3 bench/docker.py --quick        # 5,000 files, 256 MiB; a small database; 1 round
    python3 bench/docker.py --write-docs   # put the figures into docs/performance.md
    python3 bench/docker.py --only database --quick   # one half

Two sshd test hosts on 127.0.77.2 (a) and .3 (b), each with its own dockerd
(tests/e2e/dockerd.py) and DOCKER_HOST. The volume `bench_data` on a holds the
tree of bench/files.py (half small compressible text, half incompressible
media). Each round, in turn, with the target volume removed before each way:

  by-hand      what the Docker documentation and most guides do, piped over ssh:
               ssh a 'docker run --rm -v bench_data:/v IMG tar czf - -C /v .' |
               ssh b 'docker run --rm -i -v bench_data:/v IMG tar xzf - -C /v'
               (IMG: a small image of this machine's sh, tar and gzip, standing in for busybox)
  mdsl-sync    `mdsl apply` of `sync old to new` (rsync between the mountpoints, numeric ids,
               the target volume created with its labels), check and preflight included
  mdsl-archive `mdsl apply` of archive (zstd) + transfer (sha256 both ends) + extract

The database: the Mastodon-like dataset of tests/e2e/hosts.py, once in a
PostgreSQL 15 cluster on the host and once in a container of the same
PostgreSQL 15 (same settings), each dumped and restored into a new database on
the same host by `mdsl apply` (mdsl's defaults: zstd custom dump, pg_restore -j).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    E2E, MiB, BenchHosts, alternate, command_line, compile_bytecode, journal_steps, load, machine, mdsl_apply,
    table, write_doc_block,
)
from files import make_tree

sys.path.insert(0, str(E2E))
from dockerd import IMAGE, Dockerd, build_rootfs, copy_programs  # noqa: E402
from hosts import descendants  # noqa: E402

TOOLS_IMAGE = "mdsl-bench/tools:1"
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")  # cgroup v1's CPU hierarchy (where dockerd puts containers here)
# The host cluster's settings (tests/e2e/hosts.py, beside the fsync=off and full_page_writes=off of the image's entry).
PG_SETTINGS = ["-c", "synchronous_commit=off", "-c", "shared_buffers=32MB", "-c", "max_connections=50",
               "-c", "max_wal_size=1GB", "-c", "min_wal_size=32MB", "-c", "wal_recycle=off",
               "-c", "dynamic_shared_memory_type=mmap"]


def volume_way(H, daemons, runs: int, n_files: int, total: int, groups: CpuGroups):
    a, b = H.cluster.a, H.cluster.b
    da, db = daemons
    da.docker("volume", "create", "bench_data")
    src = Path(da.docker("volume", "inspect", "--format", "{{.Mountpoint}}", "bench_data").stdout.strip())
    print(f"making {n_files} files, {total // MiB} MiB, in volume bench_data on a")
    make_tree(str(src), n_files, total)
    real = int(subprocess.run(["du", "-sb", str(src)], capture_output=True, text=True).stdout.split()[0])

    def plan(steps: str, name: str) -> Path:
        p = H.base / f"{name}.plan"
        p.write_text(f'''plan "volume bench"
{H.host_decl("a")}
{H.host_decl("b")}
volume old on a {{ docker = "bench_data" }}
volume new on b {{ docker = "bench_data"  fresh = true }}
steps {{
{steps}
}}
''')
        return p

    sync_plan = plan("  sync old to new", "sync")
    archive_plan = plan(f'  archive old to a:"{a.root}/v.tar.zst"\n  transfer a:"{a.root}/v.tar.zst" to '
                        f'b:"{b.root}/v.tar.zst"\n  extract b:"{b.root}/v.tar.zst" into new', "archive")

    def clean():
        db.docker("volume", "rm", "-f", "bench_data", check=False)
        subprocess.run(["rm", "-f", f"{a.root}/v.tar.zst", f"{b.root}/v.tar.zst"])

    def by_hand(side) -> float:
        t = time.monotonic()
        grp_a, grp_b = (" ".join(groups.run_args(side)) for side in ("tar-a", "tar-b"))
        out = subprocess.Popen(H.ssh_base("a") + [f"docker run --rm --network none {grp_a} -v bench_data:/v "
                                                  f"{TOOLS_IMAGE} tar czf - -C /v ."], stdout=subprocess.PIPE)
        subprocess.run(H.ssh_base("b") + [f"docker run --rm -i --network none {grp_b} -v bench_data:/v "
                                          f"{TOOLS_IMAGE} tar xzf - -C /v"], stdin=out.stdout, check=True)
        out.stdout.close()
        assert out.wait() == 0
        return time.monotonic() - t

    def mdsl(p: Path):
        return lambda side: mdsl_apply(p).seconds

    print(f"{runs} round(s), {real / MiB:.0f} MiB; {load()}")
    res = alternate(runs, {"by-hand": by_hand, "mdsl-sync": mdsl(sync_plan), "mdsl-archive": mdsl(archive_plan)},
                    before=clean)
    dst = Path(db.docker("volume", "inspect", "--format", "{{.Mountpoint}}", "bench_data").stdout.strip())
    diff = subprocess.run(["diff", "-rq", str(src), str(dst)], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout[-2000:]
    hand = res["by-hand"]
    rows = [[f"`{x.name}`", f"{x.med:.1f}", ", ".join(f"{v:.1f}" for v in x.seconds), f"{x.med / hand.med:.2f}"]
            for x in (hand, res["mdsl-sync"], res["mdsl-archive"])]
    return "\n".join([
        f"Volume: {n_files} files, {real / MiB:.0f} MiB (half small text, half incompressible media) from a "
        f"Docker volume on a to one on b; median of {runs} alternating round(s).", "",
        table(["way", "median s", "runs (s)", "ratio to by-hand"], rows), "",
        f"- ratio mdsl (sync) / by hand (helper containers, tar czf over ssh): "
        f"**{res['mdsl-sync'].med / hand.med:.2f}**; archive (zstd) + transfer + extract: "
        f"{res['mdsl-archive'].med / hand.med:.2f}",
        "- the helper containers each in a root-level CPU cgroup of weight 1024, as a process on the host"
        if groups.available else "- (no cgroup v1 CPU hierarchy)"])


class CpuGroups:
    """Each side of a comparison under the same CPU weight.

    Under cgroup v1 dockerd puts every container (of every daemon on the machine) in `/docker`,
    whose weight (cpu.shares 1024) is that of one process: on a loaded machine a server in a
    container gets one process's share of the CPU, a server on the host one per busy process, and
    the comparison measures the scheduler, not `docker exec`. So each side runs as one root-level
    group of weight 1024 against the rest of the machine: the container under a group of its own
    (`--cgroup-parent`), the host cluster's processes moved into another. The commands mdsl runs
    on the host (the sshd test host's processes: pg_dump, zstd, pg_restore's client, the docker
    CLI) join the group of the side being measured (`join`): inside a container pg_dump and
    pg_restore run in the container's group, so on the host they must count against the host
    server's group too, not as processes of their own. All groups are removed at the end. Without
    cgroup v1 nothing is changed.
    """

    def __init__(self, tag: str) -> None:
        self.available = (CPU_CGROUPS / "cpu.shares").exists()
        self.prefix = f"mdsl-bench-{tag}-"

    def run_args(self, name: str) -> list:
        """`docker run` options putting the container in a root-level group of its own (`name`)."""
        return ["--cgroup-parent", f"/{self.prefix}{name}"] if self.available else []

    def join(self, name: str, pids) -> None:
        """Move these processes into the root-level group `name` (made with weight 1024 when missing)."""
        if not self.available:
            return
        group = CPU_CGROUPS / f"{self.prefix}{name}"
        group.mkdir(exist_ok=True)
        (group / "cpu.shares").write_text("1024")
        for pid in pids:
            try:
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:  # ended meanwhile
                pass

    def note(self) -> str:
        return ("each side in one root-level CPU cgroup of weight 1024: the container by `--cgroup-parent`, the host "
                "cluster moved into one; the host's commands (the test host's sshd and its children) moved into "
                "the group of the side being measured" if self.available else "no cgroup v1 CPU hierarchy: no CPU groups")

    def remove(self) -> None:
        """Every process moved here back to the root group; every group made here removed."""
        if not self.available:
            return
        for group in CPU_CGROUPS.glob(f"{self.prefix}*"):
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    (CPU_CGROUPS / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
        for d in Path("/sys/fs/cgroup").glob(f"*/{self.prefix}*"):
            try:
                d.rmdir()
            except OSError:
                pass


def database_way(H, daemons, runs: int, rows: int, groups: CpuGroups):
    a = H.cluster.a
    da = daemons[0]
    host_pg = H.postgres("host")
    host_pg.createdb("app")
    host_pg.load_dataset("app", rows=rows)
    groups.join("host", [host_pg.pid, *descendants(host_pg.pid)])
    da.docker("run", "-d", "--name", "benchpg", "--network", "none", "--user", "999:999", *groups.run_args("db"), "-v",
              "benchpg:/var/lib/postgresql/data", IMAGE, "/usr/local/bin/db-entry", *PG_SETTINGS)
    for _ in range(300):
        if da.docker("exec", "benchpg", "pg_isready", "-q", check=False).returncode == 0:
            break
        time.sleep(0.2)
    da.docker("exec", "benchpg", "createdb", "-U", "postgres", "app")
    dump = subprocess.Popen([str(host_pg.bindir / "pg_dump"), "-Fc", "-Z0", "-h", str(host_pg.sockdir),
                             "-p", str(host_pg.port), "-U", "postgres", "app"], stdout=subprocess.PIPE)
    subprocess.run(["docker", "exec", "-i", "benchpg", "pg_restore", "-U", "postgres", "-d", "app"],
                   stdin=dump.stdout, env=da.env, check=True)
    dump.stdout.close()
    dump.wait()
    size = int(da.docker("exec", "benchpg", "psql", "-X", "-A", "-t", "-U", "postgres", "-d", "app", "-c",
                         "select pg_database_size('app')").stdout.strip())

    def plan(decls: str, name: str) -> Path:
        p = H.base / f"db-{name}.plan"
        p.write_text(f'''plan "db bench"
{H.host_decl("a")}
{decls}
steps {{
  dump old to a:"{a.root}/{name}.dump"
  restore a:"{a.root}/{name}.dump" into new replace
}}
''')
        return p

    sock = f'socket = "{host_pg.sockdir}"  port = {host_pg.port}  bin = "{host_pg.bindir}"'
    on_host = plan(f'postgres old on a {{ database = "app"  user = "postgres"  {sock} }}\n'
                   f'postgres new on a {{ database = "copy"  user = "postgres"  {sock}  fresh = true }}', "host")
    in_container = plan('postgres old on a { container = "benchpg"  database = "app"  user = "postgres" }\n'
                        'postgres new on a { container = "benchpg"  database = "copy"  user = "postgres"  '
                        'fresh = true }', "container")

    def clean():
        subprocess.run(["rm", "-f", f"{a.root}/host.dump", f"{a.root}/container.dump"])

    if os.environ.get("MDSL_BENCH_HOLD"):  # keep the hosts for measuring by hand until this file is removed
        hold = Path(os.environ["MDSL_BENCH_HOLD"])
        hold.write_text(f"DOCKER_HOST={da.host}\nBASE={H.base}\nHOST_PLAN={on_host}\nCONTAINER_PLAN={in_container}\n"
                        f"HOST_PG_PID={host_pg.pid}\n")
        print(f"holding: {hold.read_text()}", flush=True)
        while hold.exists():
            time.sleep(1)

    def side(plan: Path, group: str):
        def run(s) -> float:
            groups.join(group, [a.pid, *descendants(a.pid)])  # the host's commands count against this side
            m = mdsl_apply(plan)
            for step, secs in journal_steps(plan).items():
                s.add(step, secs)
            return m.seconds
        return run

    res = alternate(runs, {"on the host": side(on_host, "host"), "in a container": side(in_container, "db")},
                    before=clean)
    host, cont = res["on the host"], res["in a container"]
    rows_md = [[f"`{x.name}`", f"{x.med:.1f}", ", ".join(f"{v:.1f}" for v in x.seconds)] for x in (host, cont)]
    return "\n".join([
        f"Database: the Mastodon-like dataset ({rows} statuses, {size / MiB:.0f} MiB on disk), dumped and "
        f"restored into a new database on the same host by `mdsl apply` (mdsl's defaults); median of {runs} "
        "alternating round(s).", "",
        table(["where", "median s", "runs (s)"], rows_md), "",
        f"- ratio in a container (`container = ...`, docker exec) / on the host: **{cont.med / host.med:.2f}**",
        "- steps (median s, from the journal): " + "; ".join(
            f"{x.name}: dump {x.med_of('1'):.1f}, restore {x.med_of('2'):.1f}" for x in (host, cont)),
        f"- {groups.note()}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--only", choices=("volume", "database"), help="run one half (not with --write-docs)")
    args = ap.parse_args()
    if args.only and args.write_docs:
        ap.error("--write-docs writes both halves: leave out --only")
    n_files, total = (5000, 256 * MiB) if args.quick else (20000, 1024 * MiB)
    rows = 100_000 if args.quick else 1_000_000
    runs = args.runs or (1 if args.quick else 2)
    compile_bytecode()
    with BenchHosts(2) as H:
        rootfs = build_rootfs(H.base / "rootfs", E2E / "compose_app.py")
        tools = copy_programs(H.base / "tools", ["/bin/sh", "/bin/tar", "/bin/gzip"])
        daemons = []
        groups = CpuGroups(str(os.getpid()))
        try:
            for h in H.cluster:
                d = Dockerd(H.base / "docker" / h.name, h.name).start()
                daemons.append(d)
                d.import_image(rootfs)
                d.import_image(tools, TOOLS_IMAGE)
                h.env["DOCKER_HOST"] = d.host
                h.restart()
            H.cluster.write_client_files()
            volume = volume_way(H, daemons, runs, n_files, total, groups) if args.only != "database" else ""
            database = database_way(H, daemons, runs, rows, groups) if args.only != "volume" else ""
        finally:
            for d in daemons:
                d.destroy()
            groups.remove()
        end_load = load()
    text = f"{volume}\n\n{database}\n\n{machine()}; {end_load} at the end."
    print()
    print(text)
    if args.write_docs:
        write_doc_block("docker", f"`{command_line()}`\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
