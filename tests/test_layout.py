"""The package's layout: no import cycles between its modules (imports inside functions count too).

`python tests/test_layout.py` prints the import graph, one module a line with the modules it imports, and any cycle.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sjc"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from every import statement in it, at any depth."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = submodules or [base]   # `from . import x` imports module x, not the package's face
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert {"sjc.train", "sjc.render", "sjc.priors", "sjc.pipeline"} <= graph.keys()
    assert "sjc.volrend" in graph["sjc.fused"] and "sjc.fused" in graph["sjc.render"]   # the graph is read
    assert cycles(graph) == []


def test_the_method_does_not_import_the_product_layers():
    """The method's modules (field to the loop) never import run folders, the CLI, eval or bench."""
    graph = import_graph()
    product = {"sjc.pipeline", "sjc.run_folder", "sjc.cli", "sjc.evaluate", "sjc.bench"}
    method = ["sjc.field", "sjc.volrend", "sjc.render", "sjc.fused", "sjc.cameras", "sjc.guidance",
              "sjc.regularizers", "sjc.train", "sjc.optim", "sjc.export", "sjc.metrics", "sjc.priors"]
    for m in method:
        assert not graph[m] & product, (m, graph[m] & product)


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    g = import_graph()
    for name in sorted(g):
        print(f"{name} -> {', '.join(sorted(g[name])) or '(nothing)'}")
    found = cycles(g)
    print("cycles:", found or "none")
