"""How a task may be run: its policy, the checks on its arguments, delays and retries.

:class:`TaskPolicy` is what ``@task(...)`` sets. The functions here turn it, with a
node's options, into the numbers the engine and the runner act on: the options every
node of a task gets, when a node is due, whether it expired, how long a delivery's
lease lasts and how long to wait before a retry.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from canvas import InputRule
from canvas.options import rate_per_second
from canvas.values import check_json
from django_cloudtasks.conf import conf


@dataclass(frozen=True)
class TaskPolicy:
    """How a task runs and retries; set by ``@task(...)`` keyword arguments."""

    queue: str | None = None
    max_retries: int = 3
    retry_backoff: float | bool = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    autoretry_for: tuple[type[BaseException], ...] = ()
    default_retry_delay: float = 180
    expires: float | None = None
    dispatch_deadline: float | None = None
    bind: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    ignore_result: bool = False
    soft_time_limit: float | None = None
    throws: tuple[type[BaseException], ...] = ()
    typing: bool = True
    concurrency_key: str | Callable[..., Any] | None = None
    max_concurrency: int | None = None
    rate_limit: str | float | None = None
    unique_key: str | Callable[..., Any] | None = None
    unique_for: float | None = None

    def __post_init__(self) -> None:
        check_limits(self)

    def node_options(self) -> dict[str, Any]:
        """Options this policy sets for every node that runs the task."""
        options = dict(self.options)
        if self.expires is not None:
            options["expires"] = self.expires
        if self.dispatch_deadline is not None:
            options["dispatch_deadline"] = self.dispatch_deadline
        if self.max_concurrency is not None:
            options["max_concurrency"] = self.max_concurrency
        if self.rate_limit is not None:
            options["rate_limit"] = self.rate_limit
        return options


def check_limits(policy: TaskPolicy) -> None:
    """Refuse flow-control arguments of ``@task`` that cannot work.

    Raises:
        TypeError: for a key that is neither a string nor a callable, a
            ``max_concurrency`` that is not an int, or a ``concurrency_key``
            without a ``max_concurrency``.
        ValueError: for a ``max_concurrency`` below 1, a ``rate_limit`` that does not
            parse, or a negative ``unique_for``.
    """
    for name in ("concurrency_key", "unique_key"):
        key = getattr(policy, name)
        if key is not None and not ((isinstance(key, str) and key) or callable(key)):
            raise TypeError(
                f"{name} must be a template string over the task's arguments (such as "
                f"'acct:{{account_id}}') or a function of them, got {key!r}"
            )
    limit = policy.max_concurrency
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"max_concurrency must be an int, got {limit!r}")
        if limit < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {limit!r}")
    elif policy.concurrency_key is not None:
        raise TypeError("concurrency_key needs max_concurrency: how many may run at once per key")
    if policy.rate_limit is not None:
        rate_per_second(policy.rate_limit)
    if policy.unique_for is not None:
        if isinstance(policy.unique_for, bool) or not isinstance(policy.unique_for, int | float):
            raise TypeError(f"unique_for must be a number of seconds, got {policy.unique_for!r}")
        if policy.unique_for < 0:
            raise ValueError(f"unique_for must not be negative, got {policy.unique_for!r}")


def evaluate_key(
    key: str | Callable[..., Any],
    what: str,
    signature: inspect.Signature,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    input_rule: str = InputRule.NONE,
    result_kwarg: str | None = None,
) -> str:
    """The key ``key`` gives for a call with ``args`` and ``kwargs``.

    A string is a template formatted with the call's arguments by name
    (``"acct:{account_id}"``); a callable is called with them as keyword arguments.
    Arguments the call does not give are left out, and so is the parent's result that
    a node with the ``prepend`` ``input_rule`` receives (first, or as ``result_kwarg``):
    it is known only once the parent ran.

    Raises:
        ValueError: when the template names an argument the call does not have, or the
            function raises; the message names ``what``.
        TypeError: when the function returns something other than a non-empty string.
    """
    call_args, call_kwargs = list(args), dict(kwargs)
    if input_rule == InputRule.PREPEND:
        # The parent's result is not known yet: its place is held, and left out.
        if result_kwarg:
            call_kwargs[result_kwarg] = _UNKNOWN
        else:
            call_args.insert(0, _UNKNOWN)
    try:
        arguments = dict(signature.bind_partial(*call_args, **call_kwargs).arguments)
    except TypeError:
        arguments = dict(call_kwargs)
    for name, param in signature.parameters.items():
        if param.kind == param.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
        elif param.kind == param.VAR_POSITIONAL:
            arguments.pop(name, None)
    arguments = {k: v for k, v in arguments.items() if v is not _UNKNOWN}
    try:
        value = key.format(**arguments) if isinstance(key, str) else key(**arguments)
    except Exception as exc:
        raise ValueError(f"the {what} of {_describe_call(args, kwargs)} failed: {exc!r}") from exc
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"the {what} of {_describe_call(args, kwargs)} must be a non-empty string, "
            f"got {value!r}"
        )
    if len(value) > 200:
        raise ValueError(f"the {what} {value[:40]!r}... is longer than 200 characters")
    return value


#: Holds the place of a parent's result, not known when a key is computed.
_UNKNOWN = object()


def _describe_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"the call ({', '.join(parts)})"


#: The keyword arguments an error callback receives about the failure it reports.
ERRBACK_PARAMETERS = ("original_task_id", "original_task_name", "error", "payload")


class ErrbackForm(StrEnum):
    """How an error callback is called, read from its function's parameters.

    ``KEYWORDS`` (this package's form): it names some of :data:`ERRBACK_PARAMETERS`,
    or takes only ``**kwargs``. ``CELERY``: it takes more than one positional argument,
    and is called as Celery calls it, ``(request, exc, traceback, *args)``.
    ``TASK_ID``: Celery's old form, ``(task_id, *args)``.
    """

    KEYWORDS = "keywords"
    CELERY = "celery"
    TASK_ID = "task_id"


def errback_form(signature: inspect.Signature) -> ErrbackForm:
    """The form in which the function of ``signature`` is called as an error callback."""
    params = signature.parameters
    if any(name in params for name in ERRBACK_PARAMETERS):
        return ErrbackForm.KEYWORDS
    kinds = [p.kind for p in params.values()]
    positional = sum(k in (_POSITIONAL_ONLY, _POSITIONAL_OR_KEYWORD) for k in kinds)
    if positional > 1 or inspect.Parameter.VAR_POSITIONAL in kinds:
        return ErrbackForm.CELERY
    if positional == 1:
        return ErrbackForm.TASK_ID
    return ErrbackForm.KEYWORDS


_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD


def errback_arguments(
    signature: inspect.Signature,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    info: Mapping[str, Any],
    celery: tuple[Any, Any, Any],
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments of a mutable error callback, given what it reports.

    ``info`` holds :data:`ERRBACK_PARAMETERS`; ``celery`` is ``(request, exc,
    traceback)`` for the Celery form.
    """
    form = errback_form(signature)
    if form == ErrbackForm.CELERY:
        return [*celery, *args], dict(kwargs)
    if form == ErrbackForm.TASK_ID:
        return [info.get("original_task_id"), *args], dict(kwargs)
    params = signature.parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    call_kwargs = dict(kwargs)
    for key in ERRBACK_PARAMETERS:
        if (takes_any or key in params) and key not in call_kwargs:
            call_kwargs[key] = info.get(key)
    return list(args), call_kwargs


class HasPolicy(Protocol):
    """Anything carrying a :class:`TaskPolicy` (a registered task)."""

    @property
    def policy(self) -> TaskPolicy:
        """The task's policy."""


# -- arguments -------------------------------------------------------------------------


def check_binding(
    task_name: str,
    signature: inspect.Signature,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    input_rule: str,
    options: Mapping[str, Any],
) -> None:
    """Check that a node's arguments bind to ``signature``, counting its injected input.

    Raises:
        TypeError: naming the task and what is wrong with the arguments.
    """
    call_args, call_kwargs = list(args), dict(kwargs)
    injected = input_rule == InputRule.PREPEND
    if injected:
        name = options.get("result_kwarg")
        if name:
            call_kwargs[name] = None
        else:
            call_args.insert(0, None)
    try:
        signature.bind(*call_args, **call_kwargs)
    except TypeError as exc:
        hint = " (it receives its parent's result as first argument)" if injected else ""
        raise TypeError(f"{task_name}{tuple(args)!r}{hint}: {exc}") from None


#: The size of no arguments in JSON, ``[[],{}]``: most successors in a chain, and the
#: members of a group that take its parent's result, are checked without encoding.
_NO_ARGUMENTS_BYTES = len("[[],{}]")


def check_size(
    task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], limit: Any = None
) -> None:
    """Refuse arguments over ``MAX_ARGS_BYTES`` once encoded as JSON (0 or None: no limit).

    ``limit`` is that setting, read once by a caller checking many nodes.

    Raises:
        ValueError: naming the task, the size and the limit.
    """
    if limit is None:
        limit = conf.MAX_ARGS_BYTES
    if not limit or (not args and not kwargs and int(limit) >= _NO_ARGUMENTS_BYTES):
        return
    encoded = json.dumps([list(args), dict(kwargs)], separators=(",", ":"), ensure_ascii=False)
    size = len(encoded.encode())
    if size > int(limit):
        raise ValueError(
            f"the arguments of {task_name!r} are {size} bytes of JSON, over MAX_ARGS_BYTES "
            f"({int(limit)}); store large data elsewhere and pass a reference"
        )


