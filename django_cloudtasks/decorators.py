"""The original package's decorator, kept for compatibility."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django_cloudtasks.registry import Task, task


def register_task(func: Callable[..., Any]) -> Task:
    """Register ``func`` under its function name (the original ``@register_task``).

    Raises:
        AlreadyRegistered: when another function already has that name.
    """
    result: Task = task(func)
    return result
