"""The shape of the codebase, checked: no import cycle inside the packages of the run path and the gateway, and no
module too long to read in one sitting. (The layers between packages are import-linter's, in ``pyproject.toml``.)"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

import godel

ACYCLIC = ("godel.scheduler", "godel.gateway", "godel.tasks", "godel.workflow", "godel.teams", "godel.auth")
MAX_LINES = 500


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("godel")  # type-checking imports included: a cycle hidden behind one is still a cycle


def find_cycle(graph: grimp.ImportGraph, package: str) -> list[str] | None:
    """One import cycle among the modules of ``package`` (as a path that returns to its start), or None."""
    inside = graph.find_descendants(package) | {package}
    edges = {m: {n for n in graph.find_modules_directly_imported_by(m) if n in inside} for m in inside}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(inside):
        if m not in state and (found := visit(m)):
            return found
    return None


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle_inside(package: str) -> None:
    cycle = find_cycle(_graph(), package)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.c", imported="p.a")
    assert find_cycle(graph, "p") is None
    graph.add_import(importer="p.b", imported="p.c")
    assert find_cycle(graph, "p") == ["p.a", "p.b", "p.c", "p.a"]


def test_no_module_is_too_long() -> None:
    root = Path(godel.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"
