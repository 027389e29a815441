"""The package's shape: no import cycle between mdsl's modules, every module importable alone, none too long.

An import counts wherever it is written (a function-local import that closes a cycle is still a
cycle: it only hides it from the interpreter until that function runs). Modules over MAX_LINES
are listed in LONG with the reason, and the list may only shrink.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "mdsl"
MAX_LINES = 650

# module -> why it may be longer than MAX_LINES (remove the entry when it is split)
LONG: Dict[str, str] = {}

# Modules that do something when imported, and so are not imported alone here.
NOT_IMPORTED = {"mdsl.__main__": "runs the CLI (tests/cli/test_cli_process.py runs `python -m mdsl`)"}


def modules() -> Dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = f
    return out


def _imported(mods: Dict[str, Path], name: str, node: ast.AST) -> List[str]:
    """The package's modules an import statement in module `name` names (`from a import b` may name a.b)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = name.split(".")
        if node.level:
            keep = len(base) - node.level + (1 if mods[name].name == "__init__.py" else 0)
            prefix = ".".join(base[:keep] + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
    out = []
    for t in targets:
        while t and t not in mods:
            t = t.rpartition(".")[0]
        if t and t != name:
            out.append(t)
    return out


def import_graph(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    """module -> the package's modules it imports, anywhere in its text."""
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                       for t in _imported(mods, name, node)}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), except a package and its own modules."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    # a package importing its own submodules (pkg/__init__ -> pkg.sub -> pkg) is not a design cycle
    return [c for c in found if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]


def test_the_cycle_finder_finds_a_function_local_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg.high import g\n")
    (pkg / "high.py").write_text("from pkg import low\n")
    (pkg / "other.py").write_text("from . import low\n")
    mods = {"pkg": pkg / "__init__.py", "pkg.low": pkg / "low.py", "pkg.high": pkg / "high.py",
            "pkg.other": pkg / "other.py"}
    graph = import_graph(mods)
    assert graph["pkg.other"] == {"pkg", "pkg.low"}
    assert cycles(graph) == [["pkg.high", "pkg.low"]]


def test_no_import_cycle():
    assert cycles(import_graph(modules())) == []


def test_no_module_is_too_long():
    mods = modules()
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in mods.items()}
    too_long = {name: n for name, n in lines.items() if n > MAX_LINES and name not in LONG}
    assert too_long == {}, f"split these (or argue for them in LONG and docs/design.md): {too_long}"
    split_already = [name for name in LONG if name not in lines or lines[name] <= MAX_LINES]
    assert split_already == [], f"remove from LONG: {split_already}"


def test_every_module_imports_alone():
    """A module that only imports after another one was imported first hides a cycle or a missing import."""
    names = [n for n in modules() if n not in NOT_IMPORTED]

    def load(name: str):
        p = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
        return name, p.returncode, p.stderr.strip().splitlines()[-1:] if p.returncode else []

    with ThreadPoolExecutor(4) as pool:
        failed = [(name, err) for name, code, err in pool.map(load, names) if code]
    assert failed == []
