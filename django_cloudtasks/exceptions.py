"""Exceptions of the Django side of the library."""

from __future__ import annotations

import builtins
from typing import Any


class CloudTasksError(Exception):
    """Base class of this package's errors."""


class ConfigurationError(CloudTasksError):
    """Settings are missing or inconsistent."""


class NotRegistered(CloudTasksError, KeyError):
    """A task name that no ``@task`` registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class AlreadyRegistered(CloudTasksError, ValueError):
    """A second, different function registered under a taken task name."""


class EnqueueError(CloudTasksError):
    """Sending nodes to the transport failed; the nodes are kept for the sweeper."""


class TimeoutError(CloudTasksError, builtins.TimeoutError):
    """``get()`` waited longer than its ``timeout``."""


class NodeNotFound(CloudTasksError, LookupError):
    """No node has that id."""


class WorkflowNotFound(NodeNotFound):
    """No workflow has that id (a lookup like :class:`NodeNotFound`, which it extends)."""


class BadRequest(CloudTasksError):
    """A request body that cannot be used; the endpoints answer 400 (or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class WrongTask(CloudTasksError, ValueError):
    """A delivery names a task that is not the node's task."""


class Retry(CloudTasksError):
    """Raised by ``self.retry()`` inside a bound task to ask for another attempt.

    ``max_retries``, when set, overrides the task's limit for this retry.
    """

    def __init__(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(f"retry in {countdown}s" if countdown is not None else "retry")
        self.countdown = countdown
        self.exc = exc
        self.max_retries = max_retries


class TaskRevoked(CloudTasksError):
    """Raised by ``get()`` when the node was revoked."""


class RemoteTaskError(CloudTasksError):
    """A task failed with an exception that is not a Python builtin.

    Its class is created with the original exception's name (and module in
    ``original_module``), so ``type(exc).__name__`` reads as the original; nothing is
    imported or unpickled to build it.
    """

    original_module: str = ""


_remote_classes: dict[tuple[str, str], type[RemoteTaskError]] = {}


def rebuild_exception(exc_type: str, message: str, module: str = "") -> BaseException:
    """Return an exception standing for a recorded failure.

    Builtin exception types (``ValueError``...) are rebuilt as themselves; any other
    type becomes a :class:`RemoteTaskError` subclass of the same name.
    """
    builtin: Any = getattr(builtins, exc_type, None)
    if (
        module in ("", "builtins")
        and isinstance(builtin, type)
        and issubclass(builtin, Exception)
        and builtin.__module__ == "builtins"
    ):
        try:
            return builtin(message)  # type: ignore[no-any-return]
        except Exception:  # a builtin with a different constructor
            pass
    key = (module, exc_type)
    cls = _remote_classes.get(key)
    if cls is None:
        safe = exc_type if exc_type.isidentifier() else "RemoteTaskError"
        cls = type(safe, (RemoteTaskError,), {"original_module": module})
        _remote_classes[key] = cls
    return cls(message)
