"""Queue RPCs through the real client: create, get, list, update, pause, resume, purge, delete."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from django_cloudtasks.emulator import CloudTasksEmulator, emulator_client
from tests.django_cloudtasks.emulator.recording import (
    LOCATION,
    RecordingHandler,
    http_task,
    make_queue,
)


def test_a_created_queue_runs_with_the_service_defaults(tasks_client, queue_name):
    created = tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})

    assert created.name == queue_name
    assert created.state == tasks_v2.Queue.State.RUNNING
    assert created.rate_limits.max_dispatches_per_second == 500
    assert created.rate_limits.max_concurrent_dispatches == 1000
    assert created.rate_limits.max_burst_size == 100
    assert created.retry_config.max_attempts == 100
    assert created.retry_config.min_backoff == timedelta(seconds=0.1)
    assert created.retry_config.max_backoff == timedelta(seconds=3600)
    assert created.retry_config.max_doublings == 16
    assert tasks_client.get_queue(name=queue_name) == created


def test_creating_a_queue_twice_answers_already_exists(tasks_client, queue_name):
    tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})


def test_queue_names_are_validated(tasks_client):
    with pytest.raises(exceptions.InvalidArgument):
        tasks_client.create_queue(parent=LOCATION, queue={"name": f"{LOCATION}/queues/bad_name!"})
    with pytest.raises(exceptions.InvalidArgument):
        tasks_client.create_queue(
            parent=LOCATION, queue={"name": "projects/other/locations/x/queues/q"}
        )


def test_rate_limits_above_the_service_maximum_are_refused(tasks_client, queue_name):
    with pytest.raises(exceptions.InvalidArgument):
        make_queue(tasks_client, queue_name, rate=501)


def test_getting_an_unknown_queue_answers_not_found(tasks_client, queue_name):
    with pytest.raises(exceptions.NotFound):
        tasks_client.get_queue(name=queue_name)


def test_queues_are_listed_per_location_in_pages(tasks_client):
    names = [f"{LOCATION}/queues/listed-{i}" for i in range(5)]
    for name in names:
        tasks_client.create_queue(parent=LOCATION, queue={"name": name})
    other = "projects/test-project/locations/us-central1"
    tasks_client.create_queue(parent=other, queue={"name": f"{other}/queues/elsewhere"})

    pager = tasks_client.list_queues(request={"parent": LOCATION, "page_size": 2})
    listed = [queue.name for queue in pager]
    pages = list(tasks_client.list_queues(request={"parent": LOCATION, "page_size": 2}).pages)

    assert sorted(listed) == sorted(names)
    assert len(pages) == 3


def test_update_queue_changes_only_the_masked_fields(tasks_client, queue_name):
    make_queue(tasks_client, queue_name, rate=10, max_attempts=7)

    updated = tasks_client.update_queue(
        queue={"name": queue_name, "rate_limits": {"max_dispatches_per_second": 2}},
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )

    assert updated.rate_limits.max_dispatches_per_second == 2
    assert updated.rate_limits.max_burst_size == 2
    assert updated.retry_config.max_attempts == 7
    assert tasks_client.get_queue(name=queue_name).rate_limits.max_dispatches_per_second == 2


def test_update_queue_replaces_the_retry_config(tasks_client, queue_name):
    make_queue(tasks_client, queue_name, rate=10, max_attempts=7)

    updated = tasks_client.update_queue(
        queue={"name": queue_name, "retry_config": {"max_attempts": 3, "max_doublings": 2}},
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config"]),
    )

    assert updated.retry_config.max_attempts == 3
    assert updated.retry_config.max_doublings == 2
    assert updated.retry_config.min_backoff == timedelta(seconds=0.1)
    assert updated.rate_limits.max_dispatches_per_second == 10


def test_update_queue_creates_a_missing_queue(tasks_client, queue_name):
    created = tasks_client.update_queue(
        queue={"name": queue_name, "rate_limits": {"max_dispatches_per_second": 3}}
    )
    assert created.rate_limits.max_dispatches_per_second == 3
    assert tasks_client.get_queue(name=queue_name).state == tasks_v2.Queue.State.RUNNING


def test_a_paused_queue_holds_its_tasks_until_resumed(
    tasks_client, handler: RecordingHandler, queue_name
):
    tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})
    paused = tasks_client.pause_queue(name=queue_name)
    tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    time.sleep(0.5)
    assert paused.state == tasks_v2.Queue.State.PAUSED
    assert handler.received == []

    resumed = tasks_client.resume_queue(name=queue_name)
    assert resumed.state == tasks_v2.Queue.State.RUNNING
    assert len(handler.wait_for(1)) == 1


def test_purging_a_queue_deletes_its_tasks(tasks_client, handler: RecordingHandler, queue_name):
    tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})
    tasks_client.pause_queue(name=queue_name)
    for _ in range(3):
        tasks_client.create_task(parent=queue_name, task=http_task(handler.url()))

    purged = tasks_client.purge_queue(name=queue_name)
    tasks_client.resume_queue(name=queue_name)

    assert purged.purge_time is not None
    assert list(tasks_client.list_tasks(parent=queue_name)) == []
    time.sleep(0.3)
    assert handler.received == []


def test_a_deleted_queue_is_gone_with_its_tasks(tasks_client, queue_name):
    tasks_client.create_queue(parent=LOCATION, queue={"name": queue_name})
    tasks_client.delete_queue(name=queue_name)

    with pytest.raises(exceptions.NotFound):
        tasks_client.get_queue(name=queue_name)
    with pytest.raises(exceptions.NotFound):
        tasks_client.delete_queue(name=queue_name)


def test_by_default_tasks_need_an_existing_queue(queue_name):
    with CloudTasksEmulator(queues=[queue_name]) as emulator:
        tasks_client = emulator_client(emulator.address)
        try:
            tasks_client.create_task(parent=queue_name, task=http_task("http://127.0.0.1:9/"))
            with pytest.raises(exceptions.NotFound):
                tasks_client.create_task(
                    parent=f"{LOCATION}/queues/unknown", task=http_task("http://127.0.0.1:9/")
                )
        finally:
            tasks_client.transport.close()


def test_with_auto_creation_a_task_creates_its_queue(queue_name):
    with CloudTasksEmulator(auto_create_queues=True) as emulator:
        tasks_client = emulator_client(emulator.address)
        try:
            tasks_client.create_task(parent=queue_name, task=http_task("http://127.0.0.1:9/"))
            queue = tasks_client.get_queue(name=queue_name)
            assert queue.rate_limits.max_dispatches_per_second == 500
        finally:
            tasks_client.transport.close()
