"""No import circle inside a package: every import counts, at module level, in a function or under TYPE_CHECKING."""

from __future__ import annotations

import pytest

from tests.test_layering import graph


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports (anywhere in its file): the project graph of
    `tests/test_layering.py` kept inside one package."""
    return {mod: {d for d in deps if d.split(".")[0] == package}
            for mod, deps in graph().items() if mod.split(".")[0] == package}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle once, as the list of its modules (a depth-first search for back edges)."""
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_the_cycle_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["features", "embeddings", "models", "pipelines", "jobs"])
def test_no_import_circle(package):
    assert cycles(import_graph(package)) == []


def test_the_circles_that_were_are_gone():
    graph = import_graph("features")
    assert "features.rank_result" in graph["features.outrank"] and "features.outrank" not in graph["features.rank_outputs"]
    assert "features.table_read" in graph["features.side_tables"] and "features.ingest" not in graph["features.side_tables"]
