"""No import circle anywhere in the operator, the trainer or the SDK: every module's imports
(lazy ones inside functions included) form a DAG, so each layer can be read, tested and
loaded on its own. Import-linter's contracts (pyproject.toml) keep the layers; this keeps the
modules within a layer from leaning on each other both ways."""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("cogwork", "cogwork_trainer", "cogwork_sdk")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of 2+ modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_no_module_is_part_of_an_import_circle(graph: grimp.ImportGraph) -> None:
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    """The check above can fail: a two-module circle is reported as one."""
    looped = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        looped.add_module(name)
    looped.add_import(importer="pkg.a", imported="pkg.b")
    looped.add_import(importer="pkg.b", imported="pkg.a")
    looped.add_import(importer="pkg.c", imported="pkg.a")
    assert cycles(looped) == [["pkg.a", "pkg.b"]]
