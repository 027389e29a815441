"""What the apply benchmarks share: test hosts, side-by-side timing, figures into docs/performance.md.

Every benchmark under bench/ (except check_scale.py) runs against the
loopback test hosts of the e2e suite (tests/e2e/hosts.py: real sshd daemons
with their own host keys, PostgreSQL 15 clusters made with initdb), started
here in a temporary directory and stopped by pid at the end. The anchor (the
by-hand way: OpenSSH, rsync, pg_dump, tar, Ansible) and mdsl alternate, run
after run, and the figures are medians, so the load other work puts on the
machine falls on both alike. Load averages are printed with the figures.

No file is left outside the temporary directory (sshd needs /run/sshd, which
the e2e suite makes too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "tests" / "e2e"
sys.path.insert(0, str(E2E))
sys.path.insert(0, str(ROOT))

from hosts import REGISTRY, PgCluster, SshCluster, make_base_dir  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
MiB = 1 << 20
GiB = 1 << 30

# Bench hosts live on their own loopback addresses, away from the e2e suite's 127.0.0.2/3.
BENCH_NET = "127.0.77"


def load() -> str:
    """`load 1.23 0.98 0.77` (1, 5, 15 minutes) and the CPU count."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def machine() -> str:
    """One line on what this is measured on."""
    import platform

    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    try:
        import fabric
        import paramiko

        libs = f"paramiko {paramiko.__version__}, fabric {fabric.__version__}"
    except ImportError:  # pragma: no cover
        libs = "no paramiko"
    return (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {ssh}, {libs}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def median(xs: Sequence[float]) -> float:
    """The median (the middle run; the mean of the two middle ones for an even count)."""
    return statistics.median(xs)


@dataclass
class Side:
    """One way of doing the work: its runs' seconds and whatever else each run measured."""

    name: str
    seconds: List[float] = field(default_factory=list)
    extra: Dict[str, List[float]] = field(default_factory=dict)

    @property
    def ok(self) -> List[float]:
        """The runs that finished (a failed run is recorded as NaN)."""
        return [x for x in self.seconds if x == x]

    @property
    def failures(self) -> int:
        return len(self.seconds) - len(self.ok)

    @property
    def med(self) -> float:
        return median(self.ok) if self.ok else float("nan")

    def add(self, key: str, value: float) -> None:
        self.extra.setdefault(key, []).append(value)

    def med_of(self, key: str) -> float:
        return median(self.extra[key]) if self.extra.get(key) else float("nan")

    def runs_text(self) -> str:
        """Every run's seconds, `12.3, 11.9`, for a table's `runs (s)` column."""
        return ", ".join(f"{v:.1f}" for v in self.seconds)

    def parts_text(self, keys: Sequence[str] = ("dump", "copy", "restore")) -> str:
        """The medians of the parts it recorded, `4.1 / 1.2 / 9.8` (`-` for a part it does not have)."""
        return " / ".join(f"{self.med_of(k):.1f}" if self.extra.get(k) else "-" for k in keys)


def alternate(runs: int, sides: Dict[str, Callable[[Side], float]], *, before: Optional[Callable[[], None]] = None,
              verbose: bool = True) -> Dict[str, Side]:
    """Run each side once per round, in turn (the order rotates every round); returns their Sides.

    Each callable does one run and returns its seconds (it may record more in
    its Side); `before` resets state before each single run, outside the timing.
    """
    out = {name: Side(name) for name in sides}
    names = list(sides)
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if before is not None:
                before()
            secs = sides[name](out[name])
            out[name].seconds.append(secs)
            if verbose:
                print(f"  round {r + 1}/{runs} {name}: {secs:.3f}s   ({load()})", flush=True)
    return out


def timed(argv, **kw) -> float:
    """Run a command (check=True), return its wall seconds."""
    t = time.perf_counter()
    subprocess.run(argv, check=True, **kw)
    return time.perf_counter() - t


@dataclass
class Measured:
    """A child process's wall time, exit status, output, peak RSS (its own, not its children's) and CPU time
    (its own plus that of the children it waited for: ssh clients, tee, sha256sum...)."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_kib: int
    cpu: float = 0.0


def run_measured(argv: Sequence[str], *, env=None, cwd=None, timeout: float = 1800) -> Measured:
    """Run argv, measuring wall time and the peak resident memory of that one process (wait4)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        secs = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(secs, p.returncode, out.read().decode("utf-8", "replace"),
                        err.read().decode("utf-8", "replace"), ru.ru_maxrss, ru.ru_utime + ru.ru_stime)


def mdsl_apply(plan: Path, *extra: str, env=None) -> Measured:
    """`python3 -m mdsl apply --yes --restart PLAN` as the operator runs it (JSON logs: stderr is no TTY)."""
    m = run_measured([sys.executable, "-m", "mdsl", "apply", "--yes", "--restart", *extra, str(plan)],
                     env=env, cwd=str(ROOT))
    if m.returncode != 0:
        raise RuntimeError(f"mdsl apply {plan} failed ({m.returncode}):\n{m.stdout[-3000:]}\n{m.stderr[-3000:]}")
    return m


def journal_steps(plan: Path) -> dict:
    """{step id: seconds} from the plan's journal (the last run)."""
    path = plan.parent / ".mdsl" / (plan.stem + ".journal")
    out = {}
    for raw in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(raw)
            if rec.get("event") in ("reset", "run"):
                out = {}
            elif rec.get("event") == "done":
                out[rec["step"]] = float(rec["seconds"])
    return out


def journal_seconds(plan: Path) -> Dict[str, float]:
    """{dump, copy, restore: seconds} of a dump / transfer / restore plan's steps 1-3 (the last run)."""
    steps = journal_steps(plan)
    return {part: steps[step] for step, part in (("1", "dump"), ("2", "copy"), ("3", "restore")) if step in steps}


def compile_bytecode() -> None:
    """Compile mdsl's bytecode once, as installing it does (PYTHONDONTWRITEBYTECODE=1 is set here)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mdsl")], check=False,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


# ---------------------------------------------------------------- what every side-by-side bench does


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The bench's argument parser, described by its docstring's first line."""
    return argparse.ArgumentParser(description=doc.split("\n")[0])


def add_runs(ap: argparse.ArgumentParser) -> None:
    """`--runs N`: the rounds (2 by default, 1 with --quick; `parse_bench_args` fills the default in)."""
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 2; 1 with --quick)")