# -- time ------------------------------------------------------------------------------


def parse_moment(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO 8601 string; None for an empty value."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def start_time(options: Mapping[str, Any], now: datetime) -> datetime | None:
    """When a run with ``options`` may start: the later of its countdown and its ETA."""
    moments = []
    if options.get("countdown"):
        moments.append(now + timedelta(seconds=float(options["countdown"])))
    eta = parse_moment(options.get("eta"))
    if eta is not None:
        moments.append(eta)
    return max(moments, default=None)


def is_expired(expires: Any, ready_at: datetime, now: datetime) -> bool:
    """Whether a node with the ``expires`` option, ready since ``ready_at``, expired."""
    if expires is None:
        return False
    if isinstance(expires, int | float):
        return bool(now > ready_at + timedelta(seconds=expires))
    return bool(now > parse_moment(expires))  # type: ignore[operator]


#: How early a delivery may claim a node before its time (countdown, ETA or retry
#: backoff) has come by this server's clock, for clocks a little apart.
CLOCK_SKEW_SECONDS = 5.0


def due_by(now: datetime) -> datetime:
    """The latest due time a delivery arriving at ``now`` may claim."""
    return now + timedelta(seconds=CLOCK_SKEW_SECONDS)


def lease_seconds(deadline: float) -> float:
    """How long a claimed node is protected from other deliveries.

    Cloud Tasks gives up on an attempt after its dispatch deadline and may deliver
    again; the lease outlasts the deadline a little, so a slow run is not started
    twice, while a run whose process died is taken over soon after.
    """
    return deadline + min(30.0, deadline)


#: The inline budget when ``INLINE_SECONDS`` is not set, at most: a chain step is a
#: millisecond or two, so this is hundreds of steps, and far from any deadline.
DEFAULT_INLINE_SECONDS = 5.0

#: Queue settings that pace a queue: steps run inline would bypass them.
QUEUE_RATE_SETTINGS = ("max_dispatches_per_second", "max_concurrent_dispatches")


def inline_seconds(queue: str, deadline: float | None, in_process: bool) -> float:
    """How long a delivery may go on running ready successors inline (0: not at all).

    ``INLINE_SECONDS``, when set, is the budget (0 turns inline runs off). Unset,
    deliveries from Cloud Tasks get :data:`DEFAULT_INLINE_SECONDS`, or a tenth of
    the delivered node's dispatch deadline ``deadline`` when that is less, except
    on a queue whose ``QUEUES`` entry sets a rate limit (an inline step would not be
    paced by it); the in-process transports (``in_process``) never need it.
    """
    configured = conf.INLINE_SECONDS
    if configured is not None:
        return float(configured or 0)
    if in_process:
        return 0.0
    queues = conf.QUEUES or {}
    paced = queues.get(queue or str(conf.QUEUE)) or {}
    if any(paced.get(key) is not None for key in QUEUE_RATE_SETTINGS):
        return 0.0
    return min(DEFAULT_INLINE_SECONDS, float(deadline or conf.DISPATCH_DEADLINE) / 10)


# -- retries ---------------------------------------------------------------------------


def retry_limit(asked: int | None, options: Mapping[str, Any], policy: TaskPolicy) -> int | None:
    """How many retries a node may have: ``asked`` by ``self.retry()``, its option, its task's."""
    if asked is not None:
        return asked
    limit: int | None = options.get("max_retries", policy.max_retries)
    return limit


def check_retry(task_name: str, countdown: float, args: Any = None, kwargs: Any = None) -> None:
    """Refuse a retry the database cannot store: replacement ``args``/``kwargs`` that are
    not JSON data (NaN, an infinity...), or a ``countdown`` that is no finite delay.

    Raises:
        TypeError: for arguments that are not JSON data.
        ValueError: for a countdown that is not finite or puts the retry past year 9999.
    """
    owner = f" of the retry of {task_name!r}"
    if args is not None:
        check_json(list(args), "args", owner)
    if kwargs is not None:
        check_json(dict(kwargs), "kwargs", owner)
    try:
        datetime.now() + timedelta(seconds=countdown)
    except (OverflowError, ValueError):
        raise ValueError(f"countdown{owner} is {countdown!r}, which is not a delay") from None


def backoff(retries: int, task: HasPolicy, options: Mapping[str, Any]) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    With ``retry_backoff`` the delay is ``base * 2**retries`` capped at
    ``retry_backoff_max``, and with ``retry_jitter`` a random value between 0 and that
    delay; without it, ``default_retry_delay``.
    """
    policy = task.policy
    base = options.get("retry_backoff", policy.retry_backoff)
    if not base:
        return float(policy.default_retry_delay)
    base = 1.0 if base is True else float(base)
    cap = float(options.get("retry_backoff_max", policy.retry_backoff_max))
    delay = min(base * (2**retries), cap)
    if options.get("retry_jitter", policy.retry_jitter):
        delay = random.uniform(0, delay)
    return float(delay)
