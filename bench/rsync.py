"""Target 3: `transfer ... via = rsync` (host to host) against plain rsync between the same hosts.

    python3 bench/rsync.py                # 1 GiB, 3 rounds (about 2-3 minutes)
    python3 bench/rsync.py --quick        # 256 MiB, 2 rounds
    python3 bench/rsync.py --write-docs   # put the figures into docs/performance.md

Two sshd test hosts on 127.0.77.2 (a) and .3 (b); a random (incompressible)
file in a's root. Each round, in turn:

  rsync   what one types by hand, on the source host:
          ssh a 'rsync -a -e "ssh -F CONFIG" F root@b:F'   (rsync's own whole-file checksum, no sha256)
  mdsl    `mdsl apply` of a plan whose one step is `transfer big to b:"F" via = rsync`:
          rsync on a into F.part, a sha256 of both ends compared, the rename, the journal;
          interpreter start, check, connect and preflight included
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from _common import (
    MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, hand_made_access, load, machine, mdsl_apply,
    table, timed, write_doc_block,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=None, help="file size (default 1024; 256 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 3; 2 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) * MiB
    runs = args.runs or (2 if args.quick else 3)
    compile_bytecode()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src, dst = a.root / "big.bin", b.root / "big.bin"
        subprocess.run(f"head -c {size} /dev/urandom > {shlex.quote(str(src))}", shell=True, check=True)
        plan = H.base / "rsync.plan"
        plan.write_text(f'plan "rsync bench"\n{H.host_decl("a")}\n{H.host_decl("b")}\n'
                        f'file big on a {{ path = "{src}" }}\n'
                        f'steps {{\n  transfer big to b:"{dst}" via = rsync\n}}\n')
        rsh = hand_made_access(a, b)  # the control's ssh_config is not on host a
        by_hand = " ".join(["rsync -a -e", shlex.quote(rsh), shlex.quote(str(src)),
                            shlex.quote(f"root@{b.address}:{dst}")])

        def clean():
            subprocess.run(["rm", "-f", str(dst), f"{dst}.part"], check=True)

        def rsync(side: Side) -> float:
            return timed(H.ssh_base("a") + [by_hand])

        def mdsl(side: Side) -> float:
            m = mdsl_apply(plan)
            side.add("rss_mib", m.max_rss_kib / 1024)
            return m.seconds

        print(f"{runs} rounds of {size // MiB} MiB a -> b; {load()}")
        res = alternate(runs, {"rsync": rsync, "mdsl": mdsl}, before=clean)
        end_load = load()

    r, m = res["rsync"], res["mdsl"]
    ratio = r.med / m.med
    rows = [[f"`{s.name}`", f"{s.med:.2f}", f"{size / s.med / 1e6:.0f}", ", ".join(f"{x:.2f}" for x in s.seconds)]
            for s in (r, m)]
    text = "\n".join([
        f"{size // MiB} MiB of random bytes, host a -> host b with rsync over ssh, median of {runs} alternating "
        f"rounds. {machine()}; {end_load} at the end.", "",
        table(["way", "median s", "MB/s", "runs (s)"], rows), "",
        f"- throughput ratio mdsl / plain rsync: **{ratio:.2f}** (target >= 0.95)"])
    print()
    print(text)
    if args.write_docs:
        write_doc_block("rsync", f"`{command_line()}`\n\n" + text)
    return 0 if ratio >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
