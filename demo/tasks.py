"""The showcase's tasks, found by the ``django_cloudtasks`` app's autodiscovery.

The first ones are Celery-style (``@task``); they pause a little so that the live
table has something to show. The last three are the original README's examples,
registered with the original ``@register_task`` decorator.
"""

from __future__ import annotations

import builtins
import random
import time

from django_cloudtasks import task
from django_cloudtasks.decorators import register_task


def _work() -> None:
    """Pretend to work for a fraction of a second."""
    time.sleep(random.uniform(0.2, 1.0))


@task
def add(a, b):
    """``a + b``."""
    _work()
    return a + b


@task
def tsum(numbers):
    """The sum of a list: the body of a chord receives its header's results."""
    _work()
    return builtins.sum(numbers)


@task
def divide(a, b):
    """``a / b``: fails with ZeroDivisionError when ``b`` is 0."""
    _work()
    return a / b


@task
def report_failure(original_task_name, error, payload):
    """An error callback: receives what failed, why, and with which arguments."""
    return f"{original_task_name}({payload}) failed with {error}"


# -- the original README's examples ----------------------------------------------------


@register_task
def sum(a, b):
    return a + b


@register_task
def faulty_task(a, b):
    # Always raise an exception to simulate failure:
    raise ValueError(f"Test error: inputs {a}, {b}")


@register_task
def my_error_handler(original_task_id, original_task_name, error, payload):
    print(f"Error callback triggered for task {original_task_name} id={original_task_id}")
    print(f"Error was: {error}")
    print(f"Payload that caused failure: {payload}")
