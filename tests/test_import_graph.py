"""The import contract, read from the source with `ast`: no cycle among the project's modules,
`cache/` imports neither `edge/` nor `origin/`, `edge/` does not import `origin/` (it reaches
the origin through `cache/contract.py`), and nothing imports the composition root `banatie/`,
which may import all three.

Imports inside functions count too: a lazy import still ties the modules together."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("banatie", "cache", "edge", "origin")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (`from pkg import sub` counts as importing sub)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in names if m in MODULES and m != name}


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    """One import cycle, as the path of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def _imports_of(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The modules of `package` that import one of `forbidden`'s packages, and what."""
    wrong = {
        module: sorted(t for t in targets if t.split(".")[0] in forbidden)
        for module, targets in GRAPH.items()
        if module.split(".")[0] == package
    }
    return {m: t for m, t in wrong.items() if t}


def test_the_graph_is_read() -> None:
    # Guards the reader itself: known edges must show up.
    assert "origin.services" in GRAPH["origin.production"]
    assert {"edge.app", "origin.app", "cache.settings"} <= GRAPH["banatie.layouts"]
    assert "cache.settings" in GRAPH["cache.index"]
    assert "cache.index.memory" in GRAPH["cache.index"]  # a lazy import inside a function


def test_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_cache_imports_neither_edge_nor_origin() -> None:
    assert _imports_of("cache", ("banatie", "edge", "origin")) == {}


def test_edge_does_not_import_origin() -> None:
    assert _imports_of("edge", ("banatie", "origin")) == {}


def test_origin_does_not_import_the_composition_root() -> None:
    assert _imports_of("origin", ("banatie",)) == {}


def test_routes_hold_no_sql() -> None:
    # Queries live in the data-layer modules (origin/generations.py, origin/images.py, ...);
    # a route reads the request, calls them and renders the answer.
    wrong = {}
    for path in sorted((ROOT / "origin" / "routes").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        used = {
            alias.name if isinstance(node, ast.Import) else node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        sql = sorted(m for m in used if m.split(".")[0] == "sqlalchemy")
        if sql:
            wrong[path.name] = sql
    assert wrong == {}
