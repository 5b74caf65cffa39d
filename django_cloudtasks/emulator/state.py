"""The emulator's queues and tasks, guarded by one condition variable.

Every public method takes the lock; the scheduler waits on the same condition, so a
change that may make a task ready (a new task, a resumed queue, a finished attempt)
wakes it. Methods raise :class:`EmulatorError` with the status the service would use.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import grpc
from google.cloud import tasks_v2

from .errors import EmulatorError, invalid, not_found
from .filters import parse_queue_filter
from .names import is_location_name, is_queue_name, new_task_id, parse_task_name
from .options import EmulatorOptions
from .overrides import HttpTarget
from .policy import throttled_delay
from .queue_config import (
    apply_update,
    copy_message,
    task_retry_policy,
    with_defaults,
)
from .records import (
    AttemptRecord,
    Dispatch,
    QueueRecord,
    TaskRecord,
    to_datetime,
)
from .task_requests import checked_task, start_attempt

logger = logging.getLogger("django_cloudtasks.emulator")

MAX_TASKS_PAGE = 1000
MAX_QUEUES_PAGE = 9800


def _page(names: list[str], page_size: int, page_token: str, limit: int) -> tuple[list[str], str]:
    """One page of sorted ``names`` after the token, and the token of the next page."""
    size = min(page_size, limit) if page_size > 0 else limit
    start = 0
    if page_token:
        try:
            after = base64.urlsafe_b64decode(page_token.encode()).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid("invalid page_token") from exc
        while start < len(names) and names[start] <= after:
            start += 1
    chunk = names[start : start + size]
    more = start + size < len(names)
    token = base64.urlsafe_b64encode(chunk[-1].encode()).decode() if more and chunk else ""
    return chunk, token


class EmulatorState:
    """Queues, live tasks, recently finished task names (tombstones) and attempt history."""

    def __init__(
        self,
        options: EmulatorOptions | None = None,
        *,
        history_limit: int | None = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        options = options or EmulatorOptions()
        self.cond = threading.Condition()
        self.auto_create_queues = options.auto_create_queues
        self.tombstone_seconds = options.tombstone_seconds
        self.queue_tombstone_seconds = options.queue_tombstone_seconds
        self.subsecond_backoffs = options.subsecond_backoffs
        self.clock = clock
        self._queues: dict[str, QueueRecord] = {}
        self._tasks: dict[str, TaskRecord] = {}
        # name -> expiry; insertion order is expiry order because the window is fixed.
        self._tombstones: dict[str, float] = {}
        self._queue_tombstones: dict[str, float] = {}
        self._history: deque[AttemptRecord] = deque(maxlen=history_limit)

    # -- queues -------------------------------------------------------------------------

    def _queue(self, name: str) -> QueueRecord:
        queue = self._queues.get(name)
        if queue is None:
            if not is_queue_name(name):
                raise invalid(f"invalid queue name: {name!r}")
            raise not_found(f"queue {name} does not exist")
        return queue

    def _add_queue(self, queue: tasks_v2.Queue, *, defaults: bool = True) -> QueueRecord:
        expiry = self._queue_tombstones.get(queue.name)
        if expiry is not None:
            if expiry > self.clock():
                raise EmulatorError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "The queue cannot be created because a queue with this name existed "
                    f"too recently ({queue.name}).",
                )
            del self._queue_tombstones[queue.name]
        if defaults:
            queue = with_defaults(queue, subsecond_backoffs=self.subsecond_backoffs)
        queue.state = tasks_v2.Queue.State(tasks_v2.Queue.State.RUNNING)
        record = QueueRecord(queue, self.clock())
        self._queues[queue.name] = record
        logger.info("queue %s created", queue.name)
        return record

    def create_queue(self, parent: str, queue: tasks_v2.Queue) -> tasks_v2.Queue:
        """CreateQueue: add a RUNNING queue with defaults for unset settings.

        Raises:
            EmulatorError: INVALID_ARGUMENT for a malformed name or one outside
                ``parent``; ALREADY_EXISTS when the queue exists; FAILED_PRECONDITION
                when a queue of that name was deleted within ``queue_tombstone_seconds``.
        """
        if not is_location_name(parent):
            raise invalid(f"invalid parent: {parent!r}")
        if not is_queue_name(queue.name) or not queue.name.startswith(parent + "/queues/"):
            raise invalid(f"queue name {queue.name!r} is not a queue of {parent}")
        with self.cond:
            if queue.name in self._queues:
                raise EmulatorError(grpc.StatusCode.ALREADY_EXISTS, "queue already exists")
            return copy_message(self._add_queue(queue).queue)

    def ensure_queue(self, name: str) -> tasks_v2.Queue:
        """Create the queue ``name`` with defaults unless it exists; return it."""
        if not is_queue_name(name):
            raise invalid(f"invalid queue name: {name!r}")
        with self.cond:
            record = self._queues.get(name) or self._add_queue(tasks_v2.Queue(name=name))
            return copy_message(record.queue)

    def get_queue(self, name: str) -> tasks_v2.Queue:
        """GetQueue. Raises EmulatorError NOT_FOUND for an unknown queue."""
        with self.cond:
            return copy_message(self._queue(name).queue)

    def list_queues(
        self, parent: str, page_size: int = 0, page_token: str = "", filter: str = ""
    ) -> tuple[list[tasks_v2.Queue], str]:
        """ListQueues: one page of the location's queues, sorted by name, and next token.

        ``filter`` takes the documented form ``state: PAUSED`` (see :mod:`.filters`).

        Raises:
            EmulatorError: INVALID_ARGUMENT for a bad parent, page token or filter.
        """
        if not is_location_name(parent):
            raise invalid(f"invalid parent: {parent!r}")
        matches = parse_queue_filter(filter)
        with self.cond:
            names = sorted(
                name
                for name, record in self._queues.items()
                if name.startswith(parent + "/queues/") and matches(record.queue)
            )
            chunk, token = _page(names, page_size, page_token, MAX_QUEUES_PAGE)
            return [copy_message(self._queues[n].queue) for n in chunk], token

    def update_queue(self, queue: tasks_v2.Queue, paths: Iterable[str]) -> tasks_v2.Queue:
        """UpdateQueue: change the masked settings, creating the queue when it is missing."""
        with self.cond:
            record = self._queues.get(queue.name)
            if record is None:
                if not is_queue_name(queue.name):
                    raise invalid(f"invalid queue name: {queue.name!r}")
                base = tasks_v2.Queue(name=queue.name)
                updated = apply_update(
                    base, queue, paths, subsecond_backoffs=self.subsecond_backoffs
                )
                record = self._add_queue(updated, defaults=False)
            else:
                updated = apply_update(
                    record.queue, queue, paths, subsecond_backoffs=self.subsecond_backoffs
                )
                record.configure(updated, self.clock())
            self.cond.notify_all()
            return copy_message(record.queue)

    def delete_queue(self, name: str) -> None:
        """DeleteQueue: drop the queue and its tasks; its name stays taken for a while.

        Raises:
            EmulatorError: NOT_FOUND for an unknown queue.
        """
        with self.cond:
            record = self._queue(name)
            self._drop_tasks(record)
            del self._queues[name]
            self._queue_tombstones[name] = self.clock() + self.queue_tombstone_seconds

    def purge_queue(self, name: str) -> tasks_v2.Queue:
        """PurgeQueue: delete every task of the queue; set ``purge_time``.

        The purge takes effect at once (Cloud Tasks may take up to a minute and still
        dispatch tasks meanwhile).
        """
        with self.cond:
            record = self._queue(name)
            self._drop_tasks(record)
            record.queue.purge_time = to_datetime(self.clock())
            return copy_message(record.queue)

    def set_queue_state(self, name: str, state: int) -> tasks_v2.Queue:
        """PauseQueue / ResumeQueue. Raises NOT_FOUND for an unknown queue."""
        with self.cond:
            record = self._queue(name)
            record.queue.state = tasks_v2.Queue.State(state)
            record.refresh()
            self.cond.notify_all()
            return copy_message(record.queue)

    def _drop_tasks(self, record: QueueRecord) -> None:
        for task_name in list(record.task_names):
            self._finish_task(self._tasks[task_name])
        record.heap.clear()
        record.forced.clear()

    # -- tasks --------------------------------------------------------------------------

    def _tombstoned(self, name: str, now: float) -> bool:
        while self._tombstones:
            oldest, expiry = next(iter(self._tombstones.items()))
            if expiry > now:
                break
            del self._tombstones[oldest]
        return name in self._tombstones

    def _finish_task(self, task: TaskRecord) -> None:
        """Forget a live task, keeping its name taken for the tombstone window."""
        del self._tasks[task.name]
        task.queue.task_names.discard(task.name)
        task.generation += 1
        self._tombstones.pop(task.name, None)
        self._tombstones[task.name] = self.clock() + self.tombstone_seconds

    def _task(self, name: str) -> TaskRecord:
        task = self._tasks.get(name)
        if task is None:
            if parse_task_name(name) is None:
                raise invalid(f"invalid task name: {name!r}")
            raise not_found(f"task {name} does not exist")
        return task

    def create_task(self, parent: str, task: tasks_v2.Task, view: int) -> tasks_v2.Task:
        """CreateTask: validate and store the task, scheduling it for dispatch.

        A ``schedule_time`` in the past becomes now. A task's own ``retry_config``
        overrides the fields it sets of its queue's.

        Raises:
            EmulatorError: INVALID_ARGUMENT (bad name, name in another queue, schedule
                more than 30 days ahead, task over 100 KB, headers over 80 KB, a body
                with GET/HEAD/DELETE/OPTIONS, bad URL, deadline outside 15 s - 30 min);
                UNIMPLEMENTED for App Engine targets; NOT_FOUND for an unknown queue
                without auto-creation; ALREADY_EXISTS for a live or recent name.
        """
        new = checked_task(parent, task, self.subsecond_backoffs, self.clock)
        now = new.create_time

        with self.cond:
            queue = self._queues.get(parent)
            if queue is None:
                if not self.auto_create_queues:
                    raise not_found(f"queue {parent} does not exist")
                queue = self._add_queue(tasks_v2.Queue(name=parent))
            name = new.name or f"{parent}/tasks/{new_task_id()}"
            if name in self._tasks or self._tombstoned(name, now):
                raise EmulatorError(
                    grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists"
                )
            record = TaskRecord(
                name=name,
                queue=queue,
                http_request=new.http_request,
                schedule_time=new.schedule_time,
                create_time=now,
                dispatch_deadline=new.dispatch_deadline,
                target=HttpTarget.of(new.http_request),
                retry_config=new.retry_config,
            )
            self._tasks[name] = record
            queue.task_names.add(name)
            queue.push(record)
            self.cond.notify_all()
            return record.to_message(view)

    def get_task(self, name: str, view: int) -> tasks_v2.Task:
        """GetTask. Raises NOT_FOUND once the task finished or was deleted."""
        with self.cond:
            return self._task(name).to_message(view)

    def list_tasks(
        self, parent: str, view: int, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[tasks_v2.Task], str]:
        """ListTasks: one page of the queue's live tasks, sorted by name, and next token."""
        with self.cond:
            queue = self._queue(parent)
            names = sorted(queue.task_names)
            chunk, token = _page(names, page_size, page_token, MAX_TASKS_PAGE)
            return [self._tasks[n].to_message(view) for n in chunk], token

    def delete_task(self, name: str) -> None:
        """DeleteTask: the task is not dispatched again (an attempt in flight is ignored).

        Raises:
            EmulatorError: NOT_FOUND once the task finished or was deleted.
        """
        with self.cond:
            self._finish_task(self._task(name))
            logger.info("task %s deleted", name)

    def run_task(self, name: str, view: int) -> tasks_v2.Task:
        """RunTask: dispatch now, even when scheduled later, the queue is paused or
        rate-limited, or the task is already running (a second attempt then runs
        alongside the first, as the reference documents).

        Raises:
            EmulatorError: NOT_FOUND for an unknown task.
        """
        with self.cond:
            task = self._task(name)
            task.generation += 1  # the scheduled heap entry goes stale
            task.queue.forced.append(name)
            self.cond.notify_all()
            return task.to_message(view)

    # -- dispatch -----------------------------------------------------------------------

    def take_ready(self, capacity: int) -> tuple[list[Dispatch], float | None]:
        """Start up to ``capacity`` due attempts within the queues' limits (lock held).

        Queues take turns, one task each per round, so a crowded queue does not starve
        the others of workers. Returns the attempts and the time at which more may
        become due (None when only a finished attempt or an API call can change that).
        """
        now = self.clock()
        jobs: list[Dispatch] = []
        wake_times: list[float] = []
        for queue in self._queues.values():
            while queue.forced and len(jobs) < capacity:
                task = self._tasks.get(queue.forced.popleft())
                if task is not None and task.queue is queue:
                    jobs.append(start_attempt(task, now))
        active = [queue for queue in self._queues.values() if queue.running]
        while active and len(jobs) < capacity:
            still_ready = []
            for queue in active:
                if len(jobs) >= capacity:
                    break
                task = self._next_due(queue, now, wake_times)
                if task is not None:
                    queue.pop()
                    jobs.append(start_attempt(task, now))
                    still_ready.append(queue)
            active = still_ready
        return jobs, min(wake_times, default=None)

    def _next_due(
        self, queue: QueueRecord, now: float, wake_times: list[float]
    ) -> TaskRecord | None:
        """The queue's next task if it may start now (taking a token), else None.

        When time alone will make one startable, that time is added to ``wake_times``.
        """
        task = queue.peek(self._tasks)
        if task is None:
            return None
        if task.schedule_time > now:
            wake_times.append(task.schedule_time)
            return None
        if queue.in_flight >= queue.max_concurrent:
            return None
        if not queue.bucket.try_take(now):
            wake_times.append(queue.bucket.next_token_at(now))
            return None
        return task

    def finish(self, job: Dispatch, record: AttemptRecord, rpc_status: int) -> None:
        """Record an attempt's outcome: complete the task, schedule a retry or give up.

        Call with the lock held; ``rpc_status`` is the google.rpc code of the outcome.
        """
        self._history.append(record)
        job.queue.in_flight -= 1
        task = job.task
        if self._tasks.get(task.name) is not task:
            return  # deleted, purged or finished by another attempt while in flight
        task.running -= 1
        now = record.finished_at
        if task.last_attempt is not None:
            task.last_attempt.response_time = now
            task.last_attempt.status = (rpc_status, record.error or f"HTTP {record.status_code}")
        status = record.status_code
        # Cloud Tasks counts the attempts that got a response other than 5xx.
        if status is not None and not 500 <= status < 600:
            task.response_count += 1
        if record.succeeded:
            self._finish_task(task)
            return
        # A timed-out attempt is reported to the next one as 504, as production does.
        task.previous_response = 504 if record.error == "DEADLINE_EXCEEDED" else status
        if task.running:
            return  # a RunTask attempt is still out: its outcome decides
        policy = job.queue.retry
        if task.retry_config is not None:
            policy = task_retry_policy(policy, task.retry_config)
        first = task.first_dispatch_time if task.first_dispatch_time is not None else now
        if policy.exhausted(task.dispatch_count, now - first):
            logger.warning("task %s dropped after %d attempts", task.name, task.dispatch_count)
            self._finish_task(task)
            return
        delay = policy.backoff(task.dispatch_count)
        if status in (429, 503):
            delay = throttled_delay(delay, record.retry_after, policy)
        task.schedule_time = now + delay
        task.generation += 1
        job.queue.push(task)

    # -- inspection ---------------------------------------------------------------------

    def history(self) -> list[AttemptRecord]:
        """A snapshot of the attempts made so far, oldest first."""
        with self.cond:
            return list(self._history)

    def clear_history(self) -> None:
        """Forget the recorded attempts."""
        with self.cond:
            self._history.clear()

    def live_task_count(self) -> int:
        """How many tasks are scheduled or in flight, over all queues."""
        with self.cond:
            return len(self._tasks)
