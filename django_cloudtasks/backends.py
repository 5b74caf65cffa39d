"""A Django Tasks backend: ``@task`` functions of ``django.tasks`` run on this engine.

Configure it as a task backend::

    TASKS = {"default": {"BACKEND": "django_cloudtasks.backends.CloudTasksBackend"}}

On Django 6 it implements ``django.tasks``' backend interface; on Django 5.2 that of
the ``django-tasks`` backport (``pip install django-tasks``). ``task.enqueue()``
persists a one-node workflow, which shows up in the admin like any other, and the
configured transport delivers it: Cloud Tasks, or the ``eager`` and ``memory`` test
doubles. ``run_after`` becomes the node's ETA, ``queue_name`` the Cloud Tasks queue
(``"default"`` meaning ``CLOUDTASKS["QUEUE"]``), and ``get_result()`` reads the node.

How a Django task becomes runnable here: each ``Task`` bound to this backend is
registered with this library's registry, under ``django.tasks:<module path>``, when
Django validates it, which happens when ``@task`` decorates the function (and again
on ``using()`` and ``enqueue()``). Tasks defined in an installed app's ``tasks``
module are therefore known to every server from start-up, because this app imports
those modules when it is ready. A name that is still unknown is resolved by
:func:`ensure_registered`, which imports a module path only from an installed app and
only accepts a ``Task`` object.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

try:
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskContext, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError, TaskResult
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:
    try:
        from django_tasks import (  # type: ignore[no-redef,import-not-found,assignment]
            DEFAULT_TASK_QUEUE_NAME,
            TaskContext,
            TaskResultStatus,
        )
        from django_tasks.backends.base import (  # type: ignore[no-redef,import-not-found,assignment]
            BaseTaskBackend,
        )
        from django_tasks.base import (  # type: ignore[no-redef,import-not-found,assignment]
            Task,
            TaskError,
            TaskResult,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,import-not-found,assignment]
            InvalidTaskError as InvalidTask,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef,import-not-found,assignment]
            TaskResultDoesNotExist,
        )
        from django_tasks.signals import (  # type: ignore[no-redef,import-not-found,assignment]
            task_enqueued,
            task_finished,
            task_started,
        )
        from django_tasks.utils import (  # type: ignore[no-redef,import-not-found,assignment]
            normalize_json,
        )
    except ImportError as exc:
        raise ImproperlyConfigured(
            "django_cloudtasks.backends.CloudTasksBackend needs Django Tasks: Django 6.0 or "
            "later (django.tasks), or the django-tasks backport on Django 5.2 "
            "(pip install django-tasks)."
        ) from exc

from canvas import Signature
from canvas.expression import normalize_options
from django_cloudtasks import signals
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import State
from django_cloudtasks.registry import TaskPolicy, registry
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.backends")

__all__ = ["PREFIX", "CloudTasksBackend", "ensure_registered", "registry_name"]

#: Registry names of Django tasks start with this; the same on Django 6 and the backport,
#: so nodes persisted before an upgrade still run after it.
PREFIX = "django.tasks:"

#: Node states as Django Tasks reports them.
STATUSES: Mapping[str, Any] = {
    State.PENDING: TaskResultStatus.READY,
    State.SCHEDULED: TaskResultStatus.READY,
    State.QUEUED: TaskResultStatus.READY,
    State.RETRY: TaskResultStatus.READY,
    State.STARTED: TaskResultStatus.RUNNING,
    State.SUCCESS: TaskResultStatus.SUCCESSFUL,
    State.FAILURE: TaskResultStatus.FAILED,
    State.REVOKED: TaskResultStatus.FAILED,
}

_REVOKED_ERROR = "django_cloudtasks.exceptions.TaskRevoked"
_TASK_NAME_MAX = 200  # Node.task_name

#: Registry name -> the Django ``Task`` registered under it.
_tasks: dict[str, Task] = {}


class CloudTasksBackend(BaseTaskBackend):
    """Runs Django Tasks as one-node workflows of this engine.

    ``OPTIONS`` takes nothing yet. ``QUEUES``, when not given, allows ``"default"``,
    ``CLOUDTASKS["QUEUE"]`` and every queue of ``CLOUDTASKS["QUEUES"]``; each Django
    queue name is the Cloud Tasks queue id, except ``"default"``, which means
    ``CLOUDTASKS["QUEUE"]``.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False  # Cloud Tasks queues have no priorities

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._queues_from_settings = "QUEUES" not in params
        if self._queues_from_settings:
            self.queues = {DEFAULT_TASK_QUEUE_NAME, str(conf.QUEUE), *(conf.QUEUES or {})}

    def validate_task(self, task: Task) -> None:
        """Check that ``task`` can run here, and register it with this engine.

        Raises:
            InvalidTask: for what Django refuses (a nested function, a priority, a
                naive ``run_after``, an unknown queue...) and for a module path too
                long for a task name.
        """
        if self.queues and task.queue_name not in self.queues:
            where = (
                "add it to CLOUDTASKS['QUEUES'] (an empty dict of settings keeps Cloud Tasks' "
                "defaults) and run `manage.py cloudtasks_queues`"
                if self._queues_from_settings
                else f"add it to the QUEUES of TASKS[{self.alias!r}]"
            )
            raise InvalidTask(
                f"Queue {task.queue_name!r} is not valid for backend {self.alias!r}, whose "
                f"queues are {', '.join(sorted(self.queues))}: {where}."
            )
        super().validate_task(task)
        name = registry_name(task)
        if len(name) > _TASK_NAME_MAX:
            raise InvalidTask(
                f"Task name {name!r} is longer than {_TASK_NAME_MAX} characters; "
                "move the function to a module with a shorter path."
            )
        register(task)

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        """Persist a call of ``task`` as a one-node workflow; it is sent after commit.

        Sends ``task_enqueued``. With the eager transport, outside a transaction, the
        task has run when this returns and the result says so.

        Raises:
            InvalidTask: see :meth:`validate_task`.
            TypeError: when the arguments are not JSON or do not fit the function.
        """
        # Imported when used, here and below: Django builds task backends while apps are
        # still loading, before models (and what imports them) can be imported.
        from django_cloudtasks.engine import persist
        from django_cloudtasks.transports import get_transport

        self.validate_task(task)
        options: dict[str, Any] = {}
        queue = cloud_queue(task.queue_name)
        if queue:
            options["queue"] = queue
        if task.run_after is not None:
            run_after = task.run_after
            if timezone.is_naive(run_after):  # only possible with USE_TZ = False
                run_after = timezone.make_aware(run_after)
            options["eta"] = run_after
        call = Signature(registry_name(task), args, kwargs)
        with transaction.atomic():
            node = persist(call, normalize_options(options, f"{task.module_path}.enqueue")).output
            result = task_result(task, node, self.alias)
            task_enqueued.send(type(self), task_result=result)
        if get_transport().name == "eager" and not transaction.get_connection().in_atomic_block:
            node.refresh_from_db()
            result = task_result(task, node, self.alias)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The result of the call enqueued as ``result_id``, read from its node.

        Raises:
            TaskResultDoesNotExist: when no node of a Django task has that id.
        """
        from django_cloudtasks.models import Node  # not above: see enqueue()

        try:
            node_id = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"{result_id!r} is not a task result id") from None
        node = Node.objects.filter(pk=node_id, task_name__startswith=PREFIX).first()
        if node is None:
            raise TaskResultDoesNotExist(f"no Django task result has the id {result_id}")
        task = ensure_registered(node.task_name)
        if task is None:
            raise TaskResultDoesNotExist(
                f"task result {result_id} is of {node.task_name.removeprefix(PREFIX)!r}, "
                "which is not an importable Django task"
            )
        return task_result(task, node, self.alias)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """``django_cloudtasks.E020``: the backend needs ``django_cloudtasks`` installed."""
        if apps.is_installed("django_cloudtasks"):
            return []
        return [
            checks.Error(
                f"The task backend {self.alias!r} runs on django_cloudtasks, "
                "which is not in INSTALLED_APPS.",
                hint="Add 'django_cloudtasks' to INSTALLED_APPS and include "
                "django_cloudtasks.urls under /cloudtasks/.",
                id="django_cloudtasks.E020",
            )
        ]


# -- names and registration -------------------------------------------------------------


def registry_name(task: Task) -> str:
    """The name ``task`` is registered and persisted under: ``django.tasks:<module path>``."""
    return f"{PREFIX}{task.module_path}"


def cloud_queue(queue_name: str) -> str:
    """The Cloud Tasks queue of a Django queue name; ``""`` means ``CLOUDTASKS["QUEUE"]``."""
    return "" if queue_name == DEFAULT_TASK_QUEUE_NAME else queue_name


def django_queue(queue: str) -> str:
    """The Django queue name of a node's Cloud Tasks queue (the inverse of ``cloud_queue``)."""
    return queue or DEFAULT_TASK_QUEUE_NAME


