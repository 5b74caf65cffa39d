"""Every error the package raises to its users is a CloudTasksError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import django_cloudtasks
from django_cloudtasks.exceptions import CloudTasksError

#: Signals a module raises and catches itself; none leaves the package.
INTERNAL = {
    "django_cloudtasks.dagsvg.layout.NoTree",  # a DAG the picture cannot lay out as a tree
    "django_cloudtasks.views.NonFinite",  # becomes a BadRequest (400)
}


def _error_classes() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(django_cloudtasks.__path__, "django_cloudtasks."):
        if info.name.startswith(("django_cloudtasks.emulator", "django_cloudtasks.migrations")):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_error_of_the_package_is_a_cloudtasks_error():
    errors = _error_classes()
    assert {"django_cloudtasks.schedules.declarations.ScheduleError"} <= set(errors)

    outside = sorted(
        name
        for name, cls in errors.items()
        if name not in INTERNAL and not issubclass(cls, CloudTasksError)
    )

    assert outside == []
