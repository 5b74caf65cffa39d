"""What a bound task (``@task(bind=True)``) receives as ``self``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from django_cloudtasks.exceptions import Retry
from django_cloudtasks.policy import TaskPolicy

#: Request headers that carry credentials by name, never handed to task code.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-serverless-authorization",
        "x-goog-iap-jwt-assertion",
        "x-api-key",
        "cookie",
    }
)

#: Any other header named like a credential (a token, key, cookie, session, secret,
#: password, authorization, JWT or assertion) is withheld too.
_CREDENTIAL_WORDS = re.compile(
    r"token|key|cookie|authorization|secret|passw|credential|jwt|assertion|session"
)


def is_credential_header(name: str) -> bool:
    """True when the header ``name`` may carry credentials (case-insensitive)."""
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or _CREDENTIAL_WORDS.search(lowered) is not None


def task_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without those that may carry credentials: what ``self.request`` gets."""
    return {name: value for name, value in headers.items() if not is_credential_header(name)}


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
