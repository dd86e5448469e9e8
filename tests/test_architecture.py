"""The architecture as docs/architecture.md draws it: one-way imports, no cycles, small units."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "leapkd"

# Lower layers never import higher ones; docs/architecture.md explains each layer.
LAYERS = [
    ["leapkd.errors", "leapkd.paths", "leapkd.plugins", "leapkd.disk", "leapkd.runlock"],
    ["leapkd.config", "leapkd.options", "leapkd.rundir", "leapkd.recipes", "leapkd.hardware"],
    [
        "leapkd.models",
        "leapkd.data",
        "leapkd.curriculum",
        "leapkd.metrics",
        "leapkd.schedule",
        "leapkd.plots",
        "leapkd.summary",
        "leapkd.edge",
        "leapkd.shared_run",
    ],
    ["leapkd.losses", "leapkd.accounting", "leapkd.feature_cache", "leapkd.linear_classifier", "leapkd.sources"],
    ["leapkd.methods"],
    ["leapkd.engine"],
    ["leapkd.eval", "leapkd.analysis"],
    ["leapkd.report", "leapkd.deploy", "leapkd.latency", "leapkd.plan", "leapkd.headline"],
    ["leapkd.training", "leapkd.shared_training"],
    ["leapkd.cli", "leapkd.readme_keys", "leapkd.__main__", "leapkd"],
]
MAX_CLASS_LINES, MAX_FUNCTION_LINES = 200, 80


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(module == g or (g != "leapkd" and module.startswith(g + ".")) for g in group):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def imports_of(path: Path) -> set[str]:
    """Every leapkd module imported anywhere in the file (inside functions too; not the
    TYPE_CHECKING block of the package's lazy API, which types names without importing them)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("leapkd"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("leapkd")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})"
        for mod, deps in edges.items()
        for dep in deps
        if layer_of(dep) > layer_of(mod)
    ]


def find_cycle(edges: dict[str, set[str]], packages: set[str]) -> list[str] | None:
    """A cycle of imports, or None. An import of `a.b` from a module of `a.b.c` goes to the
    package `a.b`; a package's __init__ importing its own submodules is not a cycle."""

    def resolve(dep: str) -> str:
        return dep if dep in edges else dep.rsplit(".", 1)[0]

    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted({resolve(d) for d in edges.get(node, ()) if d != node}):
            if node in packages and nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_every_import_goes_to_the_same_or_a_lower_layer():
    assert upward_imports({"leapkd.models.adapter": {"leapkd.engine"}})  # the check can fail
    upward = upward_imports(graph())
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    packages = {module_name(p) for p in SRC.rglob("__init__.py")}
    assert find_cycle({"leapkd.a": {"leapkd.b"}, "leapkd.b": {"leapkd.a"}}, set()) == [
        "leapkd.a",
        "leapkd.b",
        "leapkd.a",
    ]
    cycle = find_cycle(graph(), packages)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _units(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("kind,limit", [(ast.ClassDef, MAX_CLASS_LINES), (ast.FunctionDef, MAX_FUNCTION_LINES)])
def test_no_class_or_function_is_too_long(kind, limit):
    long = [
        f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)"
        for p in SRC.rglob("*.py")
        for node, lines in _units(p)
        if isinstance(node, kind) and lines > limit
    ]
    assert not long, "\n".join(long)
