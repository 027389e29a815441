"""SIGKILL `mdsl apply` at every step boundary and in the middle of every long step of the
e2e Mastodon-style migration, one fresh migration per kill point, and check each converges.

    python3 bench/kill_every_step.py            # all 26 points (about 15-30 s each), as root
    python3 bench/kill_every_step.py -k mid-    # only the mid-step kills

It runs tests/e2e/test_faults.py::test_sigkill_then_rerun_converges with MDSL_FAULTS_ALL=1
(real sshd hosts, PostgreSQL 15 with 100k rows, the writer service; see tests/e2e/conftest.py):
for each point, apply runs until the point is reached (a journal record appears, or a
`.part` grows, or the restore's tables appear, or the extract's files), is SIGKILLed, the source
is checked whole, and apply runs again (nothing to clear by hand: the lock is a flock) until
done; the final state must equal an uninterrupted run's (database checksums, file tree, secret
file, services) and a further apply must have nothing to do. Prints a table of the outcomes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", default="", help="only points whose name contains this")
    args = ap.parse_args()
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"mdsl-kill-every-step-{os.getpid()}.xml"
    sel = "test_sigkill_then_rerun_converges" + (f" and {args.k}" if args.k else "")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        str(ROOT / "tests" / "e2e" / "test_faults.py"), "-k", sel, f"--junitxml={report}"],
                       cwd=ROOT, env={**os.environ, "MDSL_FAULTS_ALL": "1"}, capture_output=True, text=True)
    wall = time.monotonic() - t0
    converged_after = {}
    current = None
    for line in p.stdout.splitlines():
        m = re.match(r"killed at (\S+);", line)
        if m:
            current = m.group(1)
        m = re.match(r"converged after (\d+) runs", line)
        if m and current:
            converged_after[current] = int(m.group(1))
    rows = []
    try:
        tree = ET.parse(report)
    except (OSError, ET.ParseError):
        print(p.stdout[-5000:], p.stderr[-5000:])
        return 1
    finally:
        report.unlink(missing_ok=True)
    for case in tree.iter("testcase"):
        point = re.search(r"\[(.*)\]", case.get("name", "")).group(1)
        failed = case.find("failure") is not None or case.find("error") is not None
        rows.append((point, "FAILED" if failed else "converged", converged_after.get(point, 1),
                     float(case.get("time", 0))))
    print("| kill point | outcome | re-runs to converge | seconds |\n|---|---|---|---|")
    for point, outcome, runs, secs in rows:
        print(f"| {point} | {outcome} | {runs if outcome == 'converged' else '-'} | {secs:.0f} |")
    bad = [r for r in rows if r[1] != "converged"]
    print(f"\n{len(rows)} kill points, {len(rows) - len(bad)} converged, {len(bad)} failed; {wall:.0f}s")
    if bad:
        print(p.stdout[-8000:])
    return 1 if bad or p.returncode not in (0,) else 0


if __name__ == "__main__":
    sys.exit(main())
