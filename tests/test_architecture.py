"""The layering of the two packages, read from their import statements.

Every ``import`` counts, wherever it sits: at module level, inside a function, or
under ``TYPE_CHECKING``. An import that breaks a cycle must say so with a comment
containing "breaks cycle" on its line or the line above; such an edge is left out
of the cycle search (none does today). An import of our own modules inside a
function says in a comment why it is not at the top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CYCLE_NOTE = "breaks cycle"

#: The layers of django_cloudtasks, lowest first (docs/architecture.md draws them). A
#: module may import its own layer and the layers below, never one above. An entry
#: names a module and, for a package, every module inside it.
LAYERS: list[tuple[str, ...]] = [
    ("constants", "exceptions", "conf", "signals"),
    ("policy",),
    ("limits", "models"),
    ("telemetry",),
    ("context", "eager_result", "registry"),
    ("store",),
    ("transports",),
    ("dispatch",),
    ("engine",),
    ("runner",),
    ("auth", "views", "urls", "schedules", "backends"),
    ("results", "manager", "decorators", "utils", ""),
    (
        "admin",
        "admin_legacy",
        "dagsvg",
        "management",
        "testing",
        "checks",
        "apps",
        "recovery",
    ),
]
#: Not part of the layering: the emulator is an island of its own, migrations are history.
OUTSIDE = ("django_cloudtasks.emulator", "django_cloudtasks.migrations")


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


def _layer(module: str) -> int:
    """The index in :data:`LAYERS` of a django_cloudtasks module (-1 if unplaced)."""
    best, found = -1, -1
    for position, names in enumerate(LAYERS):
        for name in names:
            full = f"django_cloudtasks.{name}" if name else "django_cloudtasks"
            if (module == full or module.startswith(full + ".")) and len(full) > best:
                best, found = len(full), position
    return found


def _core_modules() -> dict[str, Path]:
    return _modules("django_cloudtasks", exclude=OUTSIDE)


def test_every_django_cloudtasks_module_has_a_layer():
    assert [name for name in _core_modules() if _layer(name) < 0] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, path in _core_modules().items():
        for target, _ in _imports(name, path):
            if not target.startswith("django_cloudtasks") or target.startswith(OUTSIDE):
                continue
            if _layer(target) > _layer(name):
                upward.append(f"{name} imports {target}")
    assert sorted(upward) == []


def test_nothing_below_the_engine_imports_the_engine_runner_or_views():
    engine = _layer("django_cloudtasks.engine")
    forbidden = ("django_cloudtasks.engine", "django_cloudtasks.runner", "django_cloudtasks.views")
    found = [
        f"{name} imports {target}"
        for name, path in _core_modules().items()
        if _layer(name) < engine
        for target, _ in _imports(name, path)
        if target in forbidden or target.startswith(tuple(f + "." for f in forbidden))
    ]
    assert found == []


def test_nothing_below_the_transports_imports_them():
    transports = _layer("django_cloudtasks.transports")
    found = [
        f"{name} imports {target}"
        for name, path in _core_modules().items()
        if _layer(name) < transports
        for target, _ in _imports(name, path)
        if target.startswith("django_cloudtasks.transports")
    ]
    assert found == []


def test_django_cloudtasks_has_no_import_cycle():
    assert _cycles(_graph(_core_modules())) == []


def _explained(lines: list[str], function: ast.AST, node: ast.stmt) -> bool:
    """Whether a comment sits in ``function`` before or on the import ``node``."""
    start = function.lineno - 1  # type: ignore[attr-defined]
    return any("#" in line for line in lines[start : node.end_lineno])


def test_every_import_inside_a_function_says_why():
    silent = []
    for package in ("canvas", "django_cloudtasks"):
        for name, path in _modules(package, exclude=OUTSIDE).items():
            source = path.read_text()
            lines = source.splitlines()
            for function in ast.walk(ast.parse(source)):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(function):
                    if not isinstance(node, ast.Import | ast.ImportFrom):
                        continue
                    targets = (
                        [a.name for a in node.names]
                        if isinstance(node, ast.Import)
                        else [node.module or ""]
                    )
                    ours = [
                        t for t in targets if t.split(".")[0] in ("canvas", "django_cloudtasks")
                    ]
                    # The emulator is an optional island, imported only where it is used.
                    island = all(t.startswith(OUTSIDE) for t in ours)
                    if ours and not island and not _explained(lines, function, node):
                        silent.append(f"{name}:{node.lineno}")
    assert silent == []


#: The most lines a module may have: each is small enough to read in one sitting.
MAX_MODULE_LINES = 450


def test_no_module_is_longer_than_one_sitting():
    modules = {
        **_modules("canvas"),
        **_modules("django_cloudtasks", exclude=("django_cloudtasks.migrations",)),
    }
    too_long = {
        name: lines
        for name, path in modules.items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


#: Where rows of nodes and workflows may be written, and why.
WRITERS = {
    "django_cloudtasks.engine": "every change of state",
    "django_cloudtasks.store": "the raw statements the engine runs",
    "django_cloudtasks.dispatch": "the parked flag of nodes beyond Cloud Tasks' horizon",
}
_WRITES = {"update", "save", "delete", "create", "bulk_create", "bulk_update", "update_or_create"}


def _model_of(expression: ast.expr) -> str | None:
    """``Node`` for ``Node.objects.filter(...)`` and the like, else None."""
    while isinstance(expression, ast.Call | ast.Attribute):
        expression = expression.func if isinstance(expression, ast.Call) else expression.value
    if isinstance(expression, ast.Name) and expression.id in ("Node", "Workflow"):
        return expression.id
    return None


def test_only_the_engine_writes_nodes_and_workflows():
    writes = []
    for name, path in _core_modules().items():
        if any(name == w or name.startswith(w + ".") for w in WRITERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _WRITES
                and _model_of(node.func.value)
            ):
                writes.append(f"{name}:{node.lineno} {ast.unparse(node.func)}")
    assert writes == []
