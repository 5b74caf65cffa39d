"""Queue settings: the real service's defaults, validation, and UpdateQueue field masks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import timedelta

from google.cloud import tasks_v2

from .errors import invalid
from .policy import RetryPolicy, burst_size_for

DEFAULT_MAX_DISPATCHES_PER_SECOND = 500.0
MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
MAX_CONCURRENT_DISPATCHES = 5000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = timedelta(seconds=0.1)
DEFAULT_MAX_BACKOFF = timedelta(seconds=3600)
DEFAULT_MAX_DOUBLINGS = 16

_RATE_FIELDS = ("max_dispatches_per_second", "max_burst_size", "max_concurrent_dispatches")
_RETRY_FIELDS = (
    "max_attempts",
    "max_retry_duration",
    "min_backoff",
    "max_backoff",
    "max_doublings",
)
_DURATIONS = ("min_backoff", "max_backoff", "max_retry_duration")
_WHOLE_FIELDS = (
    "rate_limits",
    "retry_config",
    "app_engine_routing_override",
    "http_target",
    "stackdriver_logging_config",
)


def copy_message(message: tasks_v2.Queue) -> tasks_v2.Queue:
    """A deep copy of a queue message."""
    return tasks_v2.Queue.deserialize(tasks_v2.Queue.serialize(message))


def whole_seconds(value: timedelta) -> timedelta:
    """``value`` truncated to whole seconds, as the service stores backoffs and durations."""
    return timedelta(seconds=int(value.total_seconds()))


def with_defaults(queue: tasks_v2.Queue, *, subsecond_backoffs: bool = False) -> tasks_v2.Queue:
    """Fill the unset rate and retry settings with the service defaults, then validate.

    Zero scalars count as unset, as proto3 cannot tell them apart. Given backoffs and
    ``max_retry_duration`` are truncated to whole seconds, as the reference says,
    unless ``subsecond_backoffs`` (a testing option) keeps them.

    Raises:
        EmulatorError: INVALID_ARGUMENT for values the service refuses.
    """
    queue = copy_message(queue)
    if "retry_config" in queue:
        queue.retry_config = validated_retry(queue.retry_config, subsecond_backoffs)
    rate = queue.rate_limits
    if rate.max_dispatches_per_second < 0 or rate.max_concurrent_dispatches < 0:
        raise invalid("rate limits must not be negative")
    if rate.max_dispatches_per_second > MAX_DISPATCHES_PER_SECOND:
        raise invalid(f"max_dispatches_per_second must be at most {MAX_DISPATCHES_PER_SECOND:g}")
    if rate.max_concurrent_dispatches > MAX_CONCURRENT_DISPATCHES:
        raise invalid(f"max_concurrent_dispatches must be at most {MAX_CONCURRENT_DISPATCHES}")
    if not rate.max_dispatches_per_second:
        rate.max_dispatches_per_second = DEFAULT_MAX_DISPATCHES_PER_SECOND
    if not rate.max_concurrent_dispatches:
        rate.max_concurrent_dispatches = DEFAULT_MAX_CONCURRENT_DISPATCHES
    # Output only: the service picks the burst size from the rate.
    rate.max_burst_size = burst_size_for(rate.max_dispatches_per_second)
    queue.rate_limits = rate

    retry = queue.retry_config
    if not retry.max_attempts:
        retry.max_attempts = DEFAULT_MAX_ATTEMPTS
    if not retry.max_doublings:
        retry.max_doublings = DEFAULT_MAX_DOUBLINGS
    if "min_backoff" not in retry:
        retry.min_backoff = DEFAULT_MIN_BACKOFF
    if "max_backoff" not in retry:
        retry.max_backoff = DEFAULT_MAX_BACKOFF
    if "max_retry_duration" not in retry:
        retry.max_retry_duration = timedelta(0)
    if retry.min_backoff > retry.max_backoff:
        raise invalid("min_backoff must not be greater than max_backoff")
    queue.retry_config = retry
    return queue


def validated_retry(
    retry: tasks_v2.RetryConfig, subsecond_backoffs: bool = False
) -> tasks_v2.RetryConfig:
    """A copy of ``retry`` checked and with its durations truncated to whole seconds.

    Raises:
        EmulatorError: INVALID_ARGUMENT for negative values.
    """
    retry = tasks_v2.RetryConfig.deserialize(tasks_v2.RetryConfig.serialize(retry))
    if retry.max_attempts < -1:
        raise invalid("max_attempts must be -1 (unlimited) or positive")
    if retry.max_doublings < 0:
        raise invalid("max_doublings must not be negative")
    for name in _DURATIONS:
        if name in retry:
            if getattr(retry, name) < timedelta(0):
                raise invalid(f"{name} must not be negative")
            if not subsecond_backoffs or name == "max_retry_duration":
                setattr(retry, name, whole_seconds(getattr(retry, name)))
    return retry


def task_retry_policy(queue: RetryPolicy, task: tasks_v2.RetryConfig) -> RetryPolicy:
    """The queue's policy with the fields a task's own ``retry_config`` sets."""
    changes: dict[str, float | int] = {}
    if task.max_attempts:
        changes["max_attempts"] = task.max_attempts
    if task.max_doublings:
        changes["max_doublings"] = task.max_doublings
    for name in _DURATIONS:
        if name in task:
            changes[name] = getattr(task, name).total_seconds()
    return dataclasses.replace(queue, **changes)  # type: ignore[arg-type]


def apply_update(
    existing: tasks_v2.Queue,
    update: tasks_v2.Queue,
    paths: Iterable[str],
    *,
    subsecond_backoffs: bool = False,
) -> tasks_v2.Queue:
    """The queue ``existing`` with the fields named by ``paths`` taken from ``update``.

    An empty mask updates every settable field, as the service does. The name and the
    state (changed only by Pause/Resume) are kept.

    Raises:
        EmulatorError: INVALID_ARGUMENT for a path the emulator does not know.
    """
    result = copy_message(existing)
    paths = [path for path in paths if path]
    if not paths:
        paths = list(_WHOLE_FIELDS)
    for path in paths:
        head, _, leaf = path.partition(".")
        if not leaf and head in _WHOLE_FIELDS:
            setattr(result, head, getattr(update, head))
        elif head == "rate_limits" and leaf in _RATE_FIELDS:
            setattr(result.rate_limits, leaf, getattr(update.rate_limits, leaf))
        elif head == "retry_config" and leaf in _RETRY_FIELDS:
            setattr(result.retry_config, leaf, getattr(update.retry_config, leaf))
        else:
            raise invalid(f"unsupported update_mask path: {path!r}")
    return with_defaults(result, subsecond_backoffs=subsecond_backoffs)


def retry_policy(queue: tasks_v2.Queue) -> RetryPolicy:
    """The queue's RetryConfig (defaults filled) as plain numbers."""
    retry = queue.retry_config
    return RetryPolicy(
        max_attempts=retry.max_attempts,
        max_retry_duration=retry.max_retry_duration.total_seconds(),
        min_backoff=retry.min_backoff.total_seconds(),
        max_backoff=retry.max_backoff.total_seconds(),
        max_doublings=retry.max_doublings,
    )
