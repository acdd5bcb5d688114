"""The ``detector`` package has no import cycles.

Every ``import`` / ``from ... import`` statement of every module is read with :mod:`ast`, also
those inside functions (a deferred import hides a cycle, it does not remove it), and resolved to
the modules of the package it names (imports under ``if TYPE_CHECKING:`` never run and are left
out): ``from detector.evaluation import x`` depends on
``detector.evaluation`` (its ``__init__``), or on ``detector.evaluation.x`` when ``x`` is a
submodule. Only written imports count: the
implicit initialisation of the packages above a module is not an edge, but a module that names
its own package (``from detector.evaluation import x`` inside ``detector.evaluation.results``)
depends on that ``__init__``. The resulting graph must have no cycle; a cycle is reported as the
chain of modules and the lines that import.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import detector

PACKAGE_DIR = Path(detector.__file__).resolve().parent


def _module_names() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` for every module of ``detector``."""
    modules = _module_names()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        package = name if _is_package(name, modules) else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        type_only = {
            id(inner)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                targets = [base_name]
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` (not only pkg).
                targets += [f"{base_name}.{alias.name}" for alias in node.names]
            for target in targets:
                if not target.startswith("detector"):
                    continue
                resolved = _resolve(target, modules)
                if resolved is None or resolved == name:
                    continue
                edges.setdefault(resolved, node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_finder_reports_a_cycle():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1}}) is None


def test_graph_sees_deferred_and_relative_imports():
    graph = import_graph()
    # engine/evaluate imports the device helper at module level and the data readers in a
    # function (relative imports): both are edges.
    assert "detector.engine.device" in graph["detector.engine.evaluate"]
    assert "detector.data" in graph["detector.engine.evaluate"]
    assert "detector.engine.device" in graph["detector.engine.train"]


def test_detector_package_has_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle in the detector package:\n  " + "\n  ".join(steps))
