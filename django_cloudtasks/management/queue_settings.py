"""The queues of ``CLOUDTASKS['QUEUES']`` as Cloud Tasks ``Queue`` messages and update masks.

``QUEUES`` maps a queue id to its settings, for example::

    {"default": {"max_dispatches_per_second": 50, "max_concurrent_dispatches": 100,
                 "max_attempts": 20, "min_backoff": 0.5, "max_backoff": 60,
                 "max_doublings": 4}}

Durations are seconds. A queue without an entry (the default ``QUEUE``) keeps the
service's defaults. ``"shards": 4`` makes the queue four Cloud Tasks queues with
those settings, ``q``, ``q-1``, ``q-2`` and ``q-3``, its deliveries spread over them
(see :mod:`django_cloudtasks.transports.fanout`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.registry import registry
from django_cloudtasks.transports.fanout import shard_ids

#: The most shards a queue may have.
MAX_SHARDS = 100

#: Each setting: (the Queue field it sets, its type).
FIELDS: dict[str, tuple[str, str]] = {
    "max_dispatches_per_second": ("rate_limits.max_dispatches_per_second", "float"),
    "max_concurrent_dispatches": ("rate_limits.max_concurrent_dispatches", "int"),
    "max_attempts": ("retry_config.max_attempts", "int"),
    "max_retry_duration": ("retry_config.max_retry_duration", "duration"),
    "min_backoff": ("retry_config.min_backoff", "duration"),
    "max_backoff": ("retry_config.max_backoff", "duration"),
    "max_doublings": ("retry_config.max_doublings", "int"),
}

_QUEUE_ID = re.compile(r"^[A-Za-z0-9-]{1,100}$")


@dataclass(frozen=True)
class QueueSpec:
    """One queue as configured: its short id and its settings (seconds for durations)."""

    queue_id: str
    settings: Mapping[str, float]

    def message(self, name: str) -> tasks_v2.Queue:
        """The ``Queue`` named ``name`` (the full path) carrying these settings."""
        rate = tasks_v2.RateLimits()
        retry = tasks_v2.RetryConfig()
        for key, value in self.settings.items():
            path, kind = FIELDS[key]
            target = rate if path.startswith("rate_limits.") else retry
            leaf = path.split(".", 1)[1]
            if kind == "duration":
                setattr(target, leaf, _duration(value))
            else:
                setattr(target, leaf, int(value) if kind == "int" else float(value))
        queue = tasks_v2.Queue(name=name)
        if any(FIELDS[k][0].startswith("rate_limits.") for k in self.settings):
            queue.rate_limits = rate
        if any(FIELDS[k][0].startswith("retry_config.") for k in self.settings):
            queue.retry_config = retry
        return queue

    def update_mask(self) -> list[str]:
        """The ``update_mask`` paths of the configured settings."""
        return [FIELDS[key][0] for key in self.settings]

    def differences(self, current: tasks_v2.Queue) -> list[str]:
        """The settings whose value on ``current`` differs from the configured one."""
        return [
            key
            for key, wanted in self.settings.items()
            if not math.isclose(current_value(current, key), float(wanted), abs_tol=1e-9)
        ]


def current_value(queue: tasks_v2.Queue, key: str) -> float:
    """The value of the setting ``key`` (a key of :data:`FIELDS`) on ``queue``, in seconds
    for durations."""
    group, leaf = FIELDS[key][0].split(".", 1)
    return _seconds(getattr(getattr(queue, group), leaf))


def configured_queues() -> list[QueueSpec]:
    """The default ``QUEUE``, every entry of ``QUEUES``, then every other queue a
    registered task names (``@task(queue=...)``, with the service's defaults), validated.

    Raises:
        ConfigurationError: for a malformed queue id, an unknown setting or a value
            that is not a number.
    """
    raw = conf.QUEUES or {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError("CLOUDTASKS['QUEUES'] must be a dict of queue id -> settings")
    names = [str(conf.QUEUE or "default")] + [str(name) for name in raw if name != conf.QUEUE]
    for task in registry.tasks():
        if task.policy.queue and task.policy.queue not in names:
            names.append(task.policy.queue)
    specs = []
    for name in names:
        entry = raw.get(name) or {}
        settings = dict(entry) if isinstance(entry, Mapping) else entry
        shards = _shards(name, settings.pop("shards", 1) if isinstance(settings, dict) else 1)
        values = _validated(name, settings)
        specs += [QueueSpec(queue_id, values) for queue_id in shard_ids(name, shards)]
    for spec in specs:
        if not _QUEUE_ID.match(spec.queue_id):
            raise ConfigurationError(f"{spec.queue_id!r} (a shard) is longer than 100 characters")
    return specs


def _shards(queue_id: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise ConfigurationError(
            f"CLOUDTASKS['QUEUES'][{queue_id!r}]['shards'] is {value!r}, not a whole number "
            f"from 1 to {MAX_SHARDS}"
        )
    return value


def _validated(queue_id: str, settings: Any) -> dict[str, float]:
    where = f"CLOUDTASKS['QUEUES'][{queue_id!r}]"
    if not _QUEUE_ID.match(queue_id):
        raise ConfigurationError(
            f"{queue_id!r} is not a queue id (letters, digits and hyphens, at most 100)"
        )
    if not isinstance(settings, Mapping):
        raise ConfigurationError(f"{where} must be a dict of settings")
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise ConfigurationError(
            f"{where} has unknown settings {', '.join(unknown)}; known: {', '.join(FIELDS)}, shards"
        )
    values: dict[str, float] = {}
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"{where}[{key!r}] is {value!r}, not a number")
        if FIELDS[key][1] == "int" and value != int(value):
            raise ConfigurationError(f"{where}[{key!r}] is {value!r}, not a whole number")
        values[key] = value
    return values


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def _seconds(value: Any) -> float:
    """A number, or a duration (``timedelta`` or protobuf ``Duration``) in seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, duration_pb2.Duration):
        return value.seconds + value.nanos / 1e9
    return float(value)
