"""Tasks of the flow-control tests: each logs its start and end, in order, in memory.

The log is the tasks' own account of what ran at once: :func:`most_at_once` replays
it. A task may also count, from the database, how many nodes of its key are in
flight when it starts.
"""

from __future__ import annotations

import itertools
import threading
import time

from django_cloudtasks import task
from django_cloudtasks.constants import SLOT_STATES
from tests.testapp.models import Execution

_lock = threading.Lock()
_order = itertools.count()
#: ``(sequence, "start" | "end", key, item)``, appended under a lock.
LOG: list[tuple[int, str, str, object]] = []
#: The number of nodes in flight for a key, read by each task as it starts.
IN_FLIGHT: list[int] = []


def log(event: str, key: str, item: object) -> None:
    with _lock:
        LOG.append((next(_order), event, key, item))


def clear() -> None:
    with _lock:
        LOG.clear()
        IN_FLIGHT.clear()


def starts() -> list[tuple[str, object]]:
    """The keys and items in the order they started."""
    return [(key, item) for _, event, key, item in sorted(LOG) if event == "start"]


def most_at_once() -> dict[str, int]:
    """The most tasks of each key that ran at once, replaying the log in order."""
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    for _, event, key, _item in sorted(LOG):
        running[key] = running.get(key, 0) + (1 if event == "start" else -1)
        most[key] = max(most.get(key, 0), running[key])
    return most


def _work(key: str, item: object, pause: float) -> None:
    log("start", key, item)
    time.sleep(pause)
    log("end", key, item)


@task(concurrency_key="acct:{account}", max_concurrency=2)
def per_account(account, item, pause=0.005):
    _work(f"acct:{account}", item, pause)
    return item


@task(concurrency_key=lambda account, **_: f"fn:{account}", max_concurrency=1)
def one_per_account(account, item=0):
    _work(f"fn:{account}", item, 0)
    return item


@task
def counting_member(item, pause=0.002):
    """Count this workflow's members in flight (sent, running or retrying) as it starts."""
    from django_cloudtasks.context import current_request
    from django_cloudtasks.models import Node

    request = current_request()
    assert request is not None
    in_flight = Node.objects.filter(
        workflow_id=request.workflow_id, task_name="counting_member", state__in=SLOT_STATES
    ).count()
    with _lock:
        IN_FLIGHT.append(in_flight)
    _work("member", item, pause)
    return item


@task(rate_limit="20/s")
def paced(item):
    _work("paced", item, 0)
    Execution.objects.create(task="paced", value=item)
    return item


@task(concurrency_key="hold:{key}", max_concurrency=1)
def holder(key, name, seconds=0.0):
    """Record its start and end in the database; sleep ``seconds`` on its first run only."""
    first = not Execution.objects.filter(task="holder", value=[name, "start"]).exists()
    Execution.objects.create(task="holder", value=[name, "start"])
    if first:
        time.sleep(seconds)
    Execution.objects.create(task="holder", value=[name, "end"])
    return name


@task(unique_key="invoice:{invoice}")
def bill(invoice, amount=0):
    Execution.objects.create(task="bill", value=[invoice, amount])
    return amount
