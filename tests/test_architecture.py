"""The layout's rules, read from the source with ast (nothing is imported): no import cycle
between the project's modules, engines import nothing of the service, and calibration is
imported in pipeline/ only by the command line (pipeline/cli/), the composition root.

Imports made at module level count (those under ``if TYPE_CHECKING:`` do not: they are never
executed); an import inside a function is a deliberate deferral and is not counted."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "pipeline", "calibration")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)


def _imported(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level or node.module is None:
        return set()
    found = set()
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if submodule in known:
            found.add(submodule)
        elif node.module in known:
            found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports at module level (a package's __init__ runs
    before any of its submodules, so importing pipeline.a.b also imports pipeline.a)."""
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in _module_level_imports(tree):
            for target in _imported(node, known):
                targets.add(target)
                # importing a.b.c from outside package a.b runs a/b/__init__ first (from
                # inside it, that __init__ is already running: a sibling import is fine)
                parts = target.split(".")
                targets.update(
                    parent
                    for parent in (".".join(parts[:n]) for n in range(1, len(parts)))
                    if parent in known and not (name == parent or name.startswith(parent + "."))
                )
        graph[name] = {target for target in targets if target != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_between_modules() -> None:
    assert strongly_connected(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def _all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_engines_import_nothing_of_the_service_and_calibration_only_the_cli() -> None:
    for name, path in _modules().items():
        imported = _all_imports(path)
        top = {module.split(".")[0] for module in imported}
        if name.startswith("engines"):
            assert not top & {"pipeline", "calibration"}, name
        if name.startswith("pipeline") and not name.startswith("pipeline.cli"):
            assert "calibration" not in top, f"{name} imports calibration"