def register(task: Task) -> str:
    """Register ``task`` with this engine (once per function); returns its registry name.

    Raises:
        AlreadyRegistered: when a task of this library already uses the name.
    """
    name = registry_name(task)
    known = _tasks.get(name)
    if known is not None and known.func is task.func and name in registry:
        return name
    registry.register(runner_for(task), name, TaskPolicy(bind=True, max_retries=0))
    _tasks[name] = task
    return name


def ensure_registered(name: str) -> Task | None:
    """The Django task registered as ``name``, importing it if this process has not.

    Only a ``django.tasks:`` name whose module belongs to an installed app is imported,
    and only a Django ``Task`` object there is accepted; anything else answers None.
    Meant for names read from this library's tables or its authenticated run
    endpoint, never for arbitrary input.
    """
    task = _tasks.get(name)
    if task is not None and name in registry:
        return task
    if not name.startswith(PREFIX):
        return None
    path = name.removeprefix(PREFIX)
    module = path.rpartition(".")[0]
    if not module or apps.get_containing_app_config(module) is None:
        return None
    try:
        found = import_string(path)
    except ImportError:
        return None
    if not isinstance(found, Task) or registry_name(found) != name:
        return None
    register(found)
    return found


def runner_for(task: Task) -> Callable[..., Any]:
    """The function this engine runs for ``task``: calls it, with Django's context if asked.

    Its signature is the task function's (without ``context``) after a bound first
    parameter, so arguments are checked against the function when a call is enqueued.
    """

    def run(delivery: Any, *args: Any, **kwargs: Any) -> Any:
        if task.takes_context:
            result = _result_for_node_id(delivery.request.id)
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        return normalize_json(value)

    params = list(inspect.signature(task.func).parameters.values())
    if task.takes_context:
        params = params[1:]
    bound = inspect.Parameter("__cloudtasks_request", inspect.Parameter.POSITIONAL_ONLY)
    run.__signature__ = inspect.Signature([bound, *params])  # type: ignore[attr-defined]
    run.__name__ = task.func.__name__
    run.__qualname__ = task.func.__qualname__
    run.__module__ = task.func.__module__
    run.__doc__ = task.func.__doc__
    return run


