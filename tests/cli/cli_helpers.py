"""Helpers for the CLI tests: run `mdsl` in-process or as a subprocess."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `python -c MAIN ARGV...` runs `mdsl ARGV...`
MAIN = "import sys\nfrom mdsl.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
SCHEMAS = ROOT / "tests" / "schemas"

class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


class Result:
    """What a run of `mdsl` did: exit status, standard output and error."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"Result(code={self.code!r}, out={self.out[:2000]!r}, err={self.err[:2000]!r})"


def run(argv, stdin: bytes = b"") -> Result:
    """`mdsl ARGV` in this process, capturing its output (no capsys needed)."""
    from mdsl.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = out, err, _Stdin(stdin)
    try:
        code = main(list(argv))
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(argv, stdin: bytes = b"", env=None, cwd=None, timeout=60) -> Result:
    """`mdsl ARGV` in a fresh interpreter (`python -c`)."""
    code = MAIN
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    full_env.pop("FORCE_COLOR", None)
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-c", code, *argv], input=stdin, capture_output=True, env=full_env,
                       cwd=cwd, timeout=timeout)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def load_test_module(relpath: str, name: str):
    """Import a helper module of another test folder by path (e.g. tests/syntax/mutations.py)."""
    path = ROOT / relpath
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CLEAN_PLAN = 'plan "nothing to move"\n\nhost here { local = true }\n\nsteps {\n  confirm "ready?"\n}\n'

# Unknown names: E1xx errors whatever the checker's rules say.
UNRESOLVED_PLAN = (
    'host here { local = true }\n'
    'steps {\n'
    '  stop nothing_here\n'
    '  dump no_db to here:"/tmp/x.dump"\n'
    '}\n'
)
