"""What a bound task (``@task(bind=True)``) receives as ``self``, and the running task."""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import ctypes
import inspect
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from asgiref.sync import async_to_sync, sync_to_async
from django.utils import timezone

from canvas import Expression
from django_cloudtasks.constants import LINEAGE
from django_cloudtasks.exceptions import Replace, Retry, SoftTimeLimitExceeded, rebuild_exception
from django_cloudtasks.models import Node
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
    """The current delivery, with Celery's ``self.request`` names where they apply.

    ``id`` is the node id; ``root_id`` the id of the workflow's first node is not
    kept, so ``root_id`` is the workflow id; ``parent_id`` the task whose result this
    one receives (after a group, the group's last member); ``group`` is the id of the
    group join a member feeds (its ``GroupResult`` id), ``group_index`` its position;
    ``chord`` the id of the body that join feeds.
    """

    id: str | None = None
    workflow_id: str | None = None
    task_name: str = ""
    retries: int = 0
    attempt: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    called_directly: bool = False
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: str | None = None
    eta: str | None = None
    expires: str | None = None
    is_eager: bool = False
    hostname: str = ""
    delivery_info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_node(
        cls,
        node: Node,
        attempt: int,
        args: list[Any],
        kwargs: dict[str, Any],
        headers: Mapping[str, str],
        is_eager: bool,
    ) -> Request:
        """The request a task sees as ``self.request``, from the claimed row alone."""
        options = node.options
        lineage = options.get(LINEAGE) or {}
        return cls(
            id=str(node.pk),
            workflow_id=str(node.workflow_id),
            task_name=node.task_name,
            retries=node.retries,
            attempt=attempt,
            headers=dict(headers),
            args=tuple(args),
            kwargs=kwargs,
            eta=node.eta.isoformat() if node.eta else None,
            expires=str(options["expires"]) if options.get("expires") is not None else None,
            is_eager=is_eager,
            delivery_info={"queue": node.queue},
            parent_id=lineage.get("parent_id"),
            group=lineage.get("group"),
            group_index=lineage.get("group_index"),
            chord=lineage.get("chord"),
        )

    @property
    def task(self) -> str:
        """Celery's name for :attr:`task_name`."""
        return self.task_name

    @property
    def root_id(self) -> str | None:
        """The workflow this delivery belongs to (Celery's ``root_id``)."""
        return self.workflow_id

    @property
    def cloud_tasks_retry_count(self) -> int:
        """``X-CloudTasks-TaskRetryCount``: earlier deliveries of this Cloud Task (0 when
        the header is missing or not a count)."""
        return _count(self.headers.get("X-Cloudtasks-Taskretrycount"))

    @property
    def cloud_tasks_execution_count(self) -> int:
        """``X-CloudTasks-TaskExecutionCount``: earlier deliveries that got a response (0
        when the header is missing or not a count)."""
        return _count(self.headers.get("X-Cloudtasks-Taskexecutioncount"))