# -- results ----------------------------------------------------------------------------


def task_result(task: Task, node: Any, alias: str) -> TaskResult:
    """The Django ``TaskResult`` of ``node``, a call of ``task`` through backend ``alias``."""
    if node.state == State.REVOKED:
        errors = [TaskError(exception_class_path=_REVOKED_ERROR, traceback="")]
    elif node.error_type:
        module = node.error_module or "builtins"
        errors = [
            TaskError(
                exception_class_path=f"{module}.{node.error_type}",
                traceback=node.error_traceback,
            )
        ]
    else:
        errors = []
    queue_name = django_queue(node.queue)
    if queue_name != task.queue_name or node.eta != task.run_after:
        task = task.using(queue_name=queue_name, run_after=node.eta)
    result: TaskResult = TaskResult(
        task=task,
        id=str(node.pk),
        status=STATUSES[node.state],
        enqueued_at=node.created_at,
        started_at=node.started_at,
        finished_at=node.finished_at,
        last_attempted_at=node.started_at,
        args=list(node.args),
        kwargs=dict(node.kwargs),
        backend=alias,
        errors=errors,
        # Cloud Tasks does not name its workers; each attempt was a delivery of this task.
        worker_ids=[node.cloud_task_id] * node.attempts,
    )
    if node.state == State.SUCCESS:
        object.__setattr__(result, "_return_value", node.result)
    return result


def _result_for_node_id(node_id: Any) -> TaskResult:
    from django_cloudtasks.models import Node  # not above: see CloudTasksBackend.enqueue()

    node = Node.objects.get(pk=node_id)
    task = ensure_registered(node.task_name)
    if task is None:
        raise TaskResultDoesNotExist(f"{node.task_name!r} is not a Django task")
    return task_result(task, node, task.backend)


# -- Django's task_started and task_finished signals ------------------------------------


def _send(signal: Any, node_id: Any) -> None:
    try:
        result = _result_for_node_id(node_id)
    except Exception:
        logger.exception("could not build the Django task result of node %s", node_id)
        return
    for receiver, response in signal.send_robust(CloudTasksBackend, task_result=result):
        if isinstance(response, Exception):
            logger.error(
                "a Django task signal receiver %r failed: %r",
                receiver,
                response,
                exc_info=response,
                extra={"node_id": str(node_id)},
            )


def _node_started(sender: Any, node: Any, **kwargs: Any) -> None:
    if node.task_name.startswith(PREFIX):
        _send(task_started, node.pk)


def _node_finished(sender: Any, node: Any, state: str, **kwargs: Any) -> None:
    if state in (State.SUCCESS, State.FAILURE) and node.task_name.startswith(PREFIX):
        _send(task_finished, node.pk)


signals.node_started.connect(_node_started, dispatch_uid="django_cloudtasks.backends.started")
signals.node_finished.connect(_node_finished, dispatch_uid="django_cloudtasks.backends.finished")
