"""The package's import graph, read from the source with ``ast``: no module imports itself
back through others (no cycles), counting imports inside functions too, and those made
through ``importlib.import_module("vitzoo.x")`` or ``__import__("vitzoo.x")`` with a literal
name.

``import_graph`` is the shared reader; layer-order checks build on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "vitzoo"


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dynamic_import(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` / ``import_module("x")`` /
    ``__import__("x")``, else None (a computed name cannot be read from the source)."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Package modules imported anywhere in ``tree`` (functions included; not TYPE_CHECKING)."""
    found: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)):
            targets = [name]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from vitzoo.data import tfds`` names a module; ``from vitzoo.data import X`` the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: package modules it imports}`` for every module of ``package``."""
    files = {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    known = set(files)
    return {name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "vitzoo.adapt.runner" in graph and "vitzoo.data.pipeline" in graph
    # _prepare_model() imports the backbone loader inside a function only
    assert "vitzoo.backbone.load" in graph["vitzoo.adapt.runner"]
    assert "vitzoo.data.tfdata" in graph["vitzoo.data.stream"]


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


#: The package's layers, lowest first: a module may import its own layer and the ones
#: below, never one above. The README's "Architecture" section shows the same order.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("vitzoo.errors", "vitzoo.config", "vitzoo.atomic", "vitzoo.text", "vitzoo.fileformats",
     "vitzoo.versions", "vitzoo.arch_registry", "vitzoo.runtime", "vitzoo.accelerators",
     "vitzoo.kernels"),
    ("vitzoo.names", "vitzoo.storage", "vitzoo.labels", "vitzoo.data"),
    ("vitzoo.catalog", "vitzoo.models"),
    ("vitzoo.weights",),
    ("vitzoo.download",),
    ("vitzoo.backbone", "vitzoo.runs"),
    ("vitzoo.evaluators", "vitzoo.adapt"),
    ("vitzoo.probe", "vitzoo.predict", "vitzoo.attention"),
    ("vitzoo.plot", "vitzoo.doctor"),
    ("vitzoo.cli", "vitzoo.__main__", "vitzoo"),  # the package itself is the Python API facade
)


def layer_of(module: str) -> int | None:
    """Index of the most specific layer entry that ``module`` is (or is inside)."""
    best: tuple[int, int] | None = None
    for index, entries in enumerate(LAYERS):
        for entry in entries:
            inside = module == entry or (entry != "vitzoo" and module.startswith(entry + "."))
            if inside and (best is None or len(entry) > best[1]):
                best = (index, len(entry))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} -> {t}" for m, targets in sorted(graph.items()) for t in sorted(targets)
            if layer_of(t) > layer_of(m)]


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) is None] == []


def test_lower_layers_never_import_higher_ones():
    assert upward_imports(import_graph()) == []


def test_an_upward_import_is_caught():
    assert upward_imports({"vitzoo.names": {"vitzoo.catalog.api"}, "vitzoo.catalog.api": set()}) \
        == ["vitzoo.names -> vitzoo.catalog.api"]


def test_an_upward_import_through_importlib_is_caught(tmp_path):
    """A synthetic package whose low module reaches up with importlib and __import__."""
    pkg = tmp_path / "vitzoo"
    (pkg / "catalog").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "catalog" / "__init__.py").write_text("")
    (pkg / "catalog" / "api.py").write_text("X = 1\n")
    (pkg / "probe.py").write_text("X = 1\n")
    (pkg / "names.py").write_text(
        "import importlib\n\n\ndef late():\n"
        "    return importlib.import_module('vitzoo.catalog.api')\n")
    (pkg / "storage.py").write_text("def late():\n    return __import__('vitzoo.probe')\n")
    (pkg / "errors.py").write_text(
        "from importlib import import_module\n\n\ndef fine(name):\n"
        "    return import_module(name)  # computed: not readable, not counted\n")
    graph = import_graph(pkg)
    assert graph["vitzoo.names"] == {"vitzoo.catalog.api"}
    assert graph["vitzoo.storage"] == {"vitzoo.probe"}
    assert graph["vitzoo.errors"] == set()
    assert upward_imports(graph) == ["vitzoo.names -> vitzoo.catalog.api",
                                     "vitzoo.storage -> vitzoo.probe"]


def test_probe_sits_above_adapt():
    assert layer_of("vitzoo.probe.run") > layer_of("vitzoo.adapt.runner")
    assert layer_of("vitzoo.runs") < layer_of("vitzoo.adapt") < layer_of("vitzoo.probe")
