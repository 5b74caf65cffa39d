"""Tasks the test suite runs. Each records its executions in the database."""

from __future__ import annotations

import asyncio
import builtins
import threading

from django_cloudtasks import task
from django_cloudtasks.decorators import register_task
from tests.testapp.models import Execution


def _record(name: str, value: object = None) -> None:
    Execution.objects.create(task=name, value=value)


@task
def add(x, y):
    _record("add", [x, y])
    return x + y


@task
def tsum(numbers, extra=0):
    _record("tsum", numbers)
    return builtins.sum(numbers) + extra


@task
def identity(x):
    _record("identity", x)
    return x


@task
def fail(*args, **kwargs):
    _record("fail", list(args))
    raise ValueError(f"failing on purpose with {list(args)}")


class CustomError(Exception):
    pass


@task
def fail_custom():
    raise CustomError("a custom error")


@task
def on_error(original_task_id=None, original_task_name=None, error=None, payload=None):
    _record(
        "on_error",
        {"id": original_task_id, "name": original_task_name, "error": error, "payload": payload},
    )
    return "handled"


@task
def on_error_id_only(original_task_id):
    _record("on_error_id_only", original_task_id)


@task
def not_json():
    return {1, 2}


@task(bind=True)
def bound_info(self, x):
    _record("bound_info", {"retries": self.request.retries, "id": self.request.id})
    return x


@task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, succeed_on):
    _record("flaky", self.request.retries)
    if self.request.retries < succeed_on:
        raise self.retry(countdown=0, exc=RuntimeError(f"attempt {self.request.retries}"))
    return self.request.retries


@task(autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=1, retry_jitter=False)
def always_disconnects():
    _record("always_disconnects")
    raise ConnectionError("no route")


@task(bind=True)
def check_revoked(self):
    return self.is_revoked()


@register_task
def sum(a, b):
    _record("sum", [a, b])
    return a + b


@register_task
def faulty_task(a, b):
    raise ValueError(f"Test error: inputs {a}, {b}")


@register_task
def my_error_handler(original_task_id, original_task_name, error, payload):
    _record(
        "my_error_handler",
        {"id": original_task_id, "name": original_task_name, "error": error, "payload": payload},
    )


from tests.testapp import legacy_tasks  # noqa: E402, F401 - the CloudChainManager examples


@task(bind=True)
def own_state(self):
    from django_cloudtasks.results import AsyncResult

    return AsyncResult(self.request.id).state


@task
def quiet_add(x, y):
    """Like ``add`` but touches no table, for query-count tests."""
    return x + y


@task
def quiet_sum(numbers):
    return builtins.sum(numbers)


@task(bind=True)
def delivery_headers(self):
    """Return the Cloud Tasks headers this delivery arrived with."""
    return {k: v for k, v in self.request.headers.items() if k.lower().startswith("x-cloudtasks")}


@task
def stamp():
    """Record when it ran."""
    from django.utils import timezone

    _record("stamp", timezone.now().isoformat())
    return True


@task
def slow(seconds, value):
    """Record the start, sleep, return ``value`` (for crash tests)."""
    import time

    _record("slow", value)
    time.sleep(seconds)
    return value


class ProcessDied(BaseException):
    """Stands for the death of the process running a task: nothing after it runs."""


@task
def dies_once(x):
    """Record the start; the first run dies like a killed process, later ones return ``x``."""
    first = not Execution.objects.filter(task="dies_once").exists()
    _record("dies_once", x)
    if first:
        raise ProcessDied
    return x


@task(bind=True)
def bound_called_directly(self):
    """Return whether this call ran in-process rather than as a delivery."""
    return self.request.called_directly


@task
def celery_errback(request, exc, traceback):
    """An error callback in Celery's form: the failed task's request, exc, traceback."""
    from django_cloudtasks.exceptions import ChordError

    _record(
        "celery_errback",
        {
            "id": request.id,
            "task": request.task_name,
            "args": list(request.args),
            "exc": type(exc).__name__,
            "exc_args": [str(a) for a in exc.args],
            "chord_error": isinstance(exc, ChordError),
            "traceback": traceback,
        },
    )


@task
def old_errback(task_id, *, note="old"):
    """An error callback in Celery's old form: the failed task's id."""
    _record("old_errback", {"id": task_id, "note": note})


@task
def show_queue(x):
    return x


@task
def nested_delay(x):
    """Record before, delay a child, record after (eager order)."""
    _record("nested", "before")
    identity.delay(x)
    _record("nested", "after")
    return x


@task
def waits_on_child(x):
    """Call get() on a result inside a task (Celery forbids it)."""
    return identity.delay(x).get(timeout=1)


class PaymentDeclined(Exception):
    """A custom exception with several arguments."""

    def __init__(self, code, amount):
        super().__init__(code, amount)
        self.code, self.amount = code, amount


@task
def declines(code, amount):
    raise PaymentDeclined(code, amount)


@task
def bad_json():
    import json

    return json.loads("{not json")


@task(bind=True, max_retries=1)
def retries_without_exc(self):
    _record("retries_without_exc", self.request.retries)
    raise self.retry(countdown=0)


