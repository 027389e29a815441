"""Target 2: `transfer` through the control machine (`via = stream`) against the OpenSSH pipeline.

    python3 bench/transfer.py                 # 1 GiB, 3 rounds (about 3-4 minutes on a loaded 2-CPU box)
    python3 bench/transfer.py --quick         # 256 MiB, 2 rounds
    python3 bench/transfer.py --paramiko      # also mdsl forced onto its paramiko channels (MDSL_STREAM=paramiko)
    python3 bench/transfer.py --write-docs    # put the figures into docs/performance.md

Two sshd test hosts (tests/e2e/hosts.py) on 127.0.77.2 and .3. The file is
random bytes (incompressible) in host a's root. Each round runs, in turn:

  openssh      the by-hand pipeline, OpenSSH's default cipher:
               ssh a 'cat < F' | tee >(sha256sum) | ssh b 'cat > F.part';
               ssh b 'sha256sum < F.part' (compared); ssh b 'mv F.part F'
  openssh-gcm  the same with `-c aes128-gcm@openssh.com` (the fastest cipher here)
  mdsl         `mdsl apply` of a plan whose one step is `transfer big to b:"F"`:
               process start, parse, check, connect, preflight, the copy with the
               source's sha256 computed in the same pass, the landed file hashed
               on b, the rename, the journal

and the figures are medians. Throughput is the file size over the wall time
of the whole thing. "control CPU" is the CPU time spent on the control
machine's side (the `bash` pipeline or the `mdsl` process, each with the
processes it started: ssh clients, tee, sha256sum), the sshd side being the
same for all; on a real control machine, whose hosts are elsewhere, it is
what bounds the throughput. mdsl's peak memory is the resident set of the `mdsl`
process (wait4's ru_maxrss), measured here for this size and for a file 16
times smaller: it does not grow with the file.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from _common import (
    MiB, BenchHosts, Side, alternate, command_line, compile_bytecode, load, machine, mdsl_apply, median,
    run_measured, table, write_doc_block,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=None, help="file size (default 1024; 256 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 3; 2 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--paramiko", action="store_true", help="also time mdsl on paramiko channels only")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) * MiB
    runs = args.runs or (2 if args.quick else 3)
    compile_bytecode()

    with BenchHosts(2) as H:
        a, b = H.cluster.a, H.cluster.b
        src, dst = a.root / "big.bin", b.root / "big.bin"
        small = a.root / "small.bin"
        print(f"writing {size // MiB} MiB of random bytes into {src}")
        subprocess.run(f"head -c {size} /dev/urandom > {shlex.quote(str(src))}", shell=True, check=True)
        subprocess.run(f"head -c {size // 16} /dev/urandom > {shlex.quote(str(small))}", shell=True, check=True)

        def plan_for(path, name):
            p = H.base / f"{name}.plan"
            p.write_text(f'plan "transfer bench"\n{H.host_decl("a")}\n{H.host_decl("b")}\n'
                         f'file big on a {{ path = "{path}" }}\n'
                         f'steps {{\n  transfer big to b:"{dst}"\n}}\n')
            return p

        plan, small_plan = plan_for(src, "transfer"), plan_for(small, "transfer-small")

        def clean():
            subprocess.run(["rm", "-f", str(dst), f"{dst}.part"], check=True)

        def anchor(cipher=None):
            opts = ["-c", cipher] if cipher else []
            sa = " ".join(map(shlex.quote, H.ssh_base("a", *opts)))
            sb = " ".join(map(shlex.quote, H.ssh_base("b", *opts)))
            q = shlex.quote
            fifo, sent = q(str(H.base / "fifo")), q(str(H.base / "sent"))
            script = f"""set -euo pipefail
