"""Tasks for the CloudChainManager tests (the original package's examples).

The README's own tasks (``sum``, ``faulty_task``, ``my_error_handler``) live in
``tests/testapp/tasks.py``; these add shapes the README does not cover: a result
injected into a parameter other than the first, one with a default, several left unset.
"""

from __future__ import annotations

import builtins

from django_cloudtasks.decorators import register_task
from tests.testapp.models import Execution


def _record(name: str, value: object = None) -> None:
    Execution.objects.create(task=name, value=value)


@register_task
def legacy_subtract(a, b):
    _record("legacy_subtract", [a, b])
    return a - b


@register_task
def legacy_combine(a, b, c):
    _record("legacy_combine", [a, b, c])
    return a + b + c


@register_task
def legacy_scale(value, factor=2):
    _record("legacy_scale", [value, factor])
    return value * factor


@register_task
def legacy_total(values):
    _record("legacy_total", values)
    return builtins.sum(values)


@register_task
def legacy_ping():
    _record("legacy_ping")
    return "pong"


@register_task
def legacy_needs_value(value):
    _record("legacy_needs_value", value)
    return value
