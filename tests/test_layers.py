"""The package layers and the absence of import cycles, read from the source with `ast`.

Layers, lowest first: contract -> models -> (edge_agent | server | calibration) -> training
-> jifang. A module may import its own layer or a lower one, never a higher one, and the three
packages of the middle layer never import each other. Every import counts: module level,
inside functions, and under `TYPE_CHECKING` (a cycle that only type checkers see still ties
two modules together). `from pkg import sub` counts as an import of the submodule `pkg.sub`
when `sub` is a module, as import-linter's graph does.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS: dict[str, int] = {
    "contract": 0,
    "models": 1,
    "edge_agent": 2,
    "server": 2,
    "calibration": 2,
    "training": 3,
    "jifang": 4,
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the layered packages."""
    modules: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path, tree: ast.AST) -> Iterator[tuple[str, str | None]]:
    """(imported module, name imported from it or None) for every import statement."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Which project modules each project module imports."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, imported in _imported_names(name, path, tree):
            submodule = f"{target}.{imported}" if imported else None
            found = submodule if submodule in modules else owner(target)
            if found is not None and found != name:
                graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import of a higher layer or of a sibling package of the middle."""
    bad: list[str] = []
    for name, targets in sorted(graph.items()):
        own = name.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            higher = LAYERS[other] > LAYERS[own]
            sibling = other != own and LAYERS[other] == LAYERS[own]
            if higher or sibling:
                bad.append(f"{name} -> {target}")
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_layers_import_downwards_only(graph: dict[str, set[str]]) -> None:
    assert layer_violations(graph) == []


def test_checker_finds_a_cycle_and_a_layer_breach(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "models" / "a.py").write_text("from models import b\n", encoding="utf-8")
    (tmp_path / "models" / "b.py").write_text(
        "def f():\n    from . import a\n    import server.x\n", encoding="utf-8"
    )
    (tmp_path / "server" / "x.py").write_text("import edge_agent\n", encoding="utf-8")
    graph = import_graph(project_modules(tmp_path))
    assert cycles(graph) == [["models.a", "models.b"]]
    assert layer_violations(graph) == ["models.b -> server.x", "server.x -> edge_agent"]