def _count(header: str | None) -> int:
    text = (header or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0


#: The requests of the task functions running in this context, innermost last. A
#: context variable, not a thread-local: async tasks share their event loop's thread.
_running: contextvars.ContextVar[tuple[Request, ...]] = contextvars.ContextVar(
    "cloudtasks_running", default=()
)


@contextmanager
def running(request: Request) -> Iterator[None]:
    """Mark ``request``'s task function as running in this context while in the block.

    The context is the thread's for a function, the asyncio task's for a coroutine.
    """
    token = _running.set((*_running.get(), request))
    try:
        yield
    finally:
        _running.reset(token)


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`SoftTimeLimitExceeded` in this thread after ``seconds``.

    A timer thread sets the exception asynchronously (CPython's
    ``PyThreadState_SetAsyncExc``): it is raised at the task's next Python bytecode,
    so a task blocked in a C call (a socket read...) sees it only when that returns.
    """
    if not seconds:
        yield
        return
    target = threading.get_ident()
    lock = threading.Lock()
    done = False

    def expire() -> None:
        with lock:
            if not done:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(SoftTimeLimitExceeded)
                )

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        # After this, the timer sets nothing. One that fired just before is raised
        # here, at the latest, so it fails this task and nothing else. (It is not
        # cleared: clearing with PyThreadState_SetAsyncExc(id, NULL) leaves the
        # interpreter checking for it on every instruction.)
        with lock:
            done = True
        timer.cancel()


def is_async(func: Callable[..., Any]) -> bool:
    """True when ``func`` is an ``async def`` function: calling it returns a coroutine."""
    return inspect.iscoroutinefunction(func)


def call_function(
    func: Callable[..., Any],
    request: Request,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    soft_limit: float | None = None,
) -> Any:
    """Call a task's function for ``request`` and return what it returned.

    A coroutine function is awaited through ``asgiref``'s ``async_to_sync``: on the
    server's event loop when this runs in a thread an ASGI server started, in an event
    loop of its own under WSGI or in a test. ``soft_limit`` is the task's
    ``soft_time_limit``.

    Raises:
        Whatever the function raises; :class:`SoftTimeLimitExceeded` after ``soft_limit``.
    """
    if is_async(func):
        return async_to_sync(acall_function)(func, request, args, kwargs, soft_limit)
    with running(request), soft_time_limit(soft_limit):
        return func(*args, **kwargs)


async def acall_function(
    func: Callable[..., Any],
    request: Request,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    soft_limit: float | None = None,
) -> Any:
    """Await a coroutine function's call for ``request`` in this event loop.

    After ``soft_limit`` seconds the coroutine is cancelled (it sees
    ``asyncio.CancelledError`` at the ``await`` it waits on, so ``finally`` blocks run)
    and :class:`SoftTimeLimitExceeded` is raised.

    Raises:
        Whatever the coroutine raises; :class:`SoftTimeLimitExceeded` after ``soft_limit``.
    """
    with running(request):
        if not soft_limit:
            return await func(*args, **kwargs)
        limit = asyncio.timeout(soft_limit)
        try:
            async with limit:
                return await func(*args, **kwargs)
        except builtins.TimeoutError:
            if limit.expired():  # the limit's, not a timeout of the task's own
                raise SoftTimeLimitExceeded(f"soft time limit ({soft_limit:g}s) exceeded") from None
            raise


def running_depth() -> int:
    """How many task functions are running in this context (nested eager runs)."""
    return len(_running.get())


def current_request() -> Request | None:
    """The request of the task function running in this context, if any."""
    stack = _running.get()
    return stack[-1] if stack else None


class TaskContext:
    """``self`` of a bound task: ``self.request``, ``self.retry()``, ``self.replace()``,
    ``self.update_state()``, ``self.is_revoked()``."""

    def __init__(
        self,
        task: TaskLike,
        request: Request,
        record_progress: Callable[[str, str, Any], None] | None = None,
    ) -> None:
        self.task = task
        self.request = request
        self.pending_retry: Retry | None = None  # self.retry(throw=False)
        # The runner hands the engine's writer in: this layer sits below the engine.
        self._record_progress = record_progress

    @classmethod
    def direct(cls, task: TaskLike) -> TaskContext:
        """The context of a plain in-process call (no node behind it)."""
        return cls(task, Request(task_name=task.name, called_directly=True))

    @property
    def name(self) -> str:
        """The task's registered name."""
        return self.task.name

    @property
    def max_retries(self) -> int | None:
        """The task's retry limit."""
        return self.task.policy.max_retries

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        queue: str | None = None,
    ) -> Retry:
        """Ask for another attempt in ``countdown`` seconds or at ``eta`` (default: backoff).

        ``args``/``kwargs`` replace the call's arguments for the next attempts and
        ``queue`` its queue. Called directly (not in a delivery), it raises ``exc``,
        as Celery does. With ``throw=False`` the retry is recorded and the function
        goes on; its return value is ignored.

        Raises:
            Retry: the runner catches it. When retries are exhausted the node fails
                with ``exc``, or ``MaxRetriesExceededError`` without one.
        """
        if self.request.called_directly:
            raise exc if exc is not None else Retry("Task can be retried")
        if eta is not None and countdown is None:
            countdown = max(0.0, (eta - timezone.now()) / timedelta(seconds=1))
        retry = Retry(
            exc=exc,
            countdown=countdown,
            max_retries=max_retries,
            args=args,
            kwargs=kwargs,
            queue=queue,
        )
        if not throw:
            self.pending_retry = retry
            return retry
        raise retry

    def replace(self, sig: Expression) -> Replace:
        """Replace this task by ``sig``, whose result becomes this task's (Celery's
        ``Task.replace``): ``return self.replace(sig)`` or ``raise self.replace(sig)``.

        ``sig`` (a signature or any canvas) is stored in this task's workflow and runs
        where the task stood: what followed the task receives ``sig``'s result, and a
        failure inside ``sig`` fails the task (its error callbacks run with a
        ``ChordError``). Called directly or through ``task.apply()``, there is no
        workflow to graft onto, so ``sig`` is called in process instead
        (``sig()``) and its outcome returned.

        Raises:
            Replace: always in a delivery; the runner catches it, and the function
                stops there.
            TypeError: when ``sig`` is not a canvas expression.
        """
        if not isinstance(sig, Expression):
            raise TypeError(f"replace() takes a signature or canvas, got {sig!r}")
        if self.request.workflow_id is None:
            return sig()  # type: ignore[operator,no-any-return]
        raise Replace(sig)

    def update_state(self, state: str = "PROGRESS", meta: Any = None) -> None:
        """Record a custom state and ``meta`` (JSON data) for ``.state``/``.info`` to show
        while the task runs (one UPDATE; nothing when called directly)."""
        if self.request.id is not None and self._record_progress is not None:
            self._record_progress(self.request.id, str(state), meta)

    def is_revoked(self) -> bool:
        """True once this node has been revoked (check it in long-running tasks)."""
        if self.request.id is None:
            return False
        # Imported here, not above: @task (which imports this module) is used in
        # modules loaded before Django's app registry is ready to import models.
        from django_cloudtasks.models import Node

        return Node.objects.is_revoked(self.request.id)

    async def aupdate_state(self, state: str = "PROGRESS", meta: Any = None) -> None:
        """:meth:`update_state` for an ``async def`` task (the write runs in a thread)."""
        await sync_to_async(self.update_state)(state, meta)

    async def ais_revoked(self) -> bool:
        """:meth:`is_revoked` for an ``async def`` task."""
        return await sync_to_async(self.is_revoked)()

    def __repr__(self) -> str:
        return f"<TaskContext {self.name} id={self.request.id}>"


def celery_errback_arguments(info: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """Celery's ``(request, exc, traceback)`` for the failure ``info`` reports."""
    request = dict(info.get("request") or {})
    exc = dict(info.get("exc") or {})
    rebuilt = rebuild_exception(
        str(exc.get("type") or "Exception"),
        str(exc.get("message") or ""),
        str(exc.get("module") or ""),
        exc.get("args") if isinstance(exc.get("args"), list) else None,
    )
    return (
        Request(
            id=request.get("id"),
            workflow_id=request.get("workflow_id"),
            task_name=str(request.get("task_name") or ""),
            retries=int(request.get("retries") or 0),
            args=tuple(request.get("args") or ()),
            kwargs=dict(request.get("kwargs") or {}),
        ),
        rebuilt,
        str(info.get("traceback") or ""),
    )
