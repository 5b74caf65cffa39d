"""What a bound task (``@task(bind=True)``) receives as ``self``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from django_cloudtasks.exceptions import Retry

if TYPE_CHECKING:
    from django_cloudtasks.registry import Task


@dataclass(frozen=True)
class Request:
    """The current delivery: ids, attempt counters and Cloud Tasks' headers."""

    id: str | None = None
    workflow_id: str | None = None
    task_name: str = ""
    retries: int = 0
    attempt: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)

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

    def __init__(self, task: Task, request: Request) -> None:
        self.task = task
        self.request = request

    @classmethod
    def direct(cls, task: Task) -> TaskContext:
        """The context of a plain in-process call (no node behind it)."""
        return cls(task, Request(task_name=task.name))

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
        retry = Retry(countdown=countdown, exc=exc)
        retry.max_retries = max_retries  # type: ignore[attr-defined]
        raise retry

    def is_revoked(self) -> bool:
        """True once this node has been revoked (check it in long-running tasks)."""
        if self.request.id is None:
            return False
        from django_cloudtasks.engine import is_revoked

        return is_revoked(self.request.id)

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} id={self.request.id}>"


def bound_context(task: Task, **request: Any) -> TaskContext:
    """Build the context for a delivery."""
    return TaskContext(task, Request(**request))
