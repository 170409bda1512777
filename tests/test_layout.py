"""The house rules a newcomer relies on, checked on the source tree: no import circles among `cxr/` and `demo/`
modules, no module over 300 lines, `cxr` importable without gradio, and a map (docstring) in every subpackage.

Imports are read with `ast`, not by importing, so a circle is found even where a lazy import inside a function or an
`if TYPE_CHECKING:` block hides it from Python: a reader still has to know both modules to read either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 300  # one sitting's reading (the house style)


def _module_files(*packages: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the given top-level folders."""
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules in `known` that module `name` imports anywhere in its body (functions and type-only blocks too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {t for t in targets if t in known and t != name}


def _import_graph() -> dict[str, set[str]]:
    files = _module_files("cxr", "demo")
    return {name: _imports(name, path, set(files)) for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), as one circle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_through(graph, set(c)) for c in components]


def _circle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, to name the modules in the circle."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle through {start}")  # a strongly connected component always has one


def test_cycle_finder_names_the_modules_of_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_absolute_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import x\n")
    (pkg / "c.py").write_text("from .sub.d import y\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"}
    assert _imports("pkg.a", pkg / "a.py", known) == {"pkg", "pkg.b", "pkg.c"}
    assert _imports("pkg.b", pkg / "b.py", known) == {"pkg.c"}
    assert _imports("pkg.c", pkg / "c.py", known) == {"pkg.sub.d"}


def test_no_import_circles_among_cxr_and_demo_modules():
    graph = _import_graph()
    assert len(graph) > 20  # the walk found the modules
    circles = [" -> ".join(c) for c in _cycles(graph)]
    assert not circles, "import circles (move the shared piece into a module below both):\n" + "\n".join(circles)


def test_no_module_is_over_300_lines():
    files = _module_files("cxr", "demo", "benchmarks")
    lengths = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in files.values()}
    long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split by concern): " + ", ".join(
        f"{name} ({n})" for name, n in long.items())


def test_every_cxr_subpackage_opens_with_a_docstring_that_maps_it():
    folders = sorted({p.parent for p in (ROOT / "cxr").rglob("*.py") if "__pycache__" not in p.parts})
    problems = []
    for folder in folders:
        init = folder / "__init__.py"
        where = init.relative_to(ROOT).as_posix()
        if not init.exists():
            problems.append(f"{where} is missing")
        elif not (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "").strip():
            problems.append(f"{where} has no docstring")
    assert not problems, "; ".join(problems)


@pytest.mark.slow
def test_every_cxr_module_imports_with_gradio_absent():
    code = """if True:
        import importlib, pkgutil, sys
        sys.modules["gradio"] = None  # any `import gradio` now raises ImportError
        import cxr
        for info in pkgutil.walk_packages(cxr.__path__, "cxr."):
            if info.name.rpartition(".")[2] != "__main__":  # __main__ runs the CLI
                importlib.import_module(info.name)
                print(info.name)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    expected = {name for name in _module_files("cxr") if name != "cxr" and not name.endswith("__main__")}
    # pkgutil walks only folders with an __init__.py: a module it never reached was never checked.
    assert expected <= imported, f"not reached by pkgutil.walk_packages: {sorted(expected - imported)}"
