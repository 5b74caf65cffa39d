"""The emulator is an island: the package reaches it through one command, and it needs
neither Django nor the rest of the package."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import django_cloudtasks

PACKAGE = Path(django_cloudtasks.__file__).parent
EMULATOR = PACKAGE / "emulator"
COMMAND = PACKAGE / "management" / "commands" / "cloudtasks_emulator.py"


def imported_modules(path: Path) -> Iterator[str]:
    """The absolute names of the modules ``path`` imports (relative ones resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def is_emulator(module: str) -> bool:
    return module == "django_cloudtasks.emulator" or module.startswith(
        "django_cloudtasks.emulator."
    )


def test_only_the_emulator_command_imports_the_emulator():
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if EMULATOR not in path.parents and any(map(is_emulator, imported_modules(path)))
    )
    assert importers == [str(COMMAND.relative_to(PACKAGE))]


def test_the_emulator_imports_no_django_and_nothing_else_of_the_package():
    outside = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in EMULATOR.rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] == "django"
        or (module.startswith("django_cloudtasks") and not is_emulator(module))
    }
    assert outside == set()


def test_the_walk_sees_the_imports_it_looks_for():
    # The command imports the emulator; the emulator's own modules import each other.
    assert any(map(is_emulator, imported_modules(COMMAND)))
    assert "django_cloudtasks.emulator.options.EmulatorOptions" in set(
        imported_modules(EMULATOR / "emulator.py")
    )
