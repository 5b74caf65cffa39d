"""The layering of the two packages, read from their import statements.

Every ``import`` counts, wherever it sits: at module level, inside a function, or
under ``TYPE_CHECKING``. An import that breaks a cycle must say so with a comment
containing "breaks cycle" on its line or the line above; such an edge is left out
of the cycle search.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CYCLE_NOTE = "breaks cycle"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = _module_name(path)
        if not any(name == e or name.startswith(e + ".") for e in exclude):
            found[name] = path
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported module, carries the cycle note)`` for each import in ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    result = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from package import module`` imports the module, not the package.
            targets = [
                f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                for alias in node.names
            ]
        else:
            continue
        nearby = " ".join(lines[max(node.lineno - 2, 0) : node.end_lineno])
        noted = CYCLE_NOTE in nearby
        result.extend((target, noted) for target in targets)
    return result


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` it imports, without noted edges."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, noted in _imports(name, path):
            if target in modules and target != name and not noted:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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


def test_canvas_imports_nothing_but_itself_and_the_standard_library():
    outside = set()
    for name, path in _modules("canvas").items():
        for target, _ in _imports(name, path):
            top = target.split(".")[0]
            if top not in ("canvas", "__future__") and top not in sys.stdlib_module_names:
                outside.add(f"{name} imports {target}")
    assert sorted(outside) == []


def test_canvas_has_no_import_cycle():
    assert _cycles(_graph(_modules("canvas"))) == []
