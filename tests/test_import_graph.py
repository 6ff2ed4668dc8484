"""The packages' import graph (every import, module-level or inside a function): no circle among the
harness's modules, each part of the harness importing only the parts before it (`evoprune.harness.LAYERS`),
and the method's modules never importing the harness."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

from evoprune.harness import LAYERS


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "evoprune") -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports (``from a.b import c`` counts c when it is a module)."""
    modules = {_module_name(p): p for p in (REPO_ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert cycles(graph) == []


def test_the_method_never_imports_the_harness():
    graph = import_graph()
    method = [name for name in graph if not name.startswith("evoprune.harness")]
    assert len(method) >= 7
    assert {name: sorted(t for t in graph[name] if t.startswith("evoprune.harness")) for name in method} == {
        name: [] for name in method
    }


def _layer(module: str) -> int | None:
    """A harness module's place in the order; None outside the harness and for the lmms-eval task hooks
    (``data/tasks/*/utils.py``: lmms-eval loads them from the task YAMLs, nothing imports them, and they score
    with ``results``)."""
    parts = module.split(".")
    if parts[:2] != ["evoprune", "harness"] or len(parts) < 3 or parts[2:4] == ["data", "tasks"]:
        return None
    return LAYERS.index(parts[2])


def test_each_part_of_the_harness_imports_only_the_parts_before_it():
    against = sorted(
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        if _layer(name) is not None and _layer(target) is not None and _layer(target) > _layer(name)
    )
    assert against == []
    parts = {path.name for path in (REPO_ROOT / "evoprune/harness").iterdir() if (path / "__init__.py").exists()}
    assert parts == set(LAYERS)  # every part has its place in the order