def parse_bench_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Add `--quick` and `--write-docs` (every bench's last two options), parse, and settle `--runs`."""
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if hasattr(args, "runs"):
        args.runs = args.runs or (1 if args.quick else 2)
    return args


def bench_start() -> float:
    """Compile mdsl's bytecode, say the load at the start; the start time (perf_counter) for `minutes in all`."""
    compile_bytecode()
    started = time.perf_counter()
    print(f"start: {load()}", flush=True)
    return started


@contextlib.contextmanager
def running(*servers) -> Iterator[None]:
    """The test database servers (tests/e2e/dbservers.py) started; destroyed at the end, even on failure."""
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.destroy()


def report(key: str, text: str, write_docs: bool) -> None:
    """Print the figures; with --write-docs also into docs/performance.md's block `key`, under the command."""
    print()
    print(text)
    if write_docs:
        write_doc_block(key, f"`{command_line()}`\n\n" + text)


# ---------------------------------------------------------------- hosts


class BenchHosts:
    """sshd test hosts on 127.0.77.x (one daemon each), in a temp dir removed at the end."""

    def __init__(self, n: int = 2, prefix: str = "mdsl-bench-", first: int = 2):
        self.base = make_base_dir(prefix)
        addrs = tuple(f"{BENCH_NET}.{first + i}" for i in range(n))
        names = tuple(f"h{i}" for i in range(n)) if n > 26 else None
        self.cluster = SshCluster(self.base, addrs, names)
        self.pg: List[PgCluster] = []

    def __enter__(self) -> "BenchHosts":
        self.cluster.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for pg in self.pg:
            with contextlib.suppress(Exception):
                pg.stop()
        self.cluster.stop()
        leaked = REGISTRY.kill_all()
        if leaked:
            print("bench: processes still alive at the end (now killed): "
                  + ", ".join(f"{p.label} pid {p.pid}" for p in leaked), file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)

    def ssh_base(self, host, *opts: str) -> List[str]:
        """`ssh -F CONFIG [opts] NAME` for the OpenSSH anchors (strict host keys, our client key)."""
        h = self.cluster[host] if isinstance(host, (str, int)) else host
        return ["ssh", "-F", str(self.cluster.ssh_config), *opts, h.name]

    def host_decl(self, host, name: Optional[str] = None) -> str:
        """The plan's `host` declaration."""
        return self.cluster.plan_host_decl(host, name)

    def postgres(self, name: str, listen: str = "127.0.0.1") -> PgCluster:
        """A fresh, running PostgreSQL 15 cluster (stopped at the end)."""
        pg = PgCluster(self.base, name, listen=listen).initdb()
        self.pg.append(pg)
        return pg.start()


@contextlib.contextmanager
def control_master(hosts: BenchHosts, host) -> Iterator[List[str]]:
    """An open OpenSSH ControlMaster to `host`; yields the `ssh ...` words that use it."""
    ctl = str(hosts.base / f"cm-{host}")
    words = hosts.ssh_base(host, "-o", "ControlMaster=auto", "-o", f"ControlPath={ctl}", "-o", "ControlPersist=600")
    subprocess.run(words + ["true"], check=True)
    try:
        yield words
    finally:
        subprocess.run(words[:-1] + ["-O", "exit", words[-1]], capture_output=True)


# ---------------------------------------------------------------- docs/performance.md


def write_doc_block(key: str, text: str, doc: Path = DOC) -> None:
    """Replace the block between `<!-- bench:KEY -->` and `<!-- /bench:KEY -->` in docs/performance.md."""
    src = doc.read_text()
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pat.search(src):
        src = pat.sub(lambda _: block, src)
    else:
        src = src.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(src)
    print(f"wrote the figures into {doc.relative_to(ROOT)} (block bench:{key})")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: Optional[str] = None) -> str:
    """A Markdown table; `align` is one char per column, l or r (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def command_line() -> str:
    """How this benchmark was invoked (for the docs)."""
    return "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]
                                 if a != "--write-docs")


def hand_made_access(src, dst) -> str:
    """Give test host `src` its own key for `dst`, as an admin would by hand; return the `ssh` words for rsync -e.

    The hosts share nothing (tests/e2e/namespaces.py): the control machine's ssh_config and key are not
    on `src`, so a by-hand baseline needs a key pair in src's /root/.ssh, its public half in dst's
    authorized_keys and dst's host key in src's known_hosts.
    """
    ssh_dir = src.path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ssh_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    dst_keys = dst.path("/root/.ssh/authorized_keys")
    dst_keys.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    public = key.with_suffix(".pub").read_text()
    if not dst_keys.exists() or public not in dst_keys.read_text():  # once, however often it is asked
        with dst_keys.open("a") as f:
            f.write(public)
    (ssh_dir / "known_hosts").write_text(dst.known_hosts_line + "\n")
    return f"ssh -o BatchMode=yes -p {dst.port}"


def hand_made_scp(src, dst) -> str:
    """`hand_made_access(src, dst)`, as the options of an `scp` run on `src` (scp takes -P, not -p)."""
    return hand_made_access(src, dst).removeprefix("ssh ").replace("-p ", "-P ")
