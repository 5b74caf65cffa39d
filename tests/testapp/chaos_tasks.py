"""Tasks of the chaos run. Each body appends its start and end to an execution log.

The log is a file (``CLOUDTASKS_CHAOS_LOG``), not a table: the chaos run terminates
the app's database connections, and a task's own bookkeeping must not fail with them.
One ``write`` of one line to a file opened for appending is atomic between processes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from django_cloudtasks import task


def _log(context: Any, phase: str, **extra: Any) -> None:
    path = os.environ.get("CLOUDTASKS_CHAOS_LOG")
    if not path:
        return
    line = {
        "node": context.request.id,
        "task": context.name,
        "retries": context.request.retries,
        "attempt": context.request.attempt,
        "phase": phase,
        "pid": os.getpid(),
        "at": time.time(),
        **extra,
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


@task(bind=True)
def chaos_step(self, x, plus=1):
    """Returns ``x + plus``."""
    _log(self, "start")
    time.sleep(0.05)  # long enough for a kill to land mid-body now and then
    _log(self, "end")
    return x + plus


@task(bind=True)
def chaos_sum(self, numbers):
    """Returns the sum of ``numbers``."""
    _log(self, "start")
    total = sum(numbers)
    _log(self, "end")
    return total


@task(bind=True, max_retries=2)
def chaos_flaky(self, x):
    """Asks for a retry in a second twice, then returns ``x``."""
    _log(self, "start")
    _log(self, "end")
    if self.request.retries < 2:
        self.retry(countdown=1)
    return x


@task(bind=True)
def chaos_fail(self, x):
    """Fails with ValueError."""
    _log(self, "start")
    _log(self, "end")
    raise ValueError(f"chaos failure of {x}")


@task(bind=True)
def chaos_errback(self, original_task_id=None, error=None, **kwargs):
    """An error callback; returns the id of the node that failed."""
    _log(self, "start", original=original_task_id)
    _log(self, "end")
    return original_task_id
