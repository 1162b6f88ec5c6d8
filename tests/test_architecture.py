"""The shape of the code (docs/ARCHITECTURE.md): no import circles, imports point down the
floors of ``ccc_nodes`` (core -> steps -> job -> interfaces), and no module grows past 600
lines without a stated reason.

An import counts wherever it is written: at the top, inside a function, under
``TYPE_CHECKING``, or as a module's dotted name in a string (``importlib.import_module``);
each is a dependency all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ccc_nodes", "space", "training")
FLOORS = ("core", "steps", "job", "interfaces")  # bottom to top
MAX_LINES = 600
LONG_MODULES: dict[str, str] = {}  # path -> why it may be longer than MAX_LINES


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for f in sorted((root / package).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def _known(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the project."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules ``name`` depends on (itself left out)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(file.read_text(), str(file))
    loggers = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", ""))
               == "getLogger" for a in n.args}  # a logger's name is not an import
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known and id(node) not in loggers:
            targets = [node.value]  # a module named in a string (importlib)
        for t in targets:
            m = _known(t, known)
            if m is not None and m != name:
                found.add(m)
    return found


def graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imports(name, f, known) for name, f in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def floor(name: str) -> int | None:
    """The floor of a module of ``ccc_nodes`` (0 = core), or None for the package itself."""
    parts = name.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def test_the_circle_finder_sees_a_circle_made_of_a_lazy_import_and_a_string(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from . import c\n")
    (pkg / "c.py").write_text("import importlib\nimportlib.import_module('pkg.a')\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import thing\n")
    edges = graph(tmp_path, ("pkg",))
    assert edges["pkg.b"] == {"pkg.c"} and edges["pkg.c"] == {"pkg.a"} and edges["pkg.d"] == {"pkg.a"}
    assert circles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    (pkg / "c.py").write_text("")
    assert circles(graph(tmp_path, ("pkg",))) == []


def test_no_module_of_the_project_is_in_an_import_circle():
    assert circles(graph(ROOT)) == []


def test_imports_point_down_the_floors():
    edges = graph(ROOT)
    assert {n.split(".")[1] for n in edges if n.startswith("ccc_nodes.") and floor(n) is not None} == set(FLOORS)
    upward = []
    for name, targets in edges.items():
        if not name.startswith("ccc_nodes.") or floor(name) is None:
            continue
        for t in targets:
            if t == "ccc_nodes" and floor(name) < FLOORS.index("interfaces"):
                upward.append(f"{name} -> the package's front door ({t})")
            elif t.startswith("ccc_nodes.") and floor(t) is not None and floor(t) > floor(name):
                upward.append(f"{name} ({FLOORS[floor(name)]}) -> {t} ({FLOORS[floor(t)]})")
    assert upward == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_over_600_lines_without_a_reason(package):
    long = {str(f.relative_to(ROOT)): n for f in modules(ROOT, (package,)).values()
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(LONG_MODULES), {k: v for k, v in long.items() if k not in LONG_MODULES}


def test_the_old_module_names_import_the_modules_they_became():
    import importlib
    import sys

    from ccc_nodes import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(f"ccc_nodes.{old}", None)
        with pytest.warns(DeprecationWarning, match=f"ccc_nodes.{old} is now ccc_nodes.{new}"):
            module = importlib.import_module(f"ccc_nodes.{old}")
        assert module is importlib.import_module(f"ccc_nodes.{new}"), old
    sys.modules.pop("ccc_nodes.modeling.ccc", None)
    with pytest.warns(DeprecationWarning):
        from ccc_nodes.modeling.ccc import CCCNet  # below a moved package: the same class, not a second copy
    from ccc_nodes.core.modeling import CCCNet as Real

    assert CCCNet is Real
    for old in ("harmonize", "masks", "metrics"):
        sys.modules.pop(f"ccc_nodes.{old}")
    with pytest.warns(DeprecationWarning):  # the imports the docs gave before the floors
        from ccc_nodes.harmonize import harmonize
        from ccc_nodes.masks import generate_masks, load_sam, overlay
        from ccc_nodes.metrics import ColorMetrics, compare
    assert all(callable(f) for f in (harmonize, generate_masks, load_sam, overlay, ColorMetrics, compare))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("ccc_nodes.no_such_module")


def test_python_dash_m_ccc_nodes_is_the_ccc_command():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ccc_nodes", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "usage: ccc" in r.stdout and "colorize" in r.stdout
