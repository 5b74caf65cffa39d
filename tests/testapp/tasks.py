"""Tasks the test suite runs. Each records its executions in the database."""

from __future__ import annotations

import builtins

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
