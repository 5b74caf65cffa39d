"""Running a ported case: apply a canvas on the path under test, read what tasks recorded."""

from __future__ import annotations

import time
from typing import Any

from django_cloudtasks.models import Node
from django_cloudtasks.transports import get_transport
from tests.testapp.models import Execution

#: How long ``get()`` waits (Celery's suite waits 60 s; the emulator's deliveries take
#: real time, the in-process paths none).
TIMEOUT = 60


def run(expr: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
    """``expr.apply_async(args, kwargs, **options)``; on the memory path, run what it sent."""
    result = expr.apply_async(args, kwargs, **options)
    drain()
    return result


def drain() -> None:
    """Run what the memory transport holds (nothing to do on the other paths)."""
    transport = get_transport()
    if transport.name == "memory":
        transport.drain()


def settle() -> None:
    """Over the emulator, wait until no node is left to run (for up to ``TIMEOUT``).

    An error callback is a Cloud Task of its own, delivered after the failure that
    ``get()`` already raised; Celery's suite waits for its echo the same way.
    """
    if get_transport().name != "cloudtasks":
        return
    deadline = time.monotonic() + TIMEOUT
    while Node.objects.unfinished().exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def recorded(key: str) -> list[Any]:
    """What ``redis_echo`` recorded under ``key``, in order (Celery's Redis list)."""
    settle()
    rows = Execution.objects.filter(task=key).order_by("id")
    return list(rows.values_list("value", flat=True))


def count(key: str) -> int:
    """How many times ``redis_count`` counted under ``key`` (Celery's Redis counter)."""
    settle()
    return Execution.objects.filter(task=key).count()


def node_ids(task_name: str) -> list[str]:
    """The ids of the nodes that ran ``task_name``, in the order they were stored."""
    rows = Node.objects.filter(task_name=task_name).order_by("created_at", "index")
    return [str(pk) for pk in rows.values_list("pk", flat=True)]
