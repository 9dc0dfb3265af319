"""The import graph keeps the shape ARCHITECTURE.md gives it, read from the source with `ast`.

- No cycle inside a component. Every import counts: module level, under `if TYPE_CHECKING:`
  (a back-import for annotations is still two modules that know each other) and inside
  functions (a local import hides a cycle from the interpreter, not from the design).
- One direction between components: the runtime (`gencluster`) never imports the operator or
  the local control plane, except `gencluster.cli`, the one module that knows all three, and
  only inside the subcommand functions; the local control plane (`gencluster_dev`) imports
  neither of the others; the operator never imports the local control plane.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]

COMPONENTS = {
    "runtime": ROOT / "runtime" / "gencluster",
    "operator": ROOT / "operator" / "gencluster_operator",
    "devcluster": ROOT / "devcluster" / "gencluster_dev",
}
"""Component name -> its import package's directory (the package name is the folder's)."""

RUNTIME, OPERATOR, DEVCLUSTER = (path.name for path in COMPONENTS.values())


class Scope(StrEnum):
    MODULE = "module level"
    TYPE_CHECKING = "if TYPE_CHECKING"
    FUNCTION = "inside a function"


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    """The imported module (relative imports resolved; for `from a import b`, `a.b` when that is
    a module of the component, else `a`)."""
    line: int
    scope: Scope


def module_name(package_dir: Path, path: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: Collection[str] = ()) -> Iterator[Import]:
    """Every import statement of a module, with where it sits; `modules` are the component's
    modules, to tell `from package import submodule` from `from module import name`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, scope: Scope) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, scope)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    yield Import(module, submodule if submodule in modules else base,
                                 child.lineno, scope)
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = Scope.FUNCTION
            elif (isinstance(child, ast.If) and _is_type_checking(child.test)
                  and scope is Scope.MODULE):
                inner = Scope.TYPE_CHECKING
            yield from visit(child, inner)

    yield from visit(ast.parse(path.read_text(), str(path)), Scope.MODULE)


def component_modules(package_dir: Path) -> dict[str, Path]:
    return {module_name(package_dir, path): path for path in sorted(package_dir.rglob("*.py"))}


def graph_of(package_dir: Path) -> dict[str, dict[str, Import]]:
    """importer -> {imported module of the same package -> its first import there}."""
    modules = component_modules(package_dir)
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for name, path in modules.items():
        for found in imports_of(name, path, modules):
            if found.target in modules and found.target != name:
                graph[name].setdefault(found.target, found)
    return graph


def cyclic_groups(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each is
    a set of modules that import each other, directly or through one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def describe(graph: dict[str, dict[str, Import]], group: list[str]) -> str:
    """Every import inside a cyclic group: each lies on a cycle, so each is a candidate cut."""
    members = set(group)
    edges = [
        f"    {importer} -> {target} (line {found.line}, {found.scope})"
        for importer in group
        for target, found in sorted(graph[importer].items())
        if target in members
    ]
    return f"  {', '.join(group)}:\n" + "\n".join(edges)


# -- the checker itself ---------------------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_type_checking_back_import_closes_a_cycle(tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n",
        "c.py": "import pkg.a\n",
    })
    graph = graph_of(package)
    assert cyclic_groups(graph) == [["pkg.a", "pkg.b"]]
    assert graph["pkg.b"]["pkg.a"].scope is Scope.TYPE_CHECKING


def test_a_function_local_or_relative_import_closes_a_cycle(tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg", {
        "__init__.py": "",
        "sub/__init__.py": "",
        "sub/x.py": "from .. import y\n",
        "y.py": "def f():\n    from pkg.sub.x import g\n",
    })
    graph = graph_of(package)
    assert cyclic_groups(graph) == [["pkg.sub.x", "pkg.y"]]
    assert graph["pkg.y"]["pkg.sub.x"].scope is Scope.FUNCTION


def test_an_acyclic_package_passes(tmp_path: Path) -> None:
    package = write_package(tmp_path / "pkg", {
        "__init__.py": "from pkg.a import A\n",
        "a.py": "from pkg import b\nimport os\n",
        "b.py": "import json\n",
    })
    assert cyclic_groups(graph_of(package)) == []


# -- the project ----------------------------------------------------------------------------


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_no_import_cycle_inside_a_component(component: str) -> None:
    graph = graph_of(COMPONENTS[component])
    assert len(graph) > 3, f"no modules found under {COMPONENTS[component]}"
    groups = cyclic_groups(graph)
    assert not groups, f"import cycles in {component}:\n" + "\n".join(
        describe(graph, group) for group in groups
    )


def cross_imports(component: str, forbidden: tuple[str, ...]) -> Iterator[Import]:
    """Imports of `forbidden` packages by any module of `component`."""
    for name, path in component_modules(COMPONENTS[component]).items():
        for found in imports_of(name, path):
            if found.target.split(".")[0] in forbidden:
                yield found


def test_the_runtime_knows_the_others_only_in_the_cli_subcommands() -> None:
    wrong = [
        found for found in cross_imports("runtime", (OPERATOR, DEVCLUSTER))
        if not (found.importer == f"{RUNTIME}.cli" and found.scope is Scope.FUNCTION)
    ]
    assert not wrong, "\n".join(
        f"{f.importer} imports {f.target} (line {f.line}, {f.scope})" for f in wrong
    )
    # The exception exists and is what keeps `gencluster dev` and the operator reachable.
    assert {f.target.split(".")[0] for f in cross_imports("runtime", (OPERATOR, DEVCLUSTER))} \
        == {OPERATOR, DEVCLUSTER}


@pytest.mark.parametrize(
    ("component", "forbidden"),
    [("devcluster", (RUNTIME, OPERATOR)), ("operator", (DEVCLUSTER,))],
)
def test_one_direction_between_components(component: str, forbidden: tuple[str, ...]) -> None:
    wrong = list(cross_imports(component, forbidden))
    assert not wrong, "\n".join(
        f"{f.importer} imports {f.target} (line {f.line}, {f.scope})" for f in wrong
    )


DEVCLUSTER_LAYERS = {
    "machinery": {"machinery"},
    "client": {"client"},
    "apiserver": {"machinery", "apiserver"},
    "node": {"machinery", "client", "node"},
    "network": {"machinery", "client", "network"},
    "controllers": {"machinery", "client", "controllers"},
}
"""Layer of the local control plane -> the layers it may import (gencluster_dev/__init__.py):
the pure API machinery and the HTTP client stand alone; the API server builds on the
machinery; the node, network and controllers reach the API server only over HTTP (the
client) and never import one another; only the top-level `up` and `cli` wire them all."""


def test_the_local_control_plane_imports_only_down_its_layers() -> None:
    package_dir = COMPONENTS["devcluster"]
    layers = {path.name for path in package_dir.iterdir() if (path / "__init__.py").exists()}
    assert layers == set(DEVCLUSTER_LAYERS), "a layer was added or removed: classify it here"
    wrong = []
    for importer, targets in graph_of(package_dir).items():
        importer_layer = importer.split(".")[1] if importer.count(".") >= 2 else None
        if importer_layer is None:
            continue  # the entry points (up, cli, __main__) and the package itself
        for target, found in targets.items():
            target_layer = target.split(".")[1] if target.count(".") >= 1 else "<package>"
            if target_layer not in DEVCLUSTER_LAYERS[importer_layer]:
                wrong.append(f"{importer} imports {target} (line {found.line}, {found.scope})")
    assert not wrong, "\n".join(wrong)
