"""Exceptions of the Django side of the library."""

from __future__ import annotations

import builtins
import json
import sys
import traceback
from collections.abc import Sequence
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
    """Sending nodes to the transport failed; the nodes are kept for the sweeper.

    When ``apply_async()`` raises it, the workflow was saved all the same: ``result``
    is its result handle (as ``apply_async()`` would have returned it), so the caller
    can keep its id, wait on it or revoke it, and ``workflow_id`` is its id. Elsewhere
    (a send at the commit of an outer transaction, a sweep) both are None.
    ``node_ids`` are the nodes that were not sent, when the transport knows which
    (the others of the same send were); None means all of them.
    """

    #: The saved workflow's id, when persisting it raised this error.
    workflow_id: str | None = None
    #: The saved workflow's output node (a ``Node``), when persisting it raised this error.
    output: Any = None
    #: The saved workflow's result handle, when ``apply_async()`` raised this error.
    result: Any = None

    def __init__(self, message: str, node_ids: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.node_ids = None if node_ids is None else tuple(node_ids)


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

    ``max_retries``, when set, overrides the task's limit for this retry; ``args``,
    ``kwargs`` and ``queue``, when set, replace the node's for the next attempts.
    """

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        *,
        countdown: float | None = None,
        max_retries: int | None = None,
        args: Any = None,
        kwargs: Any = None,
        queue: str | None = None,
    ) -> None:
        if message is None:
            message = f"Retry in {countdown:g}s" if countdown is not None else "Retry"
            if exc is not None:
                message += f": {exc!r}"
        super().__init__(message)
        self.countdown = countdown
        self.exc = exc
        self.max_retries = max_retries
        self.call_args = args
        self.call_kwargs = kwargs
        self.queue = queue


class MaxRetriesExceededError(CloudTasksError):
    """A task asked for a retry (``self.retry()`` without ``exc``) after its last one."""


class TaskRevokedError(CloudTasksError):
    """The node was revoked: raised by ``get()``, and the ``result`` of a revoked node."""


TaskRevoked = TaskRevokedError  # the former name


class ChordError(CloudTasksError):
    """A node failed because a node upstream of it (a chord member...) failed."""


class Reject(CloudTasksError):
    """Raised in a task: it fails for good, without a retry."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue


class Ignore(CloudTasksError):
    """Raised in a task: it ends with no result and nothing downstream of it runs."""


class Replace(CloudTasksError):
    """Raised by ``self.replace(expression)``: the node is replaced by ``expression``.

    The runner catches it, stores ``expression`` in the node's workflow and makes its
    result the node's result (Celery's ``Task.replace``).
    """

    def __init__(self, expression: Any) -> None:
        super().__init__(f"Replaced by {expression!r}")
        self.expression = expression


class SoftTimeLimitExceeded(CloudTasksError):
    """Raised inside a task whose ``soft_time_limit`` has passed."""


class RemoteTaskError(CloudTasksError):
    """A task failed with an exception whose class cannot be found in this process.

    Its class is created with the original exception's name (and module in
    ``original_module``), so ``type(exc).__name__`` reads as the original; nothing is
    imported or unpickled to build it.
    """

    original_module: str = ""


_remote_classes: dict[tuple[str, str], type[RemoteTaskError]] = {}


def exception_class(exc_type: str, module: str = "") -> type[BaseException] | None:
    """The exception class named by ``module`` and ``exc_type``, if this process has it.

    Only modules that are already imported are looked in: stored data never makes
    this process import anything.
    """
    if module in ("", "builtins"):
        found: Any = getattr(builtins, exc_type, None)
    else:
        found = sys.modules.get(module)
        for part in exc_type.split("."):
            found = getattr(found, part, None) if part.isidentifier() else None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def rebuild_exception(
    exc_type: str, message: str, module: str = "", args: Sequence[Any] | None = None
) -> BaseException:
    """Return an exception standing for a recorded failure.

    A class this process has (a builtin, or a class of an imported module) is rebuilt
    as itself with the original ``args``; any other becomes a :class:`RemoteTaskError`
    subclass of the same name.
    """
    call_args = tuple(args) if args is not None else (message,)
    cls = exception_class(exc_type, module)
    if cls is not None:
        try:
            return cls(*call_args)
        except Exception:  # a constructor that wants other arguments
            try:
                # Built without its __init__ (json.JSONDecodeError wants the document):
                # its class and args are the original's, other attributes are not set.
                rebuilt = cls.__new__(cls, *call_args)
                rebuilt.args = call_args
                return rebuilt
            except Exception:
                pass
    key = (module, exc_type)
    remote = _remote_classes.get(key)
    if remote is None:
        name = exc_type.rpartition(".")[2]
        safe = name if name.isidentifier() else "RemoteTaskError"
        remote = type(safe, (RemoteTaskError,), {"original_module": module})
        _remote_classes[key] = remote
    return remote(*call_args)


def error_record(
    exc: BaseException, with_traceback: bool = True, expected: bool = False
) -> dict[str, Any]:
    """``exc`` as the error a node records: type, module, message, traceback, JSON args.

    An ``expected`` one (``@task(throws=...)``) keeps no traceback.
    """
    with_traceback = with_traceback and not expected
    cls = type(exc)
    return {
        "type": cls.__qualname__,
        "module": "" if cls.__module__ == "builtins" else cls.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)) if with_traceback else "",
        "args": json_args(exc),
    }


def json_args(exc: BaseException) -> list[Any] | None:
    """``exc.args`` when they are JSON data (so ``get()`` can rebuild the exception)."""
    try:
        return json.loads(json.dumps(list(exc.args), allow_nan=False))  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return None
