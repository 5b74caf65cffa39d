"""A task's HTTP request: CreateTask's checks of a new task, and each attempt's request.

Both follow Cloud Tasks' documented limits (task and header sizes, schedule horizon,
dispatch deadline) and the headers production adds to every attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import tasks_v2

from .errors import EmulatorError, invalid
from .names import is_queue_name, parse_task_name
from .queue_config import validated_retry
from .records import AttemptTimes, Dispatch, TaskRecord

MAX_TASK_SIZE = 100 * 1024
MAX_HEADERS_SIZE = 80 * 1024
MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0
DEFAULT_DISPATCH_DEADLINE = 600.0
MIN_DISPATCH_DEADLINE = 15.0
MAX_DISPATCH_DEADLINE = 1800.0

#: Methods whose requests carry no body: CreateTask refuses a body with them.
_BODILESS = {
    tasks_v2.HttpMethod.GET,
    tasks_v2.HttpMethod.HEAD,
    tasks_v2.HttpMethod.DELETE,
    tasks_v2.HttpMethod.OPTIONS,
}

_HTTP_METHODS = {
    tasks_v2.HttpMethod.HTTP_METHOD_UNSPECIFIED: "POST",
    tasks_v2.HttpMethod.POST: "POST",
    tasks_v2.HttpMethod.GET: "GET",
    tasks_v2.HttpMethod.HEAD: "HEAD",
    tasks_v2.HttpMethod.PUT: "PUT",
    tasks_v2.HttpMethod.DELETE: "DELETE",
    tasks_v2.HttpMethod.PATCH: "PATCH",
    tasks_v2.HttpMethod.OPTIONS: "OPTIONS",
}


def set_header(headers: dict[str, str], name: str, value: str) -> None:
    """Set ``name`` in ``headers``, replacing any spelling of it (headers are caseless)."""
    for key in [key for key in headers if key.lower() == name.lower()]:
        del headers[key]
    headers[name] = value


@dataclass(frozen=True)
class NewTask:
    """A CreateTask request that passed the checks, with its defaults filled in."""

    name: str  # empty: the emulator picks one
    http_request: Any  # a copy of the request's HttpRequest protobuf
    schedule_time: float
    create_time: float
    dispatch_deadline: float
    retry_config: Any  # the task's own RetryConfig, or None


def checked_task(
    parent: str, task: tasks_v2.Task, subsecond_backoffs: bool, clock: Callable[[], float]
) -> NewTask:
    """Check a CreateTask request for ``parent``; ``clock`` gives its create time.

    A ``schedule_time`` in the past becomes now.

    Raises:
        EmulatorError: INVALID_ARGUMENT (bad name, name in another queue, schedule
            more than 30 days ahead, task over 100 KB, headers over 80 KB, a body
            with GET/HEAD/DELETE/OPTIONS, bad URL, deadline outside 15 s - 30 min);
            UNIMPLEMENTED for App Engine targets.
    """
    if not is_queue_name(parent):
        raise invalid(f"invalid parent queue name: {parent!r}")
    pb = tasks_v2.Task.pb(task)  # read through the protobuf: proto-plus reads are slow
    if pb.HasField("app_engine_http_request"):
        raise EmulatorError(
            grpc.StatusCode.UNIMPLEMENTED, "the emulator only dispatches HTTP targets"
        )
    if not pb.HasField("http_request"):
        raise invalid("the task needs an http_request")
    size = pb.ByteSize()
    if size > MAX_TASK_SIZE:
        raise invalid(f"Task size too large: {size} bytes (at most {MAX_TASK_SIZE})")
    url = pb.http_request.url
    if not (url.startswith("http://") or url.startswith("https://")) or len(url) > 2083:
        raise invalid(f"invalid http_request.url: {url!r}")
    if pb.http_request.body and pb.http_request.http_method in _BODILESS:
        method = _HTTP_METHODS[pb.http_request.http_method]
        raise invalid(f"a {method} request cannot have a body")
    headers_size = sum(len(k) + len(v) for k, v in pb.http_request.headers.items())
    if headers_size > MAX_HEADERS_SIZE:
        raise invalid(f"headers too large: {headers_size} bytes (at most {MAX_HEADERS_SIZE})")
    task_retry = None
    if pb.HasField("retry_config"):
        task_retry = validated_retry(task.retry_config, subsecond_backoffs)
    if pb.name:
        parsed = parse_task_name(pb.name)
        if parsed is None:
            raise invalid(f"invalid task name: {pb.name!r}")
        if parsed.queue != parent:
            raise invalid(f"task name {pb.name!r} is not a task of queue {parent}")
    deadline = DEFAULT_DISPATCH_DEADLINE
    if pb.HasField("dispatch_deadline"):
        deadline = pb.dispatch_deadline.ToTimedelta().total_seconds()
        if not MIN_DISPATCH_DEADLINE <= deadline <= MAX_DISPATCH_DEADLINE:
            raise invalid("dispatch_deadline must be between 15 seconds and 30 minutes")
    now = clock()
    schedule_time = now
    if pb.HasField("schedule_time"):
        schedule_time = max(now, pb.schedule_time.seconds + pb.schedule_time.nanos / 1e9)
        if schedule_time > now + MAX_SCHEDULE_AHEAD:
            raise invalid("schedule_time must be at most 30 days in the future")
    http_request = type(pb.http_request)()
    http_request.CopyFrom(pb.http_request)

    return NewTask(
        name=pb.name,
        http_request=http_request,
        schedule_time=schedule_time,
        create_time=now,
        dispatch_deadline=deadline,
        retry_config=task_retry,
    )


def start_attempt(task: TaskRecord, now: float) -> Dispatch:
    """Start an attempt of ``task`` at ``now``: count it, and build its HTTP request.

    The request carries the headers Cloud Tasks adds (queue and task names, retry and
    execution counts, ETA, the previous response on a retry) and the queue's overrides.
    Call with the state's lock held.
    """
    queue = task.queue
    target = queue.override.apply(task.target) if queue.override else task.target
    headers = dict(target.headers)
    set_header(headers, "User-Agent", "Google-Cloud-Tasks")
    set_header(headers, "X-CloudTasks-QueueName", queue.short_id)
    set_header(headers, "X-CloudTasks-TaskName", task.short_id)
    set_header(headers, "X-CloudTasks-TaskRetryCount", str(task.dispatch_count))
    set_header(headers, "X-CloudTasks-TaskExecutionCount", str(task.response_count))
    set_header(headers, "X-CloudTasks-TaskETA", f"{task.schedule_time:.6f}")
    if task.dispatch_count:
        if task.previous_response is not None:
            set_header(headers, "X-CloudTasks-TaskPreviousResponse", str(task.previous_response))
        # Production sends it, empty.
        set_header(headers, "X-CloudTasks-TaskRetryReason", "")
    task.running += 1
    task.dispatch_count += 1
    if task.first_dispatch_time is None:
        task.first_dispatch_time = now
    task.last_attempt = AttemptTimes(schedule_time=task.schedule_time, dispatch_time=now)
    queue.in_flight += 1
    method = _HTTP_METHODS.get(target.method, "POST")
    return Dispatch(
        task=task,
        queue=queue,
        attempt=task.dispatch_count,
        url=target.url,
        method=method,
        headers=headers,
        body=b"" if target.method in _BODILESS else target.body,
        timeout=task.dispatch_deadline,
        oidc_email=target.oidc_email,
        oidc_audience=target.oidc_audience,
        oauth_email=target.oauth_email,
    )
