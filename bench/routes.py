"""Routes of a host-to-host `sync` (issue 11): direct and relay against plain rsync between the same hosts.

    python3 bench/routes.py                # 1 GiB in 16 files, 2 rounds
    python3 bench/routes.py --quick        # 256 MiB, 1 round
    python3 bench/routes.py --write-docs   # put the figures into docs/performance.md

Two namespaced sshd test hosts on 127.0.77.2 (a) and .3 (b), sharing nothing. Each round, in turn,
into an emptied target dir:

  rsync   what an admin runs by hand after giving a its own key for b:
          ssh a 'rsync -a --delete -e "ssh -p PORT" SRC/ root@b:DST/'
  direct  `mdsl apply` of `sync old to new route = direct` (a key pair made for the copy, the
          target's known host key; interpreter start, check, connect and preflight included)
  relay   the same with `route = relay` (through an `ssh -R` tunnel from this machine to a)
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
    ap.add_argument("--size-mib", type=int, default=None, help="total size (default 1024; 256 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) * MiB
    runs = args.runs or (1 if args.quick else 2)
    compile_bytecode()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src, dst = a.root / "data", b.root / "data"
        src.mkdir()
        for i in range(16):
            subprocess.run(f"head -c {size // 16} /dev/urandom > {shlex.quote(str(src / f'part-{i:02}.bin'))}",
                           shell=True, check=True)
        plans = {}
        for route in ("direct", "relay"):
            plans[route] = H.base / f"{route}.plan"
            plans[route].write_text(
                f'plan "routes bench"\n{H.host_decl("a")}\n{H.host_decl("b")}\n'
                f'dir old on a {{ path = "{src}" }}\n'
                f'dir new on b {{ path = "{dst}"  owner = "root:root" }}\n'
                f'steps {{\n  sync old to new route = {route}\n}}\n')
        by_hand = " ".join(["rsync -a --delete -e", shlex.quote(hand_made_access(a, b)), shlex.quote(f"{src}/"),
                            shlex.quote(f"root@{b.address}:{dst}/")])

        def clean():
            subprocess.run(["rm", "-rf", str(dst)], check=True)

        def rsync(side: Side) -> float:
            return timed(H.ssh_base("a") + [by_hand])

        def mdsl_route(route: str):
            def run(side: Side) -> float:
                return mdsl_apply(plans[route]).seconds
            return run

        print(f"{runs} rounds of {size // MiB} MiB a -> b; {load()}")
        res = alternate(runs, {"rsync": rsync, "direct": mdsl_route("direct"), "relay": mdsl_route("relay")},
                        before=clean)
        end_load = load()

    r = res["rsync"]
    rows = [[f"`{s.name}`", f"{s.med:.2f}", f"{size / s.med / 1e6:.0f}", f"{r.med / s.med:.2f}",
             ", ".join(f"{x:.2f}" for x in s.seconds)] for s in (r, res["direct"], res["relay"])]
    text = "\n".join([
        f"`sync` of {size // MiB} MiB (16 random files), host a -> host b (namespaced, sharing nothing), median "
        f"of {runs} alternating rounds into an empty target. {machine()}; {end_load} at the end.", "",
        table(["way", "median s", "MB/s", "of plain rsync", "runs (s)"], rows), "",
        "- `auto` takes direct when the source reaches the target (preflight logs in through it), else relay"])
    print()
    print(text)
    if args.write_docs:
        write_doc_block("routes", f"`{command_line()}`\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
