"""Celery-style tasks and workflows for Django, run on Google Cloud Tasks.

The public API is imported lazily so that importing a submodule (for example the
emulator) does not require Django settings.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AsyncResult",
    "CloudChainManager",
    "GroupResult",
    "ResultSet",
    "WorkflowResult",
    "chain",
    "chord",
    "group",
    "register_task",
    "signature",
    "task",
]

_LAZY = {
    "task": "django_cloudtasks.registry",
    "register_task": "django_cloudtasks.decorators",
    "AsyncResult": "django_cloudtasks.results",
    "GroupResult": "django_cloudtasks.results",
    "ResultSet": "django_cloudtasks.results",
    "WorkflowResult": "django_cloudtasks.results",
    "CloudChainManager": "django_cloudtasks.manager",
    "chain": "canvas",
    "chord": "canvas",
    "group": "canvas",
    "signature": "canvas",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'django_cloudtasks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
