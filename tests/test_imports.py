"""The library's import graph, every import statement counted (lazy ones inside functions too): no cycles."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mscompare"


def imports_of(path: Path) -> set[str]:
    """The mscompare modules that a module imports anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mscompare":
            if node.module == "mscompare":
                out |= {a.name for a in node.names if (PKG / f"{a.name}.py").exists()}
            else:
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mscompare.")}
    return out - {path.stem}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first == last), or None."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n, path + [n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_library_has_no_import_cycles():
    graph = {p.stem: imports_of(p) for p in PKG.glob("*.py") if p.stem != "__init__"}
    assert graph["sweep"] and "runs" in graph["jobs"]  # the scan sees imports
    assert cycle(graph) is None, " -> ".join(cycle(graph))
