"""The Celery 5 side of the comparison: the same trivial tasks and workflows on Redis.

The worker runs as ``celery -A benchmarks.celery_bench worker``; the broker and the
result backend are ``CLOUDTASKS_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/11``,
a database number of its own that the benchmark empties before it starts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from celery import Celery, chain, chord, group

REDIS_URL = os.environ.get("CLOUDTASKS_BENCH_REDIS", "redis://127.0.0.1:6379/11")
QUEUE = "cloudtasks-bench"

app = Celery("cloudtasks_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench_noop")
def noop(value: int) -> int:
    """Return ``value``."""
    return value


@app.task(name="bench_inc")
def inc(value: int) -> int:
    """Return ``value + 1`` (a chain step)."""
    return value + 1


@app.task(name="bench_tsum")
def tsum(values: list[int]) -> int:
    """Sum a group's results (a chord's callback)."""
    return sum(values)


def chain_of(size: int) -> Any:
    """A chain of ``size`` steps, each adding one."""
    return chain(inc.si(0), *(inc.s() for _ in range(size - 1)))


def chord_of(size: int) -> Any:
    """A chord of ``size`` members and a summing callback."""
    return chord((noop.si(i) for i in range(size)), tsum.s())


def group_of(size: int) -> Any:
    """A group of ``size`` members."""
    return group(noop.si(i) for i in range(size))


#: Workflow shape -> the builder of its canvas for a size.
WORKFLOWS: dict[str, Callable[[int], Any]] = {
    "chain": chain_of,
    "chord": chord_of,
    "group": group_of,
}


def run(kind: str, size: int, timeout: float) -> Any:
    """Build and start the workflow, wait for its result and return it."""
    result = WORKFLOWS[kind](size).apply_async()
    return result.get(timeout=timeout, interval=0.005, disable_sync_subtasks=False)
