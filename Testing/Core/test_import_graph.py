"""The core's modules import one way: no two modules import each other, directly or in a ring.

Every ``import`` and ``from ... import`` of ``ToothMCLCore`` counts, also those inside functions
(a lazy import is still a dependency: the two files cannot be understood or changed apart). A
circle found here names its modules; break it by moving the shared piece to a module both can
import (as :mod:`ToothMCLCore.console`, :mod:`ToothMCLCore.io.labelmap`,
:mod:`ToothMCLCore.corrections.layout` and :mod:`ToothMCLCore.inference.ios_common` did).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ToothMCLCore

ROOT = Path(ToothMCLCore.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, packages under their package name."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Core modules one import statement of ``module`` depends on."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
            if node.level else (node.module or "")
        # "from pkg import name": the submodule pkg.name if there is one, else pkg itself
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return {name for name in names if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= _imported(module, path, node, modules)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start, targets in graph.items():
        if start in index:
            continue
        work = [(start, iter(sorted(targets)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_core_has_no_import_circle():
    """No module of ToothMCLCore imports, directly or through others, a module that imports it."""
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle_and_the_graph_sees_lazy_imports():
    """The check above can fail: a ring of three is found; a function-level import is an edge."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "ToothMCLCore.inference.softooth" in graph["ToothMCLCore.inference.ios"]  # inside ios_predictor()
    assert "ToothMCLCore.console" in graph["ToothMCLCore.demo"]