@task(bind=True, max_retries=3)
def retries_with_new_args(self, x):
    _record("retries_with_new_args", x)
    if x < 3:
        raise self.retry(args=[x + 1], countdown=0, queue="other")
    return x


@task(bind=True, max_retries=5)
def retry_directly(self, fail_with):
    try:
        raise ValueError(fail_with)
    except ValueError as exc:
        raise self.retry(exc=exc) from exc


@task(bind=True, max_retries=5, default_retry_delay=0)
def retry_later(self):
    raise self.retry(exc=KeyError("not yet"), countdown=3600)


@task
def ignores():
    from django_cloudtasks.exceptions import Ignore

    _record("ignores")
    raise Ignore()


@task(autoretry_for=(ValueError,), max_retries=3)
def rejects():
    from django_cloudtasks.exceptions import Reject

    _record("rejects")
    raise Reject("bad input")


@task(bind=True)
def request_info(self, x, y=0):
    r = self.request
    return {
        "id": r.id,
        "args": list(r.args),
        "kwargs": dict(r.kwargs),
        "retries": r.retries,
        "root_id": r.root_id,
        "called_directly": r.called_directly,
        "is_eager": r.is_eager,
        "task": r.task,
    }


@task(bind=True)
def reports_progress(self):
    from django_cloudtasks.results import AsyncResult

    self.update_state(state="PROGRESS", meta={"done": 1})
    result = AsyncResult(self.request.id)
    return [result.state, result.info]


@task(
    autoretry_for=(LookupError,),
    dont_autoretry_for=(KeyError,),
    retry_kwargs={"max_retries": 1, "countdown": 0},
)
def looks_up(kind):
    _record("looks_up", kind)
    raise KeyError(kind) if kind == "key" else IndexError(kind)


@task(soft_time_limit=0.2)
def overruns():
    import time

    from django_cloudtasks.exceptions import SoftTimeLimitExceeded

    try:
        for _ in range(100):
            time.sleep(0.05)
    except SoftTimeLimitExceeded:
        return "stopped"
    return "ran to the end"


@task(ignore_result=True)
def forgets(x):
    return x


@task(typing=False)
def untyped(x):
    return x


@task(throws=(KeyError,))
def expected_failure():
    raise KeyError("expected")


@task(bind=True)
def replaced_by_add(self, x, task_name="add"):
    """Record, then replace itself by ``task_name(x, 1)``."""
    from canvas import Signature

    _record("replaced_by_add", x)
    return self.replace(Signature(task_name, (x, 1)))


@task(bind=True)
def lineage(self, *_):
    """Where this task sits in its canvas, as ``self.request`` tells it."""
    r = self.request
    return {
        "parent_id": r.parent_id,
        "group": r.group,
        "group_index": r.group_index,
        "chord": r.chord,
    }


# -- async def tasks ----------------------------------------------------------------------


async def _arecord(name: str, value: object = None) -> None:
    await Execution.objects.acreate(task=name, value=value)


@task
async def aadd(x, y):
    """An async task: awaits before and after it records its run."""
    await asyncio.sleep(0)
    await _arecord("aadd", [x, y])
    return x + y


@task
async def afail(x):
    await asyncio.sleep(0)
    raise ValueError(f"async failing with {x}")


@task(bind=True, max_retries=2, default_retry_delay=0)
async def aretry_once(self, x):
    """Asks for one retry, then returns what its bound context saw."""
    await self.aupdate_state("PROGRESS", {"attempt": self.request.retries})
    if self.request.retries == 0:
        raise self.retry()
    return {"x": x, "retries": self.request.retries, "revoked": await self.ais_revoked()}


@task(soft_time_limit=0.2)
async def aslow(seconds):
    """Sleeps ``seconds``; records that its cleanup ran when it was cancelled."""
    try:
        await asyncio.sleep(seconds)
    finally:
        await _arecord("aslow-cleanup", seconds)
    return seconds


@task
async def await_gather(n):
    """Runs ``n`` sleeps concurrently inside one task and records how many overlapped."""
    running = [0, 0]

    async def one() -> None:
        running[0] += 1
        running[1] = max(running)
        await asyncio.sleep(0.01)
        running[0] -= 1

    await asyncio.gather(*(one() for _ in range(n)))
    return running[1]


@task
async def await_event(key):
    """Waits (on the server's event loop) until ``release_event(key)`` was called."""
    await _arecord("await_event", key)
    while not await Execution.objects.filter(task="release_event", value=key).aexists():
        await asyncio.sleep(0.02)
    return key


@task
def release_event(key):
    _record("release_event", key)
    return key


@task
async def athread(_=None):
    """The name of the thread the coroutine ran on."""
    await asyncio.sleep(0)
    return threading.current_thread().name


@task
def sthread(_=None):
    """The name of the thread the function ran on."""
    return threading.current_thread().name


# The chaos run's and the flow-control tests' tasks live in modules of their own;
# importing them registers them.
from tests.testapp import chaos_tasks, flow_tasks  # noqa: E402, F401
