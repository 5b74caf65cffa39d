"""Functions decorated with Django's ``@task`` (``django.tasks``, or the backport on 5.2).

Not named ``tasks.py``, so that the app loads where neither is installed; the backend
tests import it. Each task records its executions like those of ``tasks.py``.
"""

from __future__ import annotations

from django.utils import timezone

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from tests.testapp.models import Execution


def _record(name: str, value: object = None) -> None:
    Execution.objects.create(task=name, value=value)


@task
def add(x, y):
    _record("django.add", [x, y])
    return x + y


@task
def quiet_add(x, y):
    """Like ``add`` but touches no table, for query-count tests."""
    return x + y


@task
def explode(message):
    _record("django.explode", message)
    raise ValueError(message)


@task
def stamp():
    """Record when it ran."""
    moment = timezone.now().isoformat()
    _record("django.stamp", moment)
    return moment


@task(takes_context=True)
def inspect_self(context, label):
    """Return what the task sees of its own result while it runs."""
    current = context.task_result.task.get_result(context.task_result.id)
    return {
        "label": label,
        "attempt": context.attempt,
        "id": context.task_result.id,
        "status": str(current.status),
    }


@task
async def double_async(x):
    return 2 * x


def undecorated(x):
    """Decorated by a test while the Cloud Tasks backend is configured."""
    return x
