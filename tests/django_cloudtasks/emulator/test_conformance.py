"""The emulator against Cloud Tasks: a table of expected behaviours, each with its source.

Every row is checked through the real ``google-cloud-tasks`` client against a running
emulator that delivers to a recording HTTP server. Sources are the Cloud Tasks v2
reference (:func:`reference`), its guides, and captures of production answers and
deliveries (:func:`capture`, the golden files of aertje/cloud-tasks-emulator's
conformance suite). The emulator's testing options
(sub-second backoffs, a cap on attempt deadlines, short tombstones) keep every row
within a few seconds; rows about those very limits use the defaults.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2

from django_cloudtasks.emulator import CloudTasksEmulator, EmulatorOptions, emulator_client
from tests.django_cloudtasks.emulator.recording import (
    LOCATION,
    RecordingHandler,
    Reply,
    http_task,
    make_queue,
    new_queue_name,
    wait_until,
)

#: The Cloud Tasks v2 RPC reference; a row cites the message or method it follows.
REFERENCE = "https://cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2"
#: The Cloud Tasks guides.
GUIDES = "https://cloud.google.com/tasks/docs"
#: Answers and deliveries of production Cloud Tasks, recorded by the conformance suite
#: of aertje/cloud-tasks-emulator.
CAPTURES = "https://github.com/aertje/cloud-tasks-emulator/tree/master/conformance/golden"


def reference(name: str) -> str:
    """The reference's entry for a message or method (``RetryConfig``, ``CloudTasks.RunTask``)."""
    return f"{REFERENCE}#google.cloud.tasks.v2.{name}"


def capture(golden: str, cases: str) -> str:
    """A production capture: a golden file and the cases in it."""
    return f"{CAPTURES}/{golden} ({cases})"


@dataclass
class World:
    """What a row needs: an emulator, its client and the recording handler."""

    handler: RecordingHandler
    request: pytest.FixtureRequest
    emulator: CloudTasksEmulator | None = None
    tasks_client: tasks_v2.CloudTasksClient | None = None

    def start(self, **options: Any) -> tasks_v2.CloudTasksClient:
        """Start the emulator of this row (sub-second backoffs kept unless told)."""
        emulator = CloudTasksEmulator(**{"subsecond_backoffs": True, **options}).start()
        tasks_client = emulator_client(emulator.address)
        self.request.addfinalizer(emulator.stop)
        self.request.addfinalizer(tasks_client.transport.close)
        self.emulator, self.tasks_client = emulator, tasks_client
        return tasks_client

    def queue(self, **limits: Any) -> str:
        """A fresh queue (``make_queue`` limits) on this row's emulator."""
        assert self.tasks_client is not None
        name = new_queue_name()
        make_queue(self.tasks_client, name, **limits)
        return name

    def task(self, queue: str, path: str = "/task", **http: Any) -> tasks_v2.Task:
        """Create a task delivered to ``path`` of the handler."""
        assert self.tasks_client is not None
        extra = {k: http.pop(k) for k in ("schedule_time", "dispatch_deadline") if k in http}
        return self.tasks_client.create_task(
            parent=queue, task={**http_task(self.handler.url(path), **http), **extra}
        )


@dataclass(frozen=True)
class Row:
    """One expected behaviour: what Cloud Tasks does, where that is said, and its check."""

    behaviour: str
    source: str
    check: Callable[[World], None]


def gaps(received: list[Any]) -> list[float]:
    """Seconds between one answer and the next request."""
    return [b.started - a.finished for a, b in itertools.pairwise(received)]


# -- delivery headers -------------------------------------------------------------------


