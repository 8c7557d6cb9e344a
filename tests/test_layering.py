"""Imports go one way: cli -> demo -> evaluation / training (-> perf) -> models, data, metrics, viz -> backbones, layers
-> io.

Every `import keras_avloc.X` / `from keras_avloc.X import ...` in the package (module level or inside a
function) is read with `ast` and checked against the allowed rooms of its module's room."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_avloc"

ALLOWED = {
    "io": {"io"},
    "layers": {"layers", "io"},
    "backbones": {"backbones", "layers", "io"},
    "metrics": {"metrics", "io"},
    "spatial": {"spatial", "io"},
    "data": {"data", "metrics", "spatial", "io"},
    "viz": {"viz", "metrics", "io"},
    "models": {"models", "backbones", "layers", "spatial", "io"},
    "perf": {"perf", "models", "backbones", "layers", "io"},
    "evaluation": {"evaluation", "models", "data", "metrics", "viz", "backbones", "layers", "spatial", "io"},
    "training": {"training", "perf", "models", "data", "metrics", "viz", "backbones", "layers", "spatial", "io"},
    "demo": {"demo", "evaluation", "training", "models", "data", "metrics", "viz", "backbones", "layers", "spatial",
             "io", "perf"},
    "cli": None,  # the top: may import anything
    "__init__": {"io"},
    "__main__": {"cli"},
}


def _room(path):
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_rooms(path):
    """The keras_avloc sub-packages / modules a file imports (`from keras_avloc import X` counts as X)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rooms = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_avloc":
                names = [f"keras_avloc.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "keras_avloc" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def test_every_import_goes_one_way():
    violations = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    for path in modules:
        room = _room(path)
        assert room in ALLOWED, f"{path}: new room {room!r}; add it to the layering table"
        allowed = ALLOWED[room]
        if allowed is None:
            continue
        for imported in _imported_rooms(path):
            if imported == "__version__":
                continue
            if imported not in allowed:
                violations.append(f"{path.relative_to(PACKAGE.parent)} ({room}) imports keras_avloc.{imported}")
    assert not violations, "\n".join(violations)


def test_nothing_below_the_cli_imports_the_cli():
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if _room(p) not in ("cli", "__main__") and "cli" in _imported_rooms(p)]
    assert offenders == []


def test_the_checker_sees_function_level_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from keras_avloc.cli import main\n    import keras_avloc.data.media\n")
    assert _imported_rooms(sample) == {"cli", "data"}


def _module_imports():
    """{module: the package modules it imports (at module level or inside functions)}; packages' __init__ left out
    (their lazy attributes are not imports)."""
    modules = {".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        if name.endswith("__init__"):
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_avloc"):
                for alias in node.names:
                    found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in modules)
        graph[name] = {module for module in found if module in modules and not module.endswith("__init__")}
    return graph


def test_no_module_imports_itself_through_another():
    graph = _module_imports()
    assert "keras_avloc.data.pipeline" in graph["keras_avloc.data.tfrecord"]  # the reader's shared machinery
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
