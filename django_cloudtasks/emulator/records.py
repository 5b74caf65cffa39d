"""What the emulator keeps per queue, per task, per dispatch and per attempt."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.cloud import tasks_v2

from .names import queue_short_id
from .overrides import HttpTarget, QueueOverride
from .policy import RetryPolicy, TokenBucket
from .queue_config import retry_policy

_sequence = itertools.count()


def to_datetime(epoch_seconds: float) -> datetime:
    """An aware UTC datetime for a POSIX timestamp (what proto-plus stores as Timestamp)."""
    return datetime.fromtimestamp(epoch_seconds, tz=UTC)


@dataclass(frozen=True)
class AttemptRecord:
    """One HTTP delivery attempt, as seen by the emulator.

    ``status_code`` is the HTTP status when the handler answered, else None and
    ``error`` says why (timeout, connection refused...). ``attempt`` counts from 1.
    Times are POSIX timestamps. ``retry_after`` is the seconds a ``Retry-After``
    answer asked for; ``response_body`` the start of the answer's body (at most 1 KB).
    """

    task_name: str
    queue_name: str
    url: str
    method: str
    attempt: int
    status_code: int | None
    error: str | None
    started_at: float
    finished_at: float
    headers: dict[str, str]
    retry_after: float | None = None
    response_body: bytes = b""

    @property
    def succeeded(self) -> bool:
        """Whether the handler answered with a 2xx status."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def task_id(self) -> str:
        """The short task id (last segment of ``task_name``)."""
        return self.task_name.rsplit("/", 1)[-1]


class QueueRecord:
    """A queue: its settings message plus the scheduling state of its tasks."""

    def __init__(self, queue: tasks_v2.Queue, now: float) -> None:
        self.name: str = queue.name
        self.short_id = queue_short_id(queue.name)
        self.task_names: set[str] = set()
        # (schedule_time, sequence, task name, generation); stale entries are skipped.
        self.heap: list[tuple[float, int, str, int]] = []
        self.forced: deque[str] = deque()
        self.in_flight = 0
        rate = queue.rate_limits
        self.bucket = TokenBucket(rate.max_dispatches_per_second, rate.max_burst_size, now)
        self.queue = queue
        self.retry: RetryPolicy = retry_policy(queue)
        self.running = False
        self.max_concurrent = 0
        self.override: QueueOverride | None = None
        self.refresh()

    def configure(self, queue: tasks_v2.Queue, now: float) -> None:
        """Adopt new settings (from UpdateQueue), keeping the tasks and tokens."""
        self.queue = queue
        rate = queue.rate_limits
        self.bucket.reconfigure(rate.max_dispatches_per_second, rate.max_burst_size, now)
        self.retry = retry_policy(queue)
        self.refresh()

    def refresh(self) -> None:
        """Copy the settings read on every dispatch out of the queue message.

        ``running``: whether the queue dispatches (neither paused nor disabled);
        ``max_concurrent``: its ``max_concurrent_dispatches``; ``override``: its
        ``http_target``. Call after changing :attr:`queue`.
        """
        self.running = self.queue.state == tasks_v2.Queue.State.RUNNING
        self.max_concurrent = int(self.queue.rate_limits.max_concurrent_dispatches)
        self.override = QueueOverride.of(self.queue)

    def push(self, task: TaskRecord) -> None:
        """Schedule ``task`` at its ``schedule_time``."""
        heapq.heappush(self.heap, (task.schedule_time, next(_sequence), task.name, task.generation))

    def peek(self, tasks: dict[str, TaskRecord]) -> TaskRecord | None:
        """The earliest scheduled task, dropping stale heap entries on the way."""
        while self.heap:
            _, _, name, generation = self.heap[0]
            task = tasks.get(name)
            if task is None or task.generation != generation or task.running > 0:
                heapq.heappop(self.heap)
                continue
            return task
        return None

    def pop(self) -> None:
        """Remove the entry ``peek`` returned."""
        heapq.heappop(self.heap)


def _set_time(timestamp: Any, epoch_seconds: float) -> None:
    # microseconds, as a datetime would carry them
    timestamp.FromMicroseconds(round(epoch_seconds * 1_000_000))


@dataclass
class AttemptTimes:
    """The last attempt of a task: when it was due, sent and answered, and its status."""

    schedule_time: float
    dispatch_time: float
    response_time: float | None = None
    status: tuple[int, str] | None = None

    def fill(self, attempt: Any) -> None:
        """Write into the protobuf of an ``Attempt``."""
        _set_time(attempt.schedule_time, self.schedule_time)
        _set_time(attempt.dispatch_time, self.dispatch_time)
        if self.response_time is not None:
            _set_time(attempt.response_time, self.response_time)
        if self.status is not None:
            attempt.response_status.code, attempt.response_status.message = self.status


@dataclass
class TaskRecord:
    """A live task: what CreateTask stored plus the counters the service keeps.

    Messages are kept and built as plain protobufs: proto-plus costs several times
    more per field, on every CreateTask.
    """

    name: str
    queue: QueueRecord
    http_request: Any  # the protobuf of the task's HttpRequest
    schedule_time: float
    create_time: float
    dispatch_deadline: float
    target: HttpTarget
    dispatch_count: int = 0
    response_count: int = 0
    first_dispatch_time: float | None = None
    last_attempt: AttemptTimes | None = None
    retry_config: tasks_v2.RetryConfig | None = None
    previous_response: int | None = None
    running: int = 0  # attempts in flight (RunTask may add one to a running task)
    generation: int = 0

    @property
    def short_id(self) -> str:
        """The task id, the last segment of the name."""
        return self.name.rsplit("/", 1)[-1]

    def to_message(self, view: int) -> tasks_v2.Task:
        """The task as the API returns it; the BASIC view omits the body."""
        if view != tasks_v2.Task.View.FULL:
            view = tasks_v2.Task.View.BASIC
        task = _TASK_PB(
            name=self.name,
            dispatch_count=self.dispatch_count,
            response_count=self.response_count,
            view=int(view),
        )
        task.http_request.CopyFrom(self.http_request)
        if view == tasks_v2.Task.View.BASIC:
            task.http_request.body = b""
        _set_time(task.schedule_time, self.schedule_time)
        _set_time(task.create_time, self.create_time)
        task.dispatch_deadline.FromMicroseconds(round(self.dispatch_deadline * 1_000_000))
        if self.first_dispatch_time is not None:
            _set_time(task.first_attempt.dispatch_time, self.first_dispatch_time)
        if self.last_attempt is not None:
            self.last_attempt.fill(task.last_attempt)
        if self.retry_config is not None:
            task.retry_config.CopyFrom(tasks_v2.RetryConfig.pb(self.retry_config))
        return tasks_v2.Task.wrap(task)


_TASK_PB = tasks_v2.Task.pb()


@dataclass
class Dispatch:
    """One attempt handed from the scheduler to a worker: all it needs, taken under lock."""

    task: TaskRecord
    queue: QueueRecord
    attempt: int
    url: str
    method: str
    headers: dict[str, str]
    body: bytes
    timeout: float
    oidc_email: str | None = None
    oidc_audience: str | None = None
    oauth_email: str | None = None
