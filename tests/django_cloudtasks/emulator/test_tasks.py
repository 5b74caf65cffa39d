"""Task RPCs through the real client: names, deduplication, limits, views, get/list/delete/run."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2

from django_cloudtasks.emulator import CloudTasksEmulator, emulator_client
from tests.django_cloudtasks.emulator.recording import (
    LOCATION,
    RecordingHandler,
    http_task,
    wait_until,
)

LATER = timedelta(hours=1)


def later(delta: timedelta = LATER) -> datetime:
    """A schedule time ``delta`` from now."""
    return datetime.now(UTC) + delta


def test_a_task_without_a_name_gets_a_server_assigned_id(tasks_client, queue):
    task = tasks_client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/"))

    assert task.name.startswith(queue + "/tasks/")
    assert task.name.rsplit("/", 1)[1].isdigit()
    assert task.create_time is not None
    assert task.schedule_time is not None
    assert task.dispatch_count == 0
    assert task.dispatch_deadline == timedelta(minutes=10)


@pytest.mark.parametrize(
    "task_id", ["has space", "dot.ted", "x" * 501, "slash/ed", "ünïcode"], ids=repr
)
def test_malformed_task_names_are_refused(tasks_client, queue, task_id):
    with pytest.raises(exceptions.InvalidArgument):
        tasks_client.create_task(
            parent=queue, task=http_task("http://x/", name=f"{queue}/tasks/{task_id}")
        )


def test_a_task_id_may_use_letters_digits_hyphens_underscores_up_to_500(tasks_client, queue):
    name = f"{queue}/tasks/Ab-1_" + "z" * 495
    task = tasks_client.create_task(
        parent=queue, task={**http_task("http://x/", name=name), "schedule_time": later()}
    )
    assert task.name == name


def test_a_task_named_in_another_queue_is_refused(tasks_client, queue):
    other = f"{LOCATION}/queues/other/tasks/t1"
    with pytest.raises(exceptions.InvalidArgument):
        tasks_client.create_task(parent=queue, task=http_task("http://x/", name=other))


def test_a_live_task_name_cannot_be_reused(tasks_client, queue):
    task = {**http_task("http://x/", name=f"{queue}/tasks/once"), "schedule_time": later()}
    tasks_client.create_task(parent=queue, task=task)
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_task(parent=queue, task=task)


def test_a_completed_task_name_cannot_be_reused(
    tasks_client, emulator, handler: RecordingHandler, queue
):
    task = http_task(handler.url(), name=f"{queue}/tasks/done")
    tasks_client.create_task(parent=queue, task=task)
    handler.wait_for(1)
    assert emulator.wait_until_idle(5)

    with pytest.raises(exceptions.NotFound):
        tasks_client.get_task(name=task["name"])
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_task(parent=queue, task=task)


def test_a_deleted_task_name_cannot_be_reused(tasks_client, queue):
    task = {**http_task("http://x/", name=f"{queue}/tasks/gone"), "schedule_time": later()}
    tasks_client.create_task(parent=queue, task=task)
    tasks_client.delete_task(name=task["name"])
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_task(parent=queue, task=task)


def test_a_task_name_is_free_again_after_the_tombstone_window(queue_name):
    with CloudTasksEmulator(tombstone_seconds=0.3, queues=[queue_name]) as emulator:
        tasks_client = emulator_client(emulator.address)
        try:
            name = f"{queue_name}/tasks/again"
            task = {**http_task("http://x/", name=name), "schedule_time": later()}
            tasks_client.create_task(parent=queue_name, task=task)
            tasks_client.delete_task(name=name)
            time.sleep(0.4)
            assert tasks_client.create_task(parent=queue_name, task=task).name == name
        finally:
            tasks_client.transport.close()


def test_a_schedule_time_more_than_30_days_ahead_is_refused(tasks_client, queue):
    task = {**http_task("http://x/"), "schedule_time": later(timedelta(days=30, minutes=5))}
    with pytest.raises(exceptions.InvalidArgument):
        tasks_client.create_task(parent=queue, task=task)

    task["schedule_time"] = later(timedelta(days=29))
    assert tasks_client.create_task(parent=queue, task=task).name


def test_a_task_over_100_kb_is_refused(tasks_client, queue):
    with pytest.raises(exceptions.InvalidArgument, match="size"):
        tasks_client.create_task(parent=queue, task=http_task("http://x/", body=b"x" * 101 * 1024))

    small = {**http_task("http://x/", body=b"x" * 99 * 1024), "schedule_time": later()}
    assert tasks_client.create_task(parent=queue, task=small).name


def test_a_task_needs_an_http_url(tasks_client, queue):
    with pytest.raises(exceptions.InvalidArgument):
        tasks_client.create_task(parent=queue, task=http_task("ftp://example.com/"))


def test_app_engine_targets_are_not_implemented(tasks_client, queue):
    with pytest.raises(exceptions.MethodNotImplemented):
        tasks_client.create_task(
            parent=queue, task={"app_engine_http_request": {"relative_uri": "/x"}}
        )


def test_the_basic_view_omits_the_body_and_the_full_view_keeps_it(tasks_client, queue):
    task = {**http_task("http://x/", body=b"secret"), "schedule_time": later()}
    basic = tasks_client.create_task(parent=queue, task=task)
    full = tasks_client.get_task(
        request={"name": basic.name, "response_view": tasks_v2.Task.View.FULL}
    )

    assert basic.view == tasks_v2.Task.View.BASIC
    assert basic.http_request.body == b""
    assert full.view == tasks_v2.Task.View.FULL
    assert full.http_request.body == b"secret"
    assert tasks_client.get_task(name=basic.name).http_request.body == b""


def test_get_task_returns_what_was_created(tasks_client, queue):
    when = later()
    created = tasks_client.create_task(
        parent=queue,
        task={
            **http_task("http://x/run", headers={"X-Custom": "1"}, http_method="PUT"),
            "schedule_time": when,
            "dispatch_deadline": timedelta(seconds=30),
        },
    )
    got = tasks_client.get_task(name=created.name)

    assert got == created
    assert got.http_request.headers["X-Custom"] == "1"
    assert got.http_request.http_method == tasks_v2.HttpMethod.PUT
    assert abs(got.schedule_time.timestamp() - when.timestamp()) < 0.001
    assert got.dispatch_deadline == timedelta(seconds=30)


def test_list_tasks_pages_through_the_live_tasks_of_a_queue(tasks_client, queue):
    names = [
        tasks_client.create_task(
            parent=queue, task={**http_task("http://x/"), "schedule_time": later()}
        ).name
        for _ in range(7)
    ]
    tasks_client.create_queue(parent=LOCATION, queue={"name": f"{LOCATION}/queues/elsewhere"})
    tasks_client.create_task(
        parent=f"{LOCATION}/queues/elsewhere",
        task={**http_task("http://x/"), "schedule_time": later()},
    )

    pager = tasks_client.list_tasks(request={"parent": queue, "page_size": 3})
    pages = list(pager.pages)

    assert [len(page.tasks) for page in pages] == [3, 3, 1]
    assert sorted(t.name for page in pages for t in page.tasks) == sorted(names)


def test_deleting_a_pending_task_prevents_its_delivery(
    tasks_client, handler: RecordingHandler, queue
):
    task = tasks_client.create_task(
        parent=queue,
        task={**http_task(handler.url()), "schedule_time": later(timedelta(seconds=0.5))},
    )
    tasks_client.delete_task(name=task.name)

    time.sleep(1.0)
    assert handler.received == []
    with pytest.raises(exceptions.NotFound):
        tasks_client.get_task(name=task.name)
    with pytest.raises(exceptions.NotFound):
        tasks_client.delete_task(name=task.name)


def test_deleting_a_completed_task_answers_not_found(
    tasks_client, emulator, handler: RecordingHandler, queue
):
    task = tasks_client.create_task(parent=queue, task=http_task(handler.url()))
    handler.wait_for(1)
    assert emulator.wait_until_idle(5)
    with pytest.raises(exceptions.NotFound):
        tasks_client.delete_task(name=task.name)


def test_run_task_dispatches_a_task_scheduled_later_at_once(
    tasks_client, handler: RecordingHandler, queue
):
    task = tasks_client.create_task(
        parent=queue, task={**http_task(handler.url()), "schedule_time": later()}
    )

    returned = tasks_client.run_task(name=task.name)

    assert returned.name == task.name
    assert len(handler.wait_for(1, timeout=5)) == 1
    assert wait_until(lambda: not list(tasks_client.list_tasks(parent=queue)))


def test_run_task_dispatches_even_when_the_queue_is_paused(
    tasks_client, handler: RecordingHandler, queue_name
):
    tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})
    tasks_client.pause_queue(name=queue_name)
    task = tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))
    time.sleep(0.2)
    assert handler.received == []

    tasks_client.run_task(name=task.name)

    assert len(handler.wait_for(1, timeout=5)) == 1


def test_run_task_on_an_unknown_task_answers_not_found(tasks_client, queue):
    with pytest.raises(exceptions.NotFound):
        tasks_client.run_task(name=f"{queue}/tasks/nope")
