"""The package's shape: modules along their seams, no import cycle, engines at the edge.

Read from the source (``ast``), no import: every ``import`` statement counts, function-level
ones included. An import of ``pal.a.b`` is an edge to ``pal.a.b``; ``from pal.a import name``,
where ``name`` is not a submodule, an edge to ``pal.a``'s ``__init__``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PAL = REPO / "pal"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PAL.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path] | None = None) -> list[str]:
    """Every module ``path`` imports (absolute names, relative imports resolved); ``from a
    import b`` gives ``a.b`` when it is one of ``modules``, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append(sub if modules is not None and sub in modules else base)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name, modules) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_pal_modules():
    assert _cycles(_graph()) == []


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in PAL.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _importers(prefix: str) -> set[str]:
    return {
        name
        for name, path in _modules().items()
        if any(m == prefix or m.startswith(prefix + ".") for m in _imports(path, name))
    }


def _ray_data_users() -> set[str]:
    """Modules that import ``ray.data`` or reach it as ``ray.data`` after ``import ray``."""
    users = _importers("ray.data")
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "data"
                and isinstance(node.value, ast.Name)
                and node.value.id == "ray"
            ):
                users.add(name)
    return users


def test_engines_are_imported_at_the_edge_only():
    assert {m.split(".")[1] for m in _importers("mlflow")} == {"tracking"}
    assert {m.split(".")[1] for m in _importers("ray.tune")} == {"sweeps"}
    assert _ray_data_users() == {"pal.distributed"}


def test_a_round_is_built_in_one_module():
    """``QueryContext(``, ``Runtime.from_config(`` and ``Normalizer(`` are each called in one
    module of ``pal/`` (their definitions aside): one round, whoever labels."""
    for call in ("QueryContext(", "Runtime.from_config(", "Normalizer("):
        pattern = re.compile(rf"(?<![\w.]){re.escape(call)}|\.{re.escape(call)}")
        where = {
            str(p.relative_to(REPO))
            for p in PAL.rglob("*.py")
            for line in p.read_text().splitlines()
            if pattern.search(line) and not line.lstrip().startswith(("class ", "def ", "#"))
        }
        assert where == {"pal/learner.py"}, call
