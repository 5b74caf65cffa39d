"""``@task``: register functions as tasks that canvas expressions can name."""

from __future__ import annotations

import inspect
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import wrapt

from canvas import Signature, signature, xmap, xstarmap
from canvas import chunks as chunks_of
from canvas.expression import normalize_options
from canvas.mapping import MAP_TASK, STARMAP_TASK
from django_cloudtasks.context import Request, TaskContext, call_function
from django_cloudtasks.eager_result import EagerResult
from django_cloudtasks.exceptions import AlreadyRegistered, NotRegistered
from django_cloudtasks.policy import TaskPolicy, errback_arguments

__all__ = [
    "EagerResult",
    "Registry",
    "Task",
    "TaskPolicy",
    "get_task",
    "policy_options",
    "registry",
    "task",
    "task_queue",
]


class Task(wrapt.FunctionWrapper):  # type: ignore[misc]
    """A registered task. Calling it runs the function in-process, as before.

    ``.s()``/``.si()`` build signatures; ``.delay()``/``.apply_async()`` run one call
    through the engine. Introspection (``__name__``, ``__doc__``, ``inspect.signature``)
    sees the original function.
    """

    def __init__(self, wrapped: Callable[..., Any], name: str, policy: TaskPolicy) -> None:
        super().__init__(wrapped, _call_directly)
        self._self_name = name
        self._self_policy = policy
        self._self_call_signature: inspect.Signature | None = None

    @property
    def name(self) -> str:
        """The registered task name."""
        return str(self._self_name)

    @property
    def policy(self) -> TaskPolicy:
        """The task's run and retry policy."""
        policy: TaskPolicy = self._self_policy
        return policy

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature that receives its parent's result as first argument."""
        return Signature(self.name, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it ignores its parent's result."""
        return Signature(self.name, args, kwargs, immutable=True)

    def signature(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """Celery's ``task.signature(args, kwargs, **options)``."""
        return Signature(self.name, args, kwargs, options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``task(*args, **kwargs)`` asynchronously; returns an ``AsyncResult``."""
        return self.s(*args, **kwargs).apply_async()

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Run one call asynchronously with run options (``countdown``, ``eta``...)."""
        return Signature(self.name, args or (), kwargs).apply_async(**options)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`delay` for async code: the workflow is saved in a thread."""
        return await self.s(*args, **kwargs).aapply_async()

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """:meth:`apply_async` for async code: the workflow is saved in a thread."""
        return await Signature(self.name, args or (), kwargs).aapply_async(**options)

    def map(self, it: Iterable[Any]) -> Signature:
        """Celery's ``task.map(it)``: one task returning ``[task(item) for item in it]``."""
        return xmap(self.s(), it)

    def starmap(self, it: Iterable[Any]) -> Signature:
        """Celery's ``task.starmap(it)``: one task returning ``[task(*item) for item in it]``."""
        return xstarmap(self.s(), it)

    def chunks(self, it: Iterable[Any], n: int) -> chunks_of:
        """Celery's ``task.chunks(it, n)``: parts of ``n`` argument tuples run as a group."""
        return chunks_of(self.s(), it, n)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        link_error: Any = None,
        throw: bool = False,
        **options: Any,
    ) -> EagerResult:
        """Run the function now, in this process, as Celery's ``task.apply()`` does.

        Nothing is stored or sent. A bound task's ``self.request.is_eager`` is true.
        An ``async def`` task is awaited in an event loop of its own (call it outside
        one). Returns an :class:`EagerResult`; an exception is kept in it, not raised
        (``throw=True`` raises it). When the function raises, each error callback in
        ``link_error`` (a signature or a list of them) is applied the same way, in the
        form its function takes (``(request, exc, traceback)``, ``(task_id)`` or this
        package's keywords). Other run options (``countdown``, ``queue``...) are
        checked and have nothing to act on.

        Raises:
            TypeError: for an option Celery's ``apply_async`` would not take here.
        """
        normalize_options(options, f"apply of task {self.name!r}")
        errbacks = normalize_options({"link_error": link_error}, f"apply of task {self.name!r}")
        call_args, call_kwargs = tuple(args or ()), dict(kwargs or {})
        task_id = str(uuid.uuid4())
        request = Request(
            id=task_id, task_name=self.name, args=call_args, kwargs=call_kwargs, is_eager=True
        )
        if self.policy.bind:
            call_args = (TaskContext(self, request), *call_args)
        try:
            value = call_function(self.__wrapped__, request, call_args, call_kwargs)
        except Exception as exc:
            if throw:
                raise
            trace = "".join(traceback.format_exception(exc))
            for data in errbacks.get("link_error") or ():
                _apply_errback(Signature.from_dict(data), request, exc, trace)
            return EagerResult(task_id, "FAILURE", exc, trace)
        return EagerResult(task_id, "SUCCESS", value)

    def AsyncResult(self, task_id: Any) -> Any:
        """The result handle of node ``task_id`` (Celery's ``task.AsyncResult(id)``)."""
        if result_type is None:
            raise RuntimeError("django_cloudtasks is not ready: add it to INSTALLED_APPS")
        return result_type(task_id)

    def call_signature(self) -> inspect.Signature:
        """The parameters a node's arguments must bind to (without ``self`` if bound)."""
        sig = self._self_call_signature
        if sig is None:
            sig = inspect.signature(self.__wrapped__)
            if self.policy.bind:
                params = list(sig.parameters.values())[1:]
                sig = sig.replace(parameters=params)
            self._self_call_signature = sig
        return sig

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (get_task, (self.name,))


#: The result handle class ``Task.AsyncResult`` builds; the app installs it when ready
#: (``django_cloudtasks.results.AsyncResult``, which sits above this module).
result_type: Callable[[Any], Any] | None = None


def _apply_errback(errback: Any, request: Request, exc: Exception, trace: str) -> None:
    """Apply one error callback of :meth:`Task.apply`'s failed call in this process."""
    if not isinstance(errback, Signature):
        raise TypeError(f"an error callback must be a task signature, got {errback!r}")
    callback = registry.get(errback.task_name)
    args, kwargs = list(errback.args), dict(errback.kwargs)
    if not errback.immutable:
        info = {
            "original_task_id": request.id,
            "original_task_name": request.task_name,
            "error": f"{type(exc).__name__}: {exc}",
            "payload": {"args": list(request.args), "kwargs": dict(request.kwargs)},
        }
        args, kwargs = errback_arguments(
            callback.call_signature(), args, kwargs, info, (request, exc, trace)
        )
    callback.apply(args, kwargs)


def _policy_attribute(name: str) -> property:
    def read(self: Task) -> Any:
        return getattr(self.policy, name)

    return property(read, doc=f"The task's ``{name}`` (from its policy).")


for _name in (
    "max_retries",
    "default_retry_delay",
    "autoretry_for",
    "dont_autoretry_for",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_kwargs",
    "queue",
    "expires",
    "dispatch_deadline",
    "ignore_result",
    "soft_time_limit",
    "throws",
    "typing",
    "rate_limit",
    "max_concurrency",
    "concurrency_key",
    "unique_key",
    "unique_for",
):
    setattr(Task, _name, _policy_attribute(_name))
Task.time_limit = _policy_attribute("dispatch_deadline")  # type: ignore[attr-defined]


def _call_directly(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    task = registry.get_by_function(wrapped)
    if task is not None and task.policy.bind:
        return wrapped(TaskContext.direct(task), *args, **kwargs)
    return wrapped(*args, **kwargs)


class Registry:
    """Task names to tasks. One per process: :data:`registry`."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._by_function: dict[int, Task] = {}
        self._lock = threading.Lock()
        self._at_startup: frozenset[str] | None = None

    def register(self, func: Callable[..., Any], name: str, policy: TaskPolicy) -> Task:
        """Register ``func`` as ``name``.

        Raises:
            AlreadyRegistered: when another function already has that name.
        """
        with self._lock:
            existing = self._tasks.get(name)
            if existing is not None:
                if _qualified(existing.__wrapped__) != _qualified(func):
                    raise AlreadyRegistered(
                        f"task name {name!r} is taken by {_qualified(existing.__wrapped__)}; "
                        f"cannot register {_qualified(func)} under it (pass name=...)"
                    )
                self._by_function.pop(id(existing.__wrapped__), None)
            task = Task(func, name, policy)
            self._tasks[name] = task
            self._by_function[id(func)] = task
            return task

    def unregister(self, name: str) -> None:
        """Forget ``name`` (for tests)."""
        with self._lock:
            task = self._tasks.pop(name, None)
            if task is not None:
                self._by_function.pop(id(task.__wrapped__), None)

    def get(self, name: str) -> Task:
        """The task registered as ``name``.

        Raises:
            NotRegistered: when no task has that name.
        """
        try:
            return self._tasks[name]
        except KeyError:
            raise NotRegistered(f"no task is registered as {name!r}") from None

    def get_by_function(self, func: Callable[..., Any]) -> Task | None:
        """The task wrapping ``func``, if any."""
        return self._by_function.get(id(func))

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._tasks)

    def tasks(self) -> list[Task]:
        """All registered tasks, by name."""
        return [self._tasks[name] for name in sorted(self._tasks)]

    def mark_startup(self) -> None:
        """Remember the tasks registered so far: those every process registers at startup
        (the app calls it once it has imported every installed app's ``tasks`` module)."""
        self._at_startup = frozenset(self._tasks)

    def known_at_startup(self, name: str) -> bool:
        """False for a task registered after startup: a module imported later registered
        it, so a server process that has not imported that module does not know it."""
        return self._at_startup is None or name in self._at_startup


registry = Registry()


def _qualified(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)!s}"


def task(
    func: Callable[..., Any] | None = None, /, *, name: str | None = None, **policy: Any
) -> Any:
    """Register a function as a task: ``@task`` or ``@task(name=..., max_retries=...)``.

    Keyword arguments: ``name`` (default: the function's name), ``queue``,
    ``max_retries``, ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``,
    ``autoretry_for``, ``default_retry_delay``, ``expires``, ``dispatch_deadline``,
    ``bind`` (pass a :class:`~django_cloudtasks.context.TaskContext` as ``self``), and
    Celery's ``time_limit`` (as ``dispatch_deadline``), ``soft_time_limit``,
    ``retry_kwargs``, ``dont_autoretry_for``, ``ignore_result``, ``throws``, ``typing``.

    Flow control (see the flow-control page): ``concurrency_key`` (a template string
    over the arguments, ``"acct:{account_id}"``, or a function of them) with
    ``max_concurrency``, ``rate_limit`` (Celery's ``"10/m"``), and ``unique_key`` with
    ``unique_for``.

    Raises:
        AlreadyRegistered: when another function already has the name.
        TypeError: for an unknown keyword argument, a key that is neither a string nor
            a callable, or a ``concurrency_key`` without ``max_concurrency``.
        ValueError: for a ``max_concurrency`` below 1 or a ``rate_limit`` that does not
            parse.
    """
    for option, rewrite in _UNSUPPORTED.items():
        if option in policy:
            raise TypeError(f"@task does not support {option}=: {rewrite}")
    if "time_limit" in policy:
        if policy.get("dispatch_deadline") is not None:
            raise TypeError("@task got both time_limit and dispatch_deadline; pass one")
        policy["dispatch_deadline"] = policy.pop("time_limit")
    unknown = set(policy) - set(TaskPolicy.__dataclass_fields__)
    if unknown:
        raise TypeError(f"@task got unknown arguments: {', '.join(sorted(unknown))}")
    for option in ("autoretry_for", "dont_autoretry_for", "throws"):
        if option in policy:
            policy[option] = tuple(policy[option])
    retry_kwargs = dict(policy.get("retry_kwargs") or {})
    if set(retry_kwargs) - {"max_retries", "countdown"}:
        raise TypeError(f"retry_kwargs takes max_retries and countdown, got {retry_kwargs!r}")
    if "max_retries" in retry_kwargs:
        policy["max_retries"] = retry_kwargs["max_retries"]

    declared = TaskPolicy(**policy)

    def decorate(function: Callable[..., Any]) -> Task:
        if not callable(function):
            raise TypeError(f"@task decorates functions, got {function!r}")
        return registry.register(function, name or function.__name__, declared)

    return decorate(func) if func is not None else decorate


#: Celery's @task arguments that have no counterpart here, with the rewrite.
_UNSUPPORTED = {
    "priority": "Cloud Tasks queues have no priorities; send urgent work to its own queue "
    "(queue=...)",
    "routing_key": "name the Cloud Tasks queue with queue=...",
    "link": "compose with |: (task.s() | callback.s())",
    "exchange": "name the Cloud Tasks queue with queue=...",
    "acks_late": "deliveries are always acknowledged late (a delivery that does not "
    "answer 2xx is redelivered); remove the argument",
    "serializer": "arguments and results are always JSON; remove the argument",
    "track_started": "a delivered task is always STARTED; remove the argument",
    "base": "class-based tasks are not supported; decorate a function, with bind=True for self",
}


def get_task(name: str) -> Task:
    """The task registered as ``name`` (see :meth:`Registry.get`)."""
    return registry.get(name)


def policy_options(task_name: str) -> dict[str, Any]:
    """Options the ``@task(...)`` of ``task_name`` sets for every node that runs it."""
    if not task_name or task_name not in registry:
        return {}
    return registry.get(task_name).policy.node_options()


def task_queue(task_name: str) -> str:
    """The queue ``@task(queue=...)`` of ``task_name`` names, or ``""``."""
    if not task_name or task_name not in registry:
        return ""
    return registry.get(task_name).policy.queue or ""


def call(sig: Signature) -> Any:
    """Call ``sig``'s registered function in this process, as Celery's ``sig()`` does.

    A bound task gets a context whose ``request.called_directly`` is true.

    Raises:
        NotRegistered: when no task has the signature's name.
    """
    return registry.get(sig.task_name)(*sig.args, **sig.kwargs)


def _run_map(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
    sig = signature(dict(task))
    if not isinstance(sig, Signature):
        raise TypeError(f"{MAP_TASK} runs one task signature, got {sig!r}")
    return [call(sig.clone((item,))) for item in it]


def _run_starmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
    sig = signature(dict(task))
    if not isinstance(sig, Signature):
        raise TypeError(f"{STARMAP_TASK} runs one task signature, got {sig!r}")
    return [call(sig.clone(tuple(item))) for item in it]


# Celery's built-in map tasks, which canvas.xmap, xstarmap and chunks name.
registry.register(_run_map, MAP_TASK, TaskPolicy())
registry.register(_run_starmap, STARMAP_TASK, TaskPolicy())