def headers_follow_the_production_capture(world: World) -> None:
    world.start()
    queue = world.queue(min_backoff=0.05, max_backoff=0.2)
    answers = [503, 404, 429, 500, 302, 200]
    world.handler.script["/task"] = [Reply(status) for status in answers]
    world.task(queue)

    received = world.handler.wait_for(6, timeout=15)

    assert [r.header("X-CloudTasks-TaskRetryCount") for r in received] == [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    assert [r.header("X-CloudTasks-TaskExecutionCount") for r in received] == [
        "0",
        "0",
        "1",
        "2",
        "2",
        "3",
    ]
    assert [r.header("X-CloudTasks-TaskPreviousResponse") for r in received] == [
        None,
        "503",
        "404",
        "429",
        "500",
        "302",
    ]
    assert [r.header("X-CloudTasks-TaskRetryReason") for r in received] == [None] + [""] * 5


def a_timed_out_attempt_is_reported_as_504(world: World) -> None:
    world.start(dispatch_deadline_cap=0.3)
    queue = world.queue(min_backoff=0.05, max_backoff=0.05)
    world.handler.script["/task"] = [Reply(200, delay=1.0), Reply(200)]
    world.task(queue)

    assert wait_until(lambda: len(world.handler.received) >= 2, timeout=10)
    second = world.handler.received[1]
    assert second.header("X-CloudTasks-TaskPreviousResponse") == "504"
    assert second.header("X-CloudTasks-TaskExecutionCount") == "0"


def no_content_type_is_invented(world: World) -> None:
    world.start()
    world.task(world.queue(), body=b"raw")

    (received,) = world.handler.wait_for(1)
    assert received.header("Content-Type") is None
    assert received.header("User-Agent") == "Google-Cloud-Tasks"


def a_past_schedule_time_becomes_now(world: World) -> None:
    world.start()
    before = time.time()
    task = world.task(world.queue(), schedule_time=datetime.now(UTC) - timedelta(hours=2))

    assert task.schedule_time.timestamp() >= before - 0.01
    (received,) = world.handler.wait_for(1)
    assert float(received.header("X-CloudTasks-TaskETA") or 0) >= before - 0.01


# -- retries ------------------------------------------------------------------------------


def backoffs_double_from_min_backoff(world: World) -> None:
    world.start()
    queue = world.queue(min_backoff=0.1, max_backoff=10, max_doublings=4)
    world.handler.script["/task"] = [Reply(500), Reply(500), Reply(500), Reply(200)]
    world.task(queue)

    first, second, third = gaps(world.handler.wait_for(4, timeout=10))
    assert 0.09 <= first < 0.6
    assert 0.19 <= second < 0.8
    assert 0.39 <= third < 1.2


def backoffs_are_truncated_to_whole_seconds(world: World) -> None:
    tasks_client = world.start(subsecond_backoffs=False)
    queue = world.queue(min_backoff=1.5, max_backoff=2.7)

    retry = tasks_client.get_queue(name=queue).retry_config
    assert (retry.min_backoff, retry.max_backoff) == (timedelta(seconds=1), timedelta(seconds=2))
    default = tasks_client.get_queue(name=world.queue()).retry_config
    assert default.min_backoff == timedelta(seconds=0.1)


def throttled_answers_back_off_harder_and_honour_retry_after(world: World) -> None:
    world.start()
    queue = world.queue(min_backoff=0.1, max_backoff=5)
    world.handler.script["/task"] = [
        Reply(429, headers={"Retry-After": "1"}),
        Reply(503),
        Reply(200),
    ]
    world.task(queue)

    after_429, after_503 = gaps(world.handler.wait_for(3, timeout=10))
    assert after_429 >= 0.99  # Retry-After, not the 0.1 s backoff
    assert after_503 >= 0.39  # twice the 0.2 s backoff of a second retry


def a_task_retry_config_overrides_the_queues(world: World) -> None:
    tasks_client = world.start()
    queue = world.queue(min_backoff=0.05, max_backoff=0.05, max_attempts=10)
    world.handler.default = Reply(500)
    tasks_client.create_task(
        parent=queue,
        task={**http_task(world.handler.url()), "retry_config": {"max_attempts": 2}},
    )

    assert world.emulator is not None and world.emulator.wait_until_idle(10)
    time.sleep(0.2)
    assert len(world.handler.received) == 2


# -- rate and concurrency --------------------------------------------------------------


def the_rate_limit_spreads_dispatches(world: World) -> None:
    tasks_client = world.start()
    queue = world.queue(rate=5)
    assert tasks_client.get_queue(name=queue).rate_limits.max_burst_size == 5
    for _ in range(10):
        world.task(queue)

    starts = sorted(r.started for r in world.handler.wait_for(10, timeout=10))
    assert starts[-1] - starts[0] >= 0.9  # a burst of 5, then 5 a second


def the_default_burst_is_100(world: World) -> None:
    tasks_client = world.start()
    assert tasks_client.get_queue(name=world.queue()).rate_limits.max_burst_size == 100


def concurrency_is_capped_per_queue(world: World) -> None:
    world.start()
    queue = world.queue(concurrent=2)
    world.handler.default = Reply(200, delay=0.2)
    for _ in range(6):
        world.task(queue)

    assert len(world.handler.wait_for(6, timeout=10)) == 6
    assert world.handler.max_in_flight == 2


def the_emulator_caps_nothing_below_a_queues_concurrency(world: World) -> None:
    assert EmulatorOptions().max_in_flight is None
    tasks_client = world.start()
    queue = world.queue()
    tasks_client.pause_queue(name=queue)
    # Each answer waits until 250 are in flight at once (20 s at most): a cap at 200
    # would hold them all and fail the row.
    world.handler.default = Reply(200, delay=20, until_in_flight=250)
    for _ in range(300):
        world.task(queue)

    tasks_client.resume_queue(name=queue)  # all due at once: a burst of 100, then 500/s
    assert len(world.handler.wait_for(300, timeout=60)) == 300
    assert world.handler.max_in_flight >= 250


# -- names and queues -----------------------------------------------------------------


def a_task_on_a_missing_queue_is_not_found(world: World) -> None:
    tasks_client = world.start()
    missing = new_queue_name()
    with pytest.raises(exceptions.NotFound):
        tasks_client.create_task(parent=missing, task=http_task(world.handler.url()))
    with pytest.raises(exceptions.NotFound):
        list(tasks_client.list_tasks(parent=missing))
    queue = world.queue()
    tasks_client.delete_queue(name=queue)
    with pytest.raises(exceptions.NotFound):
        tasks_client.create_task(parent=queue, task=http_task(world.handler.url()))


def a_deleted_queue_name_stays_taken(world: World) -> None:
    tasks_client = world.start()
    queue = world.queue()
    tasks_client.delete_queue(name=queue)
    with pytest.raises(exceptions.FailedPrecondition):
        tasks_client.create_queue(parent=LOCATION, queue={"name": queue})
    assert EmulatorOptions().queue_tombstone_seconds == 3 * 24 * 3600

    tasks_client = world.start(queue_tombstone_seconds=0.2)
    queue = world.queue()
    tasks_client.delete_queue(name=queue)
    time.sleep(0.3)
    assert tasks_client.create_queue(parent=LOCATION, queue={"name": queue}).name == queue


def a_finished_task_name_stays_taken(world: World) -> None:
    tasks_client = world.start()
    task = world.task(world.queue())
    world.handler.wait_for(1)
    assert world.emulator is not None and world.emulator.wait_until_idle(5)
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_task(
            parent=task.name.split("/tasks/")[0], task={"name": task.name, **http_task("http://x/")}
        )
    assert EmulatorOptions().tombstone_seconds == 24 * 3600


def a_finished_task_is_not_found(world: World) -> None:
    tasks_client = world.start()
    task = world.task(world.queue())
    world.handler.wait_for(1)
    assert world.emulator is not None and world.emulator.wait_until_idle(5)
    for call in (tasks_client.get_task, tasks_client.delete_task, tasks_client.run_task):
        with pytest.raises(exceptions.NotFound):
            call(name=task.name)


def list_queues_filters_by_state(world: World) -> None:
    tasks_client = world.start()
    running, paused = world.queue(), world.queue()
    tasks_client.pause_queue(name=paused)
    location = running.rsplit("/queues/", 1)[0]

    def names(filter: str) -> list[str]:
        return [
            q.name for q in tasks_client.list_queues(request={"parent": location, "filter": filter})
        ]

    assert names("state: PAUSED") == [paused]
    assert names("state = RUNNING") == [running]
    with pytest.raises(exceptions.InvalidArgument):
        names("rate_limits.max_burst_size > 3")


def project_ids_are_validated(world: World) -> None:
    tasks_client = world.start()
    for project in ("Upper-Case", "ab", "1starts-with-digit", "ends-with-"):
        with pytest.raises(exceptions.InvalidArgument):
            tasks_client.create_queue(
                parent=f"projects/{project}/locations/us-central1",
                queue={"name": f"projects/{project}/locations/us-central1/queues/q"},
            )


# -- limits ---------------------------------------------------------------------------


def limits_are_refused_at_create_task(world: World) -> None:
    tasks_client = world.start()
    queue = world.queue()
    later = datetime.now(UTC) + timedelta(hours=1)

    def create(**fields: Any) -> tasks_v2.Task:
        http = fields.pop("http", {})
        task = {**http_task("http://127.0.0.1:9/", **http), "schedule_time": later, **fields}
        return tasks_client.create_task(parent=queue, task=task)

    refused = [
        {"http": {"body": b"x" * 101 * 1024}},
        {"schedule_time": datetime.now(UTC) + timedelta(days=31)},
        {"dispatch_deadline": timedelta(seconds=14)},
        {"dispatch_deadline": timedelta(minutes=30, seconds=1)},
        {"http": {"headers": {"X-Big": "x" * 81 * 1024}}},
        *(
            {"http": {"http_method": method, "body": b"x"}}
            for method in ("GET", "HEAD", "DELETE", "OPTIONS")
        ),
    ]
    for fields in refused:
        with pytest.raises(exceptions.InvalidArgument):
            create(**fields)
    assert create(dispatch_deadline=timedelta(seconds=15)).dispatch_deadline == timedelta(
        seconds=15
    )
    assert create(dispatch_deadline=timedelta(minutes=30)).name
    assert create(http={"http_method": "GET"}).name


# -- queue overrides ----------------------------------------------------------------------


def queue_http_target_overrides_apply_to_deliveries(world: World) -> None:
    tasks_client = world.start()
    queue = new_queue_name()
    tasks_client.create_queue(
        parent=LOCATION,
        queue={
            "name": queue,
            "http_target": {
                "uri_override": {
                    "path_override": {"path": "/override"},
                    "query_override": {"query_params": "from=queue"},
                },
                "http_method": "PUT",
                "header_overrides": [{"header": {"key": "X-Queue", "value": "yes"}}],
                "oidc_token": {"service_account_email": "q@test-project.iam.gserviceaccount.com"},
            },
        },
    )
    world.task(queue, "/task?from=task", headers={"X-Queue": "no"}, body=b"b")

    (received,) = world.handler.wait_for(1)
    assert received.path == "/override?from=queue"
    assert received.method == "PUT"
    assert received.header("X-Queue") == "yes"
    assert (received.header("Authorization") or "").startswith("Bearer ey")


def a_queue_overrides_host_port_and_the_token(world: World) -> None:
    tasks_client = world.start()
    queue = new_queue_name()
    port = int(world.handler.url().rsplit(":", 1)[1].split("/", 1)[0])
    tasks_client.create_queue(
        parent=LOCATION,
        queue={
            "name": queue,
            "http_target": {
                "uri_override": {"scheme": "HTTP", "host": "127.0.0.1", "port": port},
                "oauth_token": {"service_account_email": "q@test-project.iam.gserviceaccount.com"},
            },
        },
    )
    tasks_client.create_task(
        parent=queue,
        task=http_task(
            "https://unreachable.invalid:9/elsewhere",
            oidc_token={"service_account_email": "t@test-project.iam.gserviceaccount.com"},
        ),
    )

    (received,) = world.handler.wait_for(1)
    assert received.path == "/elsewhere"
    authorization = received.header("Authorization") or ""
    assert authorization.startswith("Bearer ") and "q@test-project" in authorization


def if_not_exists_overrides_only_what_the_task_lacks(world: World) -> None:
    tasks_client = world.start()
    queue = new_queue_name()
    tasks_client.create_queue(
        parent=LOCATION,
        queue={
            "name": queue,
            "http_target": {
                "uri_override": {
                    "path_override": {"path": "/from-queue"},
                    "query_override": {"query_params": "q=1"},
                    "uri_override_enforce_mode": "IF_NOT_EXISTS",
                },
            },
        },
    )
    world.task(queue, "/own")

    (received,) = world.handler.wait_for(1)
    assert received.path == "/own?q=1"


# -- views and RunTask --------------------------------------------------------------------


def the_basic_view_omits_the_body(world: World) -> None:
    tasks_client = world.start()
    later = datetime.now(UTC) + timedelta(hours=1)
    task = world.task(world.queue(), body=b"secret", schedule_time=later)
    full = tasks_client.get_task(request={"name": task.name, "response_view": "FULL"})
    assert (task.http_request.body, full.http_request.body) == (b"", b"secret")


def run_task_dispatches_a_running_task_again(world: World) -> None:
    tasks_client = world.start()
    world.handler.script["/task"] = [Reply(200, delay=1.0), Reply(200)]
    task = world.task(world.queue())
    assert wait_until(lambda: len(world.handler.received) == 1, timeout=5)

    tasks_client.run_task(name=task.name)

    assert len(world.handler.wait_for(2, timeout=5)) == 2


TABLE = [
    Row(
        "headers per attempt for 503,404,429,500,302,200",
        capture("dispatch.json", "dispatch/http"),
        headers_follow_the_production_capture,
    ),
    Row(
        "a timed-out attempt is reported as 504",
        capture("dispatch.json", "dispatch/http-timeout"),
        a_timed_out_attempt_is_reported_as_504,
    ),
    Row(
        "HttpRequest.headers: Content-Type is not set by Cloud Tasks",
        reference("HttpRequest"),
        no_content_type_is_invented,
    ),
    Row(
        "CreateTask: a past schedule_time is set to now",
        reference("CreateTaskRequest"),
        a_past_schedule_time_becomes_now,
    ),
    Row(
        "RetryConfig.max_doublings: the backoff doubles",
        reference("RetryConfig"),
        backoffs_double_from_min_backoff,
    ),
    Row(
        "RetryConfig.min_backoff: truncated to the second",
        reference("RetryConfig"),
        backoffs_are_truncated_to_whole_seconds,
    ),
    Row(
        "HttpTarget: 429/503 back off harder, Retry-After",
        reference("HttpTarget"),
        throttled_answers_back_off_harder_and_honour_retry_after,
    ),
    Row(
        "Task.retry_config overrides the queue's",
        reference("Task"),
        a_task_retry_config_overrides_the_queues,
    ),
    Row(
        "RateLimits.max_dispatches_per_second",
        reference("RateLimits"),
        the_rate_limit_spreads_dispatches,
    ),
    Row(
        "RateLimits.max_burst_size: 100 for the default rate",
        f"{GUIDES}/creating-queues (the queue gcloud describes)",
        the_default_burst_is_100,
    ),
    Row(
        "RateLimits.max_concurrent_dispatches",
        reference("RateLimits"),
        concurrency_is_capped_per_queue,
    ),
    Row(
        "RateLimits: default concurrency 1,000 is not capped lower",
        f"{GUIDES}/creating-queues (the queue gcloud describes)",
        the_emulator_caps_nothing_below_a_queues_concurrency,
    ),
    Row(
        "CreateTask, ListTasks: NOT_FOUND for a missing or deleted queue",
        capture(
            "realcloud.json", "task/create/queue-not-found, task/create/queue-recently-deleted"
        ),
        a_task_on_a_missing_queue_is_not_found,
    ),
    Row(
        "DeleteQueue: the name is taken for up to 3 days",
        reference("CloudTasks.DeleteQueue")
        + "; "
        + capture("realcloud.json", "queue/create/recently-deleted"),
        a_deleted_queue_name_stays_taken,
    ),
    Row(
        "CreateTaskRequest.task: a finished task's name stays taken up to 24 h",
        reference("CreateTaskRequest"),
        a_finished_task_name_stays_taken,
    ),
    Row(
        "GetTask, DeleteTask, RunTask: NOT_FOUND once a task finished",
        capture("realcloud.json", "task/get/recently-deleted, task/delete/not-found"),
        a_finished_task_is_not_found,
    ),
    Row(
        "ListQueuesRequest.filter: state",
        reference("ListQueuesRequest"),
        list_queues_filters_by_state,
    ),
    Row("Queue.name: PROJECT_ID is validated", reference("Queue"), project_ids_are_validated),
    Row(
        "CreateTask limits: size, schedule, deadline, headers, body",
        f"{reference('CloudTasks.CreateTask')}; {reference('Task')}; {reference('HttpRequest')}",
        limits_are_refused_at_create_task,
    ),
    Row(
        "Queue.http_target overrides every task",
        reference("HttpTarget"),
        queue_http_target_overrides_apply_to_deliveries,
    ),
    Row(
        "UriOverride scheme, host, port; the queue's oauth_token replaces the task's token",
        reference("UriOverride") + "; " + reference("HttpTarget"),
        a_queue_overrides_host_port_and_the_token,
    ),
    Row(
        "UriOverride IF_NOT_EXISTS",
        reference("UriOverride"),
        if_not_exists_overrides_only_what_the_task_lacks,
    ),
    Row("Task.View: BASIC omits the body", reference("Task.View"), the_basic_view_omits_the_body),
    Row(
        "RunTask: dispatches even a running task",
        reference("CloudTasks.RunTask"),
        run_task_dispatches_a_running_task_again,
    ),
]


@pytest.fixture
def world(request: pytest.FixtureRequest, handler: RecordingHandler) -> Iterator[World]:
    """A row's world; its emulators stop at teardown."""
    yield World(handler=handler, request=request)


def test_every_row_cites_where_cloud_tasks_says_or_shows_it() -> None:
    for row in TABLE:
        assert row.source.startswith((REFERENCE, GUIDES, CAPTURES)), row.behaviour
    assert len({row.behaviour for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("row", TABLE, ids=[row.behaviour for row in TABLE])
def test_the_emulator_behaves_like_cloud_tasks(row: Row, world: World) -> None:
    row.check(world)
