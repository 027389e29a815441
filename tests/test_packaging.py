"""The grammar ships inside the wheel: build it, install it into a fresh venv, run `mdsl check` there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_wheel_carries_the_grammar_and_checks_a_plan(tmp_path):
    # setuptools builds in the source tree (build/, *.egg-info): build a copy, leave the checkout alone
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".mdsl", ".hypothesis", ".pytest_cache"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = dist.glob("mdsl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mdsl/grammar/mdsl.lark" in names
    # every package of the source tree ships (pyproject lists them one by one; a store kind adds its own)
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "mdsl").rglob("__init__.py")}
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set()
    assert not [n for n in names if n.startswith(("tests/", "plans/", "bench/"))]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies (lark, attrs, ...) come from this environment's site-packages, appended
    # after the new venv's own: mdsl itself is only the wheel's. (--system-site-packages would
    # expose the base interpreter's packages, not this environment's when it is a venv too.)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_mdsl_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MDSL_CACHE_DIR"] = str(tmp_path / "cache")
    where = subprocess.run([str(py), "-c", "import mdsl.syntax.parser as p; print(p.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(venv)), where  # not the checkout's copy
    r = subprocess.run([str(venv / "bin" / "mdsl"), "check", "--format", "json",
                        str(ROOT / "plans" / "examples" / "seed-as-it-went.plan")],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 1, r.stderr
    assert [f["code"] for f in json.loads(r.stdout)] == ["H101", "H302"]