rm -f {fifo} && mkfifo {fifo}
sha256sum < {fifo} | cut -c1-64 > {sent} & hasher=$!
{sa} {q('cat < ' + q(str(src)))} | tee {fifo} | {sb} {q('cat > ' + q(str(dst) + '.part'))}
wait $hasher; sent=$(cat {sent})
landed=$({sb} {q('sha256sum < ' + q(str(dst) + '.part') + ' | cut -c1-64')})
[ "$sent" = "$landed" ] || {{ echo "checksum mismatch" >&2; exit 1; }}
{sb} {q('mv -f -T -- ' + q(str(dst) + '.part') + ' ' + q(str(dst)))}
"""
            m = run_measured(["bash", "-c", script])
            if m.returncode != 0:
                raise RuntimeError(f"the OpenSSH pipeline failed: {m.stderr[-2000:]}")
            return m

        def openssh(side: Side) -> float:
            m = anchor()
            side.add("cpu", m.cpu)
            return m.seconds

        def openssh_gcm(side: Side) -> float:
            m = anchor("aes128-gcm@openssh.com")
            side.add("cpu", m.cpu)
            return m.seconds

        def mdsl_side(env=None):
            def run(side: Side) -> float:
                try:
                    m = mdsl_apply(plan, env=env)
                except RuntimeError as exc:
                    if env is None:
                        raise
                    print(f"  {side.name} FAILED: {str(exc).strip().splitlines()[-3:]}")
                    return float("nan")
                side.add("rss_mib", m.max_rss_kib / 1024)
                side.add("cpu", m.cpu)
                return m.seconds
            return run

        sides = {"openssh": openssh, "openssh-gcm": openssh_gcm, "mdsl": mdsl_side()}
        if args.paramiko:
            sides["mdsl-paramiko"] = mdsl_side({**os.environ, "MDSL_STREAM": "paramiko"})
        print(f"{runs} rounds of {size // MiB} MiB a -> b; {load()}")
        res = alternate(runs, sides, before=clean)
        with open(dst, "rb") as f1, open(src, "rb") as f2:  # the copy is the file
            assert os.path.getsize(dst) == size and f1.read(1 << 20) == f2.read(1 << 20)
        clean()
        small_rss = []
        for _ in range(2):
            small_rss.append(mdsl_apply(small_plan).max_rss_kib / 1024)
            clean()
        end_load = load()

    def mbps(side: Side) -> float:
        return size / side.med / 1e6

    rows = []
    for name, side in res.items():
        rows.append([f"`{name}`", f"{side.med:.2f}", f"{mbps(side):.0f}",
                     ", ".join(f"{s:.2f}" if s == s else "failed" for s in side.seconds),
                     f"{side.med_of('cpu'):.2f}",
                     f"{side.med_of('rss_mib'):.0f} MiB" if "rss_mib" in side.extra else ""])
    best_anchor = min((res["openssh"], res["openssh-gcm"]), key=lambda s: s.med)
    ratio_default = res["openssh"].med / res["mdsl"].med
    ratio_best = best_anchor.med / res["mdsl"].med
    rss_big = max(res["mdsl"].extra["rss_mib"])
    out = [f"{size // MiB} MiB of random bytes, host a -> host b through the control machine, "
           f"median of {runs} alternating rounds. {machine()}; {end_load} at the end.", "",
           table(["way", "median s", "MB/s", "runs (s)", "control CPU s", "mdsl peak RSS"], rows), "",
           f"- throughput ratio mdsl / OpenSSH pipeline (default cipher): **{ratio_default:.2f}** (target >= 0.9)",
           f"- throughput ratio mdsl / OpenSSH pipeline (aes128-gcm, `{best_anchor.name}` the faster anchor): "
           f"**{ratio_best:.2f}**",
           f"- mdsl peak RSS: {rss_big:.0f} MiB for {size // MiB} MiB, {median(small_rss):.0f} MiB for "
           f"{size // 16 // MiB} MiB (target < 100 MiB whatever the size)"]
    text = "\n".join(out)
    print()
    print(text)
    if args.write_docs:
        write_doc_block("transfer", f"`{command_line()}`\n\n" + text)
    return 0 if ratio_default >= 0.9 and rss_big < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
