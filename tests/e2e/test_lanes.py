"""Lanes on real sshd hosts: two apps move at once, each in its own `sequence` (app 1 a -> b by
archive, transfer and extract; app 2 b -> a by sync), then a failed step in one lane is resumed."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys

from hosts import REGISTRY, FileTree
from reliability_helpers import mdsl, output

# A command service: `APP start|stop|status HOME`; `run` is the daemon (it only sleeps).
APP = r'''
import os, signal, sys, time
cmd, home = sys.argv[1], sys.argv[2]
pidfile = os.path.join(home, "app.pid")
def alive():
    try:
        pid = int(open(pidfile).read())
        return pid if b"run" in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") else None
    except (OSError, ValueError):
        return None
if cmd == "status":
    sys.exit(0 if alive() else 3)
if cmd == "stop":
    pid = alive()
    if pid:
        os.kill(pid, signal.SIGTERM)
        while alive():
            time.sleep(0.02)
    sys.exit(0)
if cmd == "start":
    if not alive():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                fd = os.open(os.devnull, os.O_RDWR)
                for i in (0, 1, 2):
                    os.dup2(fd, i)
                os.execv(sys.executable, [sys.executable, sys.argv[0], "run", home])
            os._exit(0)
        while not alive():
            time.sleep(0.01)
    sys.exit(0)
if cmd == "run":
    open(pidfile + ".tmp", "w").write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
    signal.signal(signal.SIGTERM, lambda *a: (os.unlink(pidfile), sys.exit(0)))
    while True:
        time.sleep(1)
'''


def test_two_apps_move_in_lanes_and_a_failed_lane_resumes(ssh_hosts, tmp_path):
    a, b = ssh_hosts.a, ssh_hosts.b
    homes = {"old1": a.root / "app1", "new1": b.root / "app1", "old2": b.root / "app2", "new2": a.root / "app2"}
    for root in (a.root, b.root):  # each host runs the app from its own copy (they share no files)
        (root / "app.py").write_text(APP)
    for h in homes.values():
        h.mkdir(parents=True)
    FileTree.populate(homes["old1"] / "data", files=30, seed=1)
    FileTree.populate(homes["old2"] / "data", files=40, seed=2)
    want1 = FileTree.snapshot(homes["old1"] / "data")
    want2 = FileTree.snapshot(homes["old2"] / "data")

    def ctl(verb, name):
        return shlex.join([sys.executable, str(homes[name].parent / "app.py"), verb, str(homes[name])])

    def running(name) -> bool:
        return subprocess.run(ctl("status", name), shell=True).returncode == 0

    def service(name, host, initially=""):
        return (f'service app_{name} on {host} {{ start = "{ctl("start", name)}"  stop = "{ctl("stop", name)}"  '
                f'status = "{ctl("status", name)}"  writes = [data_{name}] {initially}}}')

    gate = a.root / "gate"  # on host a, which tests it
    plan = tmp_path / "lanes.plan"
    plan.write_text(f"""plan "two apps in lanes"
{ssh_hosts.plan_host_decl("a")}
{ssh_hosts.plan_host_decl("b")}
dir data_old1 on a {{ path = "{homes['old1']}/data"  owner = "root:root" }}
dir data_new1 on b {{ path = "{homes['new1']}/data"  owner = "root:root"  fresh = true }}
dir data_old2 on b {{ path = "{homes['old2']}/data"  owner = "root:root" }}
dir data_new2 on a {{ path = "{homes['new2']}/data"  owner = "root:root"  fresh = true }}
{service("old1", "a")}
{service("new1", "b", "initially = stopped ")}
{service("old2", "b")}
{service("new2", "a", "initially = stopped ")}
steps {{
  parallel {{
    sequence {{
      stop app_old1
      archive data_old1 to a:"{a.root}/mdsl/app1.tar.zst"
      transfer a:"{a.root}/mdsl/app1.tar.zst" to b:"{b.root}/mdsl/app1.tar.zst"
      extract b:"{b.root}/mdsl/app1.tar.zst" into data_new1
      start app_new1
      verify run b "{ctl('status', 'new1')}"
    }}
    sequence {{
      stop app_old2
      sync data_old2 to data_new2
      start app_new2
      verify run a "test -e {gate}"
    }}
  }}
}}
""")
    for name in ("old1", "old2"):
        subprocess.run(ctl("start", name), shell=True, check=True)
    try:
        r = mdsl("check", str(plan))
        assert r.returncode == 0 and "no findings" in output(r), output(r)
        r = mdsl("plan", str(plan))
        assert r.returncode == 0 and "[1.1.4] extract" in r.stdout and "[1.2.4] verify run a" in r.stdout, output(r)

        r = mdsl("apply", "--yes", str(plan))
        assert r.returncode == 1, output(r)
        assert "step 1.2.4" in r.stderr
        # lane 1 ran to its end, lane 2 up to its failed verify; every app is where its lane left it
        assert not running("old1") and running("new1") and not running("old2") and running("new2")
        assert {k: v[0] for k, v in FileTree.snapshot(homes["new1"] / "data").items()} == \
               {k: v[0] for k, v in want1.items()}
        assert {k: v[0] for k, v in FileTree.snapshot(homes["new2"] / "data").items()} == \
               {k: v[0] for k, v in want2.items()}
        status = mdsl("status", str(plan)).stdout
        assert "[1.1.6] done" in status and "[1.2.3] done" in status and "[1.2.4] failed" in status, status

        gate.touch()
        r = mdsl("apply", "--yes", str(plan))
        assert r.returncode == 0, output(r)
        assert "[1.2.4]" in r.stdout and "[1.1.1]" not in r.stdout and "[1.2.1]" not in r.stdout, r.stdout
        assert "resuming: 0 of 1 steps (9 of 10 counting each parallel member) are done" in r.stdout, r.stdout
        assert "done: ran 1 of 1 steps (1 of 10 counting each parallel member)" in r.stdout, r.stdout
    finally:
        for name in homes:  # the plan started daemons over ssh: stop them by pid, whatever happened
            try:
                REGISTRY.record(int((homes[name] / "app.pid").read_text()), f"lanes app {name}").stop(signal.SIGTERM)
            except (OSError, ValueError):
                pass
