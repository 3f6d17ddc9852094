"""Architecture rules, checked on the source text alone (pure AST: nothing is imported, no Ray).

Import graph
    Nodes are the project's own modules: every ``.py`` under ``specialists/``, ``data_pipeline/`` and
    ``ray_jobs/``, named from its path (``pkg/__init__.py`` is the package ``pkg``). Edges come from
    *every* import statement in a file, wherever it stands: module level, inside a function, under
    ``if TYPE_CHECKING:``. A function-local import still has to resolve when the function runs, so a
    cycle through one is still a cycle; it only moves the failure from import time to run time.

    How an import becomes an edge: to the most specific project module it names, and nothing else.

    * ``import a.b.c`` -> ``a.b.c``.
    * ``from a.b import c`` -> ``a.b.c`` when ``c`` is a submodule, else ``a.b`` (``c`` is a name
      defined in ``a.b``; for a package that means a name from its ``__init__``).
    * relative imports are resolved first: in ``data_pipeline/sources/manifest.py``,
      ``from . import ffpp`` is ``data_pipeline.sources.ffpp`` and ``from .manifest import X`` is
      ``data_pipeline.sources.manifest``.
    * an import that names no project module (``import torch``) is no edge.

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py`` first, but those implicit
    parent imports are deliberately *not* edges. With them, every package whose ``__init__``
    re-exports a submodule (``specialists/__init__.py`` imports ``specialists.model``) would be in a
    cycle with every submodule that imports a sibling (``specialists.model`` imports
    ``specialists.registry``, which would imply ``specialists``): the usual timm layout, and safe,
    because Python finishes ``a.b.c`` before handing it back to the package. What is not safe, and is
    caught, is a submodule taking a *name* from its own package (``from specialists import get_spec``
    inside ``specialists.model``: an edge to ``specialists``, whose ``__init__`` imports
    ``specialists.model``: a cycle), or two modules importing each other (``registry`` importing
    ``zoo`` to register the built-ins while ``zoo`` imports ``registry``).

    Not seen: ``importlib.import_module("...")`` with a string (``ray_jobs.cli`` loads its job
    modules so, on purpose).

Layering (docs/architecture.md, "Import rules")
    ``specialists`` and ``data_pipeline`` import nothing of ours (not each other, not ``ray_jobs``)
    and never ``ray``. The job entry modules (the ``ray_jobs.*`` modules of ``ray_jobs/cli.py``'s
    ``COMMANDS``) are imported by ``ray_jobs.cli`` only; shared code lives in non-entry modules.

Sizes
    No ``.py`` file under the packages, ``benchmarks/`` or ``tests/`` over 500 lines; no function or
    method (nested ones counted on their own too) over 80 lines, ``end_lineno - lineno + 1`` of its
    ``def``.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("specialists", "data_pipeline", "ray_jobs")
SIZE_DIRS = (*PACKAGES, "benchmarks", "tests")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
CLI_MODULE = "ray_jobs.cli"
#: package -> top-level packages it must never import (``ray`` is the third-party one)
FORBIDDEN = {
    "specialists": ("data_pipeline", "ray_jobs", "ray"),
    "data_pipeline": ("specialists", "ray_jobs", "ray"),
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    rel: str  # the path relative to the repository root, for messages
    is_package: bool


@dataclass(frozen=True)
class Import:
    """One imported name: the absolute module it reads (``target``), and where."""

    source: str
    target: str  # absolute dotted name as written/resolved (may be a third-party module)
    names: tuple[str, ...]  # the ``from ... import`` names; () for ``import x``
    line: int


def _py_files(root: Path, top: str) -> Iterator[Path]:
    for path in sorted((root / top).rglob("*.py")):
        if not any(p.startswith(".") or p == "__pycache__" for p in path.relative_to(root).parts):
            yield path


def discover(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    """Module name -> :class:`Module` for every ``.py`` under ``packages``."""
    modules = {}
    for top in packages:
        for path in _py_files(root, top):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            if name in modules and modules[name].is_package:
                continue  # pkg/x/__init__.py and pkg/x.py both there: Python imports the package
            modules[name] = Module(name, path, path.relative_to(root).as_posix(), is_package)
    return modules


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _from_base(node: ast.ImportFrom, module: Module) -> str:
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: Module) -> list[Import]:
    """Every import statement in the file (module level, in functions, under TYPE_CHECKING)."""
    found = []
    for node in ast.walk(_parse(module.path)):
        if isinstance(node, ast.Import):
            found += [Import(module.name, a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = tuple(a.name for a in node.names)
            found.append(Import(module.name, _from_base(node, module), names, node.lineno))
    return found


def _known_prefix(name: str, modules: Mapping[str, Module]) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def edges_of(imp: Import, modules: Mapping[str, Module]) -> set[str]:
    """Project modules ``imp`` makes an edge to (see the module docstring)."""
    targets = set()
    for name in imp.names or ("",):
        sub = f"{imp.target}.{name}" if name and name != "*" else ""
        target = sub if sub in modules else _known_prefix(imp.target, modules)
        if target is not None and target != imp.source:
            targets.add(target)
    return targets


#: (source, target) -> "path:line" of the first import making that edge
Graph = dict[str, dict[str, str]]


def build_graph(modules: Mapping[str, Module]) -> Graph:
    graph: Graph = {name: {} for name in modules}
    for module in modules.values():
        for imp in imports_of(module):
            for target in edges_of(imp, modules):
                graph[module.name].setdefault(target, f"{module.rel}:{imp.line}")
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def _shortest_cycle(graph: Graph, start: str, within: set[str]) -> list[str]:
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in within and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in no cycle")  # pragma: no cover - SCC members always are


def find_cycles(graph: Graph) -> list[list[str]]:
    """For every strongly connected component of 2+ modules, the shortest cycle through each member
    (deduplicated): ``[a, b, a]`` reads ``a imports b imports a``."""
    cycles = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        seen = set()
        for member in component:
            cycle = _shortest_cycle(graph, member, set(component))
            ring = cycle[:-1]
            first = ring.index(min(ring))
            key = tuple(ring[first:] + ring[:first])
            if key not in seen:
                seen.add(key)
                cycles.append([*key, key[0]])
    return cycles


def format_cycles(graph: Graph, cycles: list[list[str]]) -> str:
    lines = []
    for cycle in cycles:
        lines.append("  " + " -> ".join(cycle))
        lines += [f"      {a} -> {b}: {graph[a][b]}" for a, b in pairwise(cycle)]
    return "\n".join(lines)


def job_entry_modules(cli_path: Path = ROOT / "ray_jobs" / "cli.py") -> set[str]:
    """The ``ray_jobs.*`` modules named by the ``COMMANDS`` dict of ``ray_jobs/cli.py``."""
    for node in _parse(cli_path).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets) and node.value is not None:
            commands = ast.literal_eval(node.value)
            return {module for module, _help in commands.values() if module.startswith("ray_jobs.")}
    raise AssertionError(f"no COMMANDS dict in {cli_path}")


def layering_violations(modules: Mapping[str, Module]) -> list[str]:
    found = []
    for module in modules.values():
        forbidden = FORBIDDEN.get(module.name.split(".")[0], ())
        for imp in imports_of(module):
            if imp.target.split(".")[0] in forbidden:
                found.append(f"  {module.rel}:{imp.line}: {module.name} imports {imp.target}")
    return found


def entry_import_violations(graph: Graph, entries: set[str]) -> list[str]:
    found = [(source, int(where.rpartition(":")[2]), f"  {where}: {source} imports job entry module {target}")
             for source in graph if source != CLI_MODULE
             for target, where in graph[source].items() if target in entries]
    return [line for *_, line in sorted(found)]


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def size_files(root: Path = ROOT) -> list[Path]:
    return [path for top in SIZE_DIRS if (root / top).is_dir() for path in _py_files(root, top)]


def long_files(paths: Iterable[Path], root: Path = ROOT, limit: int = MAX_FILE_LINES) -> list[str]:
    counts = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in paths}
    return [f"  {path.relative_to(root).as_posix()}: {n} lines"
            for path, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n > limit]


def long_functions(paths: Iterable[Path], root: Path = ROOT, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for path in paths:
        for name, node in _functions(_parse(path)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                found.append((n, f"  {path.relative_to(root).as_posix()}:{node.lineno} {name}: {n} lines"))
    return [line for _, line in sorted(found, key=lambda x: -x[0])]


# ---------------------------------------------------------------------------------------------- the rules


def test_no_import_cycles():
    graph = build_graph(discover())
    cycles = find_cycles(graph)
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s) among the project's modules (function-local and "
                    "TYPE_CHECKING imports count; a package's __init__ importing its own submodules does "
                    "not). Move the shared code into a module both can import, or let the package's "
                    "__init__ do the wiring:\n" + format_cycles(graph, cycles), pytrace=False)


def test_specialists_and_data_pipeline_import_nothing_of_ours_nor_ray():
    found = layering_violations(discover())
    if found:
        pytest.fail("docs/architecture.md: specialists and data_pipeline import nothing of ours (not each "
                    "other, not ray_jobs) and never ray:\n" + "\n".join(found), pytrace=False)


def test_only_the_cli_imports_job_entry_modules():
    entries = job_entry_modules()
    assert {"ray_jobs.train", "ray_jobs.predict"} <= entries, f"COMMANDS parsed as {sorted(entries)}"
    found = entry_import_violations(build_graph(discover()), entries)
    if found:
        pytest.fail(f"job entry modules ({', '.join(sorted(entries))}) are imported by {CLI_MODULE} only; "
                    "move what others need into a shared non-entry module:\n" + "\n".join(found),
                    pytrace=False)


def test_no_file_over_the_line_limit():
    found = long_files(size_files())
    if found:
        pytest.fail(f"{len(found)} file(s) over {MAX_FILE_LINES} lines; split them:\n" + "\n".join(found),
                    pytrace=False)


def test_no_function_over_the_line_limit():
    found = long_functions(size_files())
    if found:
        pytest.fail(f"{len(found)} function(s) over {MAX_FUNCTION_LINES} lines; split them into named "
                    "helpers:\n" + "\n".join(found), pytrace=False)


# ------------------------------------------------------------------------------ the checker, on a toy tree


def _tree(root: Path, files: Mapping[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return discover(root, ["pkg"])


def test_checker_reads_every_import_kind(tmp_path):
    modules = _tree(tmp_path, {
        "pkg/__init__.py": "from pkg.model import Model\nfrom pkg import zoo\n",
        "pkg/model.py": "from __future__ import annotations\nfrom typing import TYPE_CHECKING\nimport torch\n"
                        "if TYPE_CHECKING:\n    from .sub.deep import X\n",
        "pkg/zoo.py": "def f():\n    import pkg.sub.deep as d\n    from . import model\n",
        "pkg/sub/__init__.py": "from . import deep\nfrom .deep import *\n",
        "pkg/sub/deep.py": "from .. import Model\nfrom ..sub import nothing_here\n",
    })
    graph = build_graph(modules)
    assert {k: set(v) for k, v in graph.items()} == {
        "pkg": {"pkg.model", "pkg.zoo"},
        "pkg.model": {"pkg.sub.deep"},
        "pkg.zoo": {"pkg.sub.deep", "pkg.model"},
        "pkg.sub": {"pkg.sub.deep"},
        "pkg.sub.deep": {"pkg", "pkg.sub"},
    }
    assert find_cycles(graph) == [["pkg", "pkg.model", "pkg.sub.deep", "pkg"],
                                  ["pkg.sub", "pkg.sub.deep", "pkg.sub"],
                                  ["pkg", "pkg.zoo", "pkg.sub.deep", "pkg"]]
    assert graph["pkg.model"]["pkg.sub.deep"] == "pkg/model.py:5"


@pytest.mark.parametrize(("zoo_import", "cycle"), [
    ("from pkg.registry import register", []),  # the timm way: __init__ wires zoo, zoo imports the submodule
    ("from pkg import registry", []),
    ("from pkg import register", [["pkg", "pkg.zoo", "pkg"]]),  # a name from the half-run package __init__
])
def test_checker_package_wiring(tmp_path, zoo_import, cycle):
    modules = _tree(tmp_path, {
        "pkg/__init__.py": "from pkg import zoo\nfrom pkg.registry import register\n",
        "pkg/registry.py": "def register(x):\n    pass\n",
        "pkg/zoo.py": zoo_import + "\n",
    })
    assert find_cycles(build_graph(modules)) == cycle


def test_checker_sizes(tmp_path):
    path = tmp_path / "tests" / "m.py"
    path.parent.mkdir()
    path.write_text("class C:\n    def f(self):\n        def g():\n" + "            pass\n" * 80 + "x = 1\n")
    assert long_functions([path], tmp_path) == ["  tests/m.py:2 C.f: 82 lines",
                                                "  tests/m.py:3 C.f.<locals>.g: 81 lines"]
    assert long_files([path], tmp_path, limit=83) == ["  tests/m.py: 84 lines"]
    assert long_files([path], tmp_path, limit=84) == []
