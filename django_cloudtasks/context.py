"""What a bound task (``@task(bind=True)``) receives as ``self``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from django_cloudtasks.exceptions import Retry
from django_cloudtasks.policy import TaskPolicy


class TaskLike(Protocol):
    """What a context knows of its task (a :class:`~django_cloudtasks.registry.Task`)."""

    @property
    def name(self) -> str:
        """The registered task name."""

    @property
    def policy(self) -> TaskPolicy:
        """The task's run and retry policy."""


@dataclass(frozen=True)
class Request:
    """The current delivery: ids, attempt counters and Cloud Tasks' headers."""

    id: str | None = None
    workflow_id: str | None = None
    task_name: str = ""
    retries: int = 0
    attempt: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    called_directly: bool = False

    @property
    def cloud_tasks_retry_count(self) -> int:
        """``X-CloudTasks-TaskRetryCount``: earlier deliveries of this Cloud Task."""
        return int(self.headers.get("X-Cloudtasks-Taskretrycount", 0) or 0)

    @property
    def cloud_tasks_execution_count(self) -> int:
        """``X-CloudTasks-TaskExecutionCount``: earlier deliveries that got a response."""
        return int(self.headers.get("X-Cloudtasks-Taskexecutioncount", 0) or 0)


class TaskContext:
    """``self`` of a bound task: ``self.request``, ``self.retry()``, ``self.is_revoked()``."""

    def __init__(self, task: TaskLike, request: Request) -> None:
        self.task = task
        self.request = request

    @classmethod
    def direct(cls, task: TaskLike) -> TaskContext:
        """The context of a plain in-process call (no node behind it)."""
        return cls(task, Request(task_name=task.name, called_directly=True))

    @property
    def name(self) -> str:
        """The task's registered name."""
        return self.task.name

    def retry(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Ask for another attempt in ``countdown`` seconds (default: the task's backoff).

        Raises:
            Retry: always; the runner catches it. When retries are exhausted the node
                fails with ``exc`` (or the ``Retry`` itself).
        """
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries)

    def is_revoked(self) -> bool:
        """True once this node has been revoked (check it in long-running tasks)."""
        if self.request.id is None:
            return False
        # Imported here, not above: @task (which imports this module) is used in
        # modules loaded before Django's app registry is ready to import models.
        from django_cloudtasks.models import Node

        return Node.objects.is_revoked(self.request.id)

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} id={self.request.id}>"
