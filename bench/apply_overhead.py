"""Target 1: per-step overhead of `mdsl apply` against OpenSSH (ControlMaster) and Ansible.

    python3 bench/apply_overhead.py               # 200 steps, 5 rounds (+ Ansible when installed): ~3 minutes
    python3 bench/apply_overhead.py --quick       # 3 rounds, Ansible once
    python3 bench/apply_overhead.py --write-docs  # put the figures into docs/performance.md

One sshd test host (tests/e2e/hosts.py) on 127.0.77.2. The work: 200 cheap
commands (`true`) on that host, one after the other.

  ssh-cm    a shell loop of 200 `ssh host true` through an OpenSSH ControlMaster
            opened before the clock starts (the fastest way by hand)
  mdsl      `mdsl apply --yes --restart` of a plan of 200 `run h "true"` steps:
            interpreter start, parse, check, compile, connect, preflight, the
            steps, and the journal (two fsynced records per step), all timed
  ansible   `ansible-playbook` of one play with the same 200 commands as
            `ansible.builtin.command` tasks (pipelining on, gather_facts off,
            fact gathering being what a by-hand run would not do either);
            only if `ansible-playbook` is found (PATH, or --ansible PATH).
            Install it beside, not into, mdsl's environment:
            python3 -m venv /tmp/mdsl-ansible && /tmp/mdsl-ansible/bin/pip install ansible-core

Also: mdsl's fixed cost (the same apply with one step) and so its cost per
added step, and the SSH backend's own per-command latency in this process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time

from _common import (
    BenchHosts, Side, alternate, command_line, compile_bytecode, control_master, load, machine, mdsl_apply,
    median, table, write_doc_block,
)

STEPS = 200


def _plan(H: BenchHosts, n: int, name: str):
    p = H.base / f"{name}.plan"
    p.write_text(f'plan "{n} cheap steps"\n{H.host_decl("a")}\nsteps {{\n'
                 + "".join('  run a "true"\n' for _ in range(n)) + "}\n")
    return p


def _ansible_files(H: BenchHosts, n: int):
    h = H.cluster.a
    inv = H.base / "inventory.ini"
    inv.write_text(
        f"a ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
        f"ansible_ssh_private_key_file={H.cluster.client_key} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={H.cluster.known_hosts} -o StrictHostKeyChecking=yes'\n")
    book = H.base / "playbook.yml"
    book.write_text("- hosts: a\n  gather_facts: false\n  tasks:\n"
                    + "".join(f"    - name: step {i}\n      ansible.builtin.command: 'true'\n" for i in range(n)))
    cfg = H.base / "ansible.cfg"
    cfg.write_text("[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n"
                   f"local_tmp = {H.base}/ansible-local\nremote_tmp = /tmp/.ansible-mdsl-bench\n"
                   "[ssh_connection]\npipelining = True\n"
                   f"control_path_dir = {H.base}/ansible-cp\n")
    return inv, book, cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="rounds (default 5; 3 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ansible", default=None, help="path of ansible-playbook (default: PATH, /tmp/mdsl-ansible)")
    ap.add_argument("--ansible-runs", type=int, default=None, help="Ansible rounds (default 3; 1 with --quick)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    ansible = args.ansible or shutil.which("ansible-playbook") or (
        "/tmp/mdsl-ansible/bin/ansible-playbook" if os.path.exists("/tmp/mdsl-ansible/bin/ansible-playbook") else None)
    ansible_runs = args.ansible_runs or (1 if args.quick else 3)
    compile_bytecode()

    with BenchHosts(1) as H:
        plan, one = _plan(H, STEPS, "overhead"), _plan(H, 1, "one-step")
        mdsl_apply(plan)  # warm: caches (lark tables), page cache
        with control_master(H, "a") as ssh:
            loop = (f"for i in $(seq {STEPS}); do {' '.join(map(shlex.quote, ssh))} true || exit 1; done")

            def ssh_cm(side: Side) -> float:
                t = time.perf_counter()
                subprocess.run(["bash", "-c", loop], check=True)
                return time.perf_counter() - t

            def mdsl(side: Side) -> float:
                m = mdsl_apply(plan)
                side.add("rss_mib", m.max_rss_kib / 1024)
                return m.seconds

            def mdsl_one(side: Side) -> float:
                return mdsl_apply(one).seconds

            print(f"{runs} rounds of {STEPS} commands; {load()}")
            res = alternate(runs, {"ssh-cm": ssh_cm, "mdsl": mdsl, "mdsl-1-step": mdsl_one})

        backend_ms = _backend_latency(H)
        ans = None
        if ansible:
            inv, book, cfg = _ansible_files(H, STEPS)
            env = {**os.environ, "ANSIBLE_CONFIG": str(cfg)}

            def ansible_run(side: Side) -> float:
                t = time.perf_counter()
                r = subprocess.run([ansible, "-i", str(inv), str(book)], env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"ansible-playbook failed:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
                return time.perf_counter() - t

            def mdsl_again(side: Side) -> float:
                return mdsl_apply(plan).seconds

            ans = alternate(ansible_runs, {"ansible": ansible_run, "mdsl": mdsl_again})
            version = subprocess.run([ansible, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        end_load = load()

    m, cm, one_s = res["mdsl"], res["ssh-cm"], res["mdsl-1-step"]
    per_step = (m.med - one_s.med) / (STEPS - 1)
    rows = [["`ssh` loop, open ControlMaster", f"{cm.med:.2f}", f"{cm.med / STEPS * 1000:.1f}",
             ", ".join(f"{s:.2f}" for s in cm.seconds)],
            ["`mdsl apply` (journal included)", f"{m.med:.2f}", f"{m.med / STEPS * 1000:.1f}",
             ", ".join(f"{s:.2f}" for s in m.seconds)],
            ["`mdsl apply` of 1 step (fixed cost)", f"{one_s.med:.2f}", "",
             ", ".join(f"{s:.2f}" for s in one_s.seconds)]]
    lines = [f"{STEPS} `true` commands on one SSH host, median of {runs} alternating rounds. {machine()}; "
             f"{end_load} at the end.", ""]
    if ans is not None:
        a = ans["ansible"]
        rows.append([f"`ansible-playbook` ({version.strip()}, pipelining)", f"{a.med:.2f}",
                     f"{a.med / STEPS * 1000:.1f}", ", ".join(f"{s:.2f}" for s in a.seconds)])
    lines.append(table(["way", "median s", "ms / command", "runs (s)"], rows))
    lines += ["", f"- ratio mdsl / ssh ControlMaster loop: **{m.med / cm.med:.2f}** (target <= 1.0)",
              f"- mdsl per added step: {per_step * 1000:.1f} ms (the 200-step apply minus the 1-step apply, /199); "
              f"fixed cost {one_s.med:.2f} s (interpreter, parse, check, connect, preflight)",
              f"- SSH backend alone, `true` on one connection: {backend_ms:.1f} ms per command (median of 200)",
              f"- mdsl peak RSS: {m.med_of('rss_mib'):.0f} MiB"]
    if ans is not None:
        lines.append(f"- Ansible / mdsl: **{ans['ansible'].med / ans['mdsl'].med:.1f}x** slower "
                     f"(median of {ansible_runs} alternating rounds; target >= 20x)")
    else:
        lines.append("- Ansible: not measured (no ansible-playbook found; see the script's docstring)")
    text = "\n".join(lines)
    print()
    print(text)
    if args.write_docs:
        write_doc_block("overhead", f"`{command_line()}`\n\n" + text)
    return 0 if m.med <= cm.med else 1


def _backend_latency(H: BenchHosts) -> float:
    from mdsl.model import Host
    from mdsl.run.ssh import SshBackend

    h = H.cluster.a
    b = SshBackend(Host(name="a", address=h.address, user=h.user, port=h.port, identity=str(H.cluster.client_key),
                        known_hosts=str(H.cluster.known_hosts)))
    try:
        b.connect()
        for _ in range(20):
            b.run("true")
        times = []
        for _ in range(200):
            t = time.perf_counter()
            b.run("true")
            times.append(time.perf_counter() - t)
        return median(times) * 1000
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
