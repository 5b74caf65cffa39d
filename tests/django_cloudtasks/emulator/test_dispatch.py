"""HTTP delivery: schedule times, headers, retries with backoff, rate and concurrency limits."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions

from django_cloudtasks.emulator import CloudTasksEmulator, emulator_client
from tests.django_cloudtasks.emulator.recording import (
    RecordingHandler,
    Reply,
    http_task,
    make_queue,
    new_queue_name,
    wait_until,
)


def test_a_task_is_delivered_with_its_method_headers_and_body(
    tasks_client, handler: RecordingHandler, queue
):
    tasks_client.create_task(
        parent=queue,
        task=http_task(
            handler.url("/run/x"),
            http_method="PUT",
            headers={"Content-Type": "application/json", "Authorization": "Bearer shared"},
            body=b'{"a": 1}',
        ),
    )

    (received,) = handler.wait_for(1)

    assert received.method == "PUT"
    assert received.path == "/run/x"
    assert received.body == b'{"a": 1}'
    assert received.header("Content-Type") == "application/json"
    assert received.header("Authorization") == "Bearer shared"
    assert received.header("User-Agent") == "Google-Cloud-Tasks"


def test_a_task_scheduled_one_second_ahead_is_not_delivered_before_its_time(
    tasks_client, handler: RecordingHandler, queue
):
    eta = datetime.now(UTC) + timedelta(seconds=1)
    tasks_client.create_task(parent=queue, task={**http_task(handler.url()), "schedule_time": eta})

    time.sleep(0.5)
    assert handler.received == []
    (received,) = handler.wait_for(1, timeout=5)
    assert received.started >= eta.timestamp() - 0.01
    assert float(received.header("X-CloudTasks-TaskETA") or 0) == pytest.approx(eta.timestamp())


def test_retries_carry_the_production_headers_with_growing_counts(
    tasks_client, handler: RecordingHandler, queue_name
):
    make_queue(tasks_client, queue_name, min_backoff=0.05, max_backoff=1)
    handler.script["/task"] = [Reply(500), Reply(503), Reply(200)]
    task = tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    received = handler.wait_for(3)

    short_id = task.name.rsplit("/", 1)[1]
    assert [r.header("X-CloudTasks-QueueName") for r in received] == [queue_name.split("/")[-1]] * 3
    assert [r.header("X-CloudTasks-TaskName") for r in received] == [short_id] * 3
    assert [r.header("X-CloudTasks-TaskRetryCount") for r in received] == ["0", "1", "2"]
    # 5xx answers are not executions: Cloud Tasks counts the other responses
    assert [r.header("X-CloudTasks-TaskExecutionCount") for r in received] == ["0", "0", "0"]
    assert [r.header("X-CloudTasks-TaskPreviousResponse") for r in received] == [
        None,
        "500",
        "503",
    ]
    etas = [float(r.header("X-CloudTasks-TaskETA") or 0) for r in received]
    assert etas[0] == pytest.approx(task.schedule_time.timestamp())
    assert etas[0] < etas[1] < etas[2]


def test_failed_attempts_are_retried_with_a_growing_backoff(
    tasks_client, emulator, handler: RecordingHandler, queue_name
):
    make_queue(tasks_client, queue_name, min_backoff=0.2, max_backoff=10, max_attempts=5)
    handler.script["/task"] = [Reply(500), Reply(500), Reply(200)]
    tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    received = handler.wait_for(3, timeout=10)
    assert emulator.wait_until_idle(5)

    first_gap = received[1].started - received[0].finished
    second_gap = received[2].started - received[1].finished
    assert 0.19 <= first_gap < 2.0
    assert 0.39 <= second_gap < 3.0
    assert second_gap > first_gap
    assert [(a.attempt, a.status_code) for a in emulator.history] == [(1, 500), (2, 500), (3, 200)]


def test_a_task_is_dropped_after_max_attempts(
    tasks_client, emulator, handler: RecordingHandler, queue_name
):
    make_queue(tasks_client, queue_name, min_backoff=0.05, max_backoff=0.1, max_attempts=3)
    handler.default = Reply(500)
    task = tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    assert emulator.wait_until_idle(10)
    time.sleep(0.3)

    assert len(handler.received) == 3
    with pytest.raises(exceptions.NotFound):
        tasks_client.get_task(name=task.name)
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_task(parent=queue_name, task=http_task(handler.url(), name=task.name))


def test_get_task_reports_the_attempts_made(tasks_client, handler: RecordingHandler, queue_name):
    make_queue(tasks_client, queue_name, min_backoff=5, max_backoff=5)
    handler.default = Reply(404)
    task = tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))
    handler.wait_for(1)

    assert wait_until(lambda: tasks_client.get_task(name=task.name).response_count == 1)
    got = tasks_client.get_task(name=task.name)
    assert got.dispatch_count == 1
    assert got.first_attempt.dispatch_time is not None
    assert got.last_attempt.response_status.code == 5  # NOT_FOUND
    assert got.schedule_time.timestamp() > task.schedule_time.timestamp() + 4


def test_the_dispatch_deadline_is_the_http_timeout(
    request: pytest.FixtureRequest, handler: RecordingHandler, queue_name
):
    emulator = CloudTasksEmulator(subsecond_backoffs=True, dispatch_deadline_cap=1).start()
    tasks_client = emulator_client(emulator.address)
    request.addfinalizer(lambda: (tasks_client.transport.close(), emulator.stop()))
    make_queue(tasks_client, queue_name, min_backoff=0.1, max_backoff=0.1)
    handler.script["/task"] = [Reply(200, delay=2.5), Reply(200)]
    tasks_client.create_task(
        parent=queue_name,
        task={**http_task(handler.url()), "dispatch_deadline": timedelta(seconds=15)},
    )

    assert wait_until(lambda: len(emulator.history) >= 2, timeout=10)
    first, second = emulator.history[:2]

    assert first.status_code is None
    assert first.error == "DEADLINE_EXCEEDED"
    assert 0.9 <= first.finished_at - first.started_at < 2.0
    assert second.succeeded
    assert second.headers["X-CloudTasks-TaskRetryCount"] == "1"
    assert second.headers["X-CloudTasks-TaskExecutionCount"] == "0"


def test_an_unreachable_handler_counts_as_a_failure(tasks_client, emulator, queue_name):
    make_queue(tasks_client, queue_name, min_backoff=0.05, max_backoff=0.05, max_attempts=2)
    tasks_client.create_task(parent=queue_name, task=http_task("http://127.0.0.1:9/refused"))

    assert emulator.wait_until_idle(10)
    attempts = emulator.history
    assert [a.attempt for a in attempts] == [1, 2]
    assert all(a.status_code is None and a.error for a in attempts)


def test_dispatches_respect_max_dispatches_per_second(
    tasks_client, handler: RecordingHandler, queue_name
):
    make_queue(tasks_client, queue_name, rate=5)
    for _ in range(20):
        tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    received = handler.wait_for(20, timeout=15)
    starts = sorted(r.started for r in received)

    assert len(starts) == 20
    assert starts[-1] - starts[0] >= 2.8  # 5 at once (the burst), then 5 a second
    assert starts[-1] - starts[0] < 8


def test_dispatches_respect_max_concurrent_dispatches(
    tasks_client, handler: RecordingHandler, queue_name
):
    make_queue(tasks_client, queue_name, concurrent=3)
    handler.default = Reply(200, delay=0.3)
    for _ in range(9):
        tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    assert len(handler.wait_for(9, timeout=15)) == 9
    assert 2 <= handler.max_in_flight <= 3


def test_a_fan_out_of_a_thousand_tasks_is_delivered_concurrently(
    tasks_client, emulator, handler: RecordingHandler, queue
):
    handler.default = Reply(200, delay=0.05)
    url = handler.url()

    def create(i: int) -> None:
        tasks_client.create_task(parent=queue, task=http_task(url, body=b"%d" % i))

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(1000)))
    received = handler.wait_for(1000, timeout=40)
    elapsed = time.monotonic() - started

    assert len(received) == 1000
    assert len({r.body for r in received}) == 1000
    assert handler.max_in_flight >= 10
    assert elapsed < 30  # serially it would take at least 50 s
    assert emulator.wait_until_idle(10)


def test_a_failed_delivery_is_logged_with_its_url_status_and_body(
    tasks_client, handler: RecordingHandler, queue_name, caplog
):
    make_queue(tasks_client, queue_name, min_backoff=5, max_backoff=5)
    handler.default = Reply(500, body=b"Traceback: KeyError 'user'")
    with caplog.at_level(logging.WARNING, logger="django_cloudtasks.emulator"):
        tasks_client.create_task(parent=queue_name, task=http_task(handler.url("/run/x")))
        handler.wait_for(1)
        assert wait_until(lambda: "delivery failed" in caplog.text, timeout=5)

    assert f"POST {handler.url('/run/x')} -> 500" in caplog.text
    assert "Traceback: KeyError 'user'" in caplog.text


def test_max_in_flight_caps_deliveries_over_all_queues(handler: RecordingHandler, request):
    emulator = CloudTasksEmulator(max_in_flight=3).start()
    tasks_client = emulator_client(emulator.address)
    request.addfinalizer(lambda: (tasks_client.transport.close(), emulator.stop()))
    handler.default = Reply(200, delay=0.2)
    queues = [new_queue_name() for _ in range(3)]
    for queue in queues:
        make_queue(tasks_client, queue)
        for _ in range(4):
            tasks_client.create_task(parent=queue, task=http_task(handler.url()))

    assert len(handler.wait_for(12, timeout=10)) == 12
    assert handler.max_in_flight == 3
