"""The package's layering, read statically from the source with :mod:`ast`.

(a) The subpackages of ``frs_ray`` (``data``, ``certify``, ...; a top-level module such as ``config``
counts as one) import each other without a cycle, counting module-level and function-level imports
alike. ``frs_ray.cli`` and ``frs_ray.__main__`` sit on top and may import anything; no module of
``frs_ray`` imports ``frs_ray.cli``.

(b) No module imports a private name (``_x``, or a private module) from a module of another
subpackage: a name used across subpackages is public. ``tune/`` and ``benchmarks/`` count as
outside every subpackage of ``frs_ray``.

Every violation is reported with its ``file:line``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "frs_ray"
TOP = {f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}
"""Modules that may import anything (the command line)."""
OUTSIDE = ("tune", "benchmarks")


@dataclass(frozen=True)
class Import:
    """One imported module (and the names taken from it) at a place in a file."""

    where: str
    module: str
    names: tuple[str, ...]


def module_name(path: Path) -> str:
    """Dotted module name of a file under the repository (``frs_ray/data/hub.py`` -> ``frs_ray.data.hub``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(node: ast.ImportFrom, importer: str, package: bool) -> str:
    """The module a ``from ... import`` reads, with relative levels resolved against ``importer``."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> list[Import]:
    """Every import statement of a file, at any depth (module level, functions, ``if`` blocks)."""
    importer = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found.extend(Import(where, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package(path))
            found.append(Import(where, module, tuple(alias.name for alias in node.names)))
    return found


def package_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of ``frs_ray``."""
    return {module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}


def subpackage(module: str) -> str | None:
    """``frs_ray.<x>`` for any module under ``frs_ray.<x>``; ``None`` outside ``frs_ray`` or for ``frs_ray``."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def targets(imp: Import, modules: dict[str, Path]) -> list[str]:
    """The ``frs_ray`` modules an import reaches (``from frs_ray import data`` reaches ``frs_ray.data``)."""
    if imp.module == PACKAGE:
        return [f"{PACKAGE}.{name}" for name in imp.names if f"{PACKAGE}.{name}" in modules] or [PACKAGE]
    return [imp.module] if subpackage(imp.module) else []


def subpackage_edges() -> dict[tuple[str, str], list[str]]:
    """(importing subpackage, imported subpackage) -> the places of those imports, outside ``TOP``."""
    modules = package_modules()
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in modules.items():
        source = subpackage(name)
        if source is None or name in TOP:
            continue
        for imp in imports_of(path):
            for target in targets(imp, modules):
                dest = subpackage(target)
                if dest is not None and dest != source:
                    edges.setdefault((source, dest), []).append(imp.where)
    return edges


def cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports() -> list[str]:
    """``file:line: name from module`` for every private name taken across subpackages."""
    files = sorted((REPO / PACKAGE).rglob("*.py"))
    for folder in OUTSIDE:
        files += sorted((REPO / folder).rglob("*.py"))
    problems: list[str] = []
    for path in files:
        source = subpackage(module_name(path))
        for imp in imports_of(path):
            dest = subpackage(imp.module)
            if dest is None or dest == source:
                continue
            private_parts = [p for p in imp.module.split(".") if _private(p)]
            private_names = [n for n in imp.names if _private(n)]
            for name in private_parts + private_names:
                problems.append(f"{imp.where}: {name} from {imp.module}")
    return problems


def test_resolves_relative_imports() -> None:
    path = REPO / PACKAGE / "data" / "loaders.py"
    found = {imp.module for imp in imports_of(path)}
    assert f"{PACKAGE}.data.hub" in found and f"{PACKAGE}.errors" in found
    node = ast.parse("from ..data import x").body[0]
    assert _absolute(node, f"{PACKAGE}.certify.smooth", False) == f"{PACKAGE}.data"
    assert _absolute(node, f"{PACKAGE}.certify", True) == f"{PACKAGE}.data"


def test_cycle_detection() -> None:
    edges = {("a", "b"): ["x:1"], ("b", "c"): ["x:2"], ("c", "a"): ["x:3"], ("c", "d"): ["x:4"]}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({("a", "b"): ["x:1"]}) == []


def test_no_import_cycle_between_subpackages() -> None:
    edges = subpackage_edges()
    assert len(edges) > 10  # the graph was read
    report = []
    for component in cycles(edges):
        members = set(component)
        report.append("cycle: " + " <-> ".join(component))
        for (a, b), places in sorted(edges.items()):
            if a in members and b in members:
                report.extend(f"  {place}: {a} imports {b}" for place in places)
    assert not report, "\n".join(report)


def test_nothing_imports_cli() -> None:
    modules = package_modules()
    report = [
        f"{imp.where}: imports {target}"
        for name, path in modules.items()
        if name not in TOP
        for imp in imports_of(path)
        for target in targets(imp, modules)
        if target == f"{PACKAGE}.cli" or target.startswith(f"{PACKAGE}.cli.")
    ]
    assert not report, "\n".join(report)


def test_no_private_name_across_subpackages() -> None:
    problems = private_imports()
    assert not problems, "\n".join(problems)
