"""End to end: the real Cloud Tasks client, the emulator over gRPC, a real HTTP server."""

from __future__ import annotations

import itertools
import socket
import time
from datetime import datetime

import pytest
from google.api_core import exceptions as gexc

from django_cloudtasks import chord, group
from django_cloudtasks.constants import State
from django_cloudtasks.exceptions import EnqueueError
from django_cloudtasks.models import Node
from django_cloudtasks.transports import get_transport, reset_transport
from django_cloudtasks.transports.base import Dispatch
from django_cloudtasks.transports.cloudtasks import EMULATOR_RETRY_SECONDS
from tests import gateway
from tests.testapp.models import Execution
from tests.testapp.tasks import add, delivery_headers, identity, stamp, tsum

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUEUE = "projects/test-project/locations/us-central1/queues/default"


@pytest.fixture(autouse=True)
def healthy_gateway():
    """The run endpoint answers normally again after each test."""
    yield
    gateway.fail_next(0)


def test_a_chain_runs_over_http_in_one_delivery_by_default(live_emulator):
    result = (add.s(4, 4) | add.s(8) | add.s(16)).delay()
    assert result.get(timeout=30) == 32
    assert live_emulator.wait_until_idle(timeout=10)  # the last answer is recorded
    runs = [r for r in live_emulator.history if r.succeeded]
    # the request that ran the first step ran the other two inline
    assert len(runs) == 1
    assert runs[0].url.endswith("/cloudtasks/run/add/")
    assert Execution.objects.filter(task="add").count() == 3


def test_a_chain_runs_over_http_a_delivery_a_step_without_inline_runs(serve_emulator):
    emulator = serve_emulator(settings_changes={"INLINE_SECONDS": 0})
    result = (add.s(4, 4) | add.s(8) | add.s(16)).delay()
    assert result.get(timeout=30) == 32
    assert emulator.wait_until_idle(timeout=10)  # the last answer is recorded
    runs = [r for r in emulator.history if r.succeeded]
    assert len(runs) == 3
    assert all(r.url.endswith("/cloudtasks/run/add/") for r in runs)


def test_a_chord_of_a_hundred_runs_over_http(live_emulator):
    result = chord([add.si(i, i) for i in range(100)], tsum.s()).delay()
    assert result.get(timeout=60) == sum(2 * i for i in range(100))
    assert Execution.objects.filter(task="add").count() == 100
    assert Execution.objects.filter(task="tsum").count() == 1


def test_a_countdown_task_does_not_run_before_its_time(live_emulator):
    started = datetime.now().astimezone()
    result = stamp.si().apply_async(countdown=2)
    assert result.get(timeout=30) is True
    ran_at = datetime.fromisoformat(Execution.objects.get(task="stamp").value)
    assert (ran_at - started).total_seconds() >= 2


def test_revoking_a_pending_task_deletes_its_cloud_task(live_emulator):
    result = stamp.si().apply_async(countdown=30)
    name = f"{QUEUE}/tasks/{Node.objects.get(pk=result.id).cloud_task_id}"
    client = get_transport().client
    assert client.get_task(name=name).name == name
    result.revoke()
    with pytest.raises(gexc.NotFound):
        client.get_task(name=name)
    assert result.state == State.REVOKED
    assert not Execution.objects.exists()


def test_a_repeated_enqueue_is_answered_already_exists_and_runs_once(live_emulator):
    result = stamp.si().apply_async(countdown=1)
    node = Node.objects.get(pk=result.id)
    dispatch = Dispatch(
        node_id=str(node.pk), workflow_id=str(node.workflow_id), task_name="stamp", eta=node.eta
    )
    client = get_transport().client
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(parent=QUEUE, task=get_transport().build_task(dispatch))
    get_transport().send([dispatch])  # the transport counts ALREADY_EXISTS as success
    assert result.get(timeout=30) is True
    live_emulator.wait_until_idle(timeout=10)
    assert Execution.objects.filter(task="stamp").count() == 1


def test_a_handler_answering_5xx_is_retried_with_growing_backoff(live_emulator):
    gateway.fail_next(3)
    result = identity.si("after outage").delay()
    assert result.get(timeout=30) == "after outage"
    assert live_emulator.wait_until_idle(timeout=10)
    attempts = [r for r in live_emulator.history if "/run/identity/" in r.url]
    assert [r.status_code for r in attempts] == [503, 503, 503, 200]
    gaps = [b.started_at - a.finished_at for a, b in itertools.pairwise(attempts)]
    gaps = [g.total_seconds() if hasattr(g, "total_seconds") else g for g in gaps]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.35 and gaps[2] >= 0.75
    assert gaps[0] < gaps[1] < gaps[2]


def test_a_task_receives_the_production_headers(live_emulator):
    result = delivery_headers.si().delay()
    headers = {k.lower(): v for k, v in result.get(timeout=30).items()}
    node = Node.objects.get(pk=result.id)
    assert headers["x-cloudtasks-queuename"] == "default"
    assert headers["x-cloudtasks-taskname"] == node.cloud_task_id
    assert headers["x-cloudtasks-taskretrycount"] == "0"
    assert headers["x-cloudtasks-taskexecutioncount"] == "0"
    assert float(headers["x-cloudtasks-tasketa"]) == pytest.approx(time.time(), abs=60)


def test_a_group_fans_out_concurrently_and_finishes(live_emulator):
    result = group(identity.si(i) for i in range(50)).delay()
    assert result.get(timeout=60) == list(range(50))


def test_without_a_running_emulator_delay_fails_fast_and_says_what_to_do(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed
    settings.CLOUDTASKS = {
        **settings.CLOUDTASKS,
        "TRANSPORT": "cloudtasks",
        "EMULATOR_HOST": address,
        "BASE_URL": "http://127.0.0.1:9",
    }
    reset_transport()
    try:
        with pytest.raises(EnqueueError) as caught:
            add.si(1, 1).delay()
        budget = get_transport().retry.timeout  # what the refused call was retried for
    finally:
        reset_transport()

    assert budget == EMULATOR_RETRY_SECONDS == 2  # not the 30 s Cloud Tasks calls retry for
    message = str(caught.value)
    assert address in message
    assert "EMULATOR_HOST" in message
    assert "cloudtasks_sweep" in message
    assert Node.objects.filter(task_name="add").count() == 1  # saved for the sweeper


def test_the_sweeper_takes_over_a_node_whose_cloud_task_was_given_up(
    serve_emulator, live_server, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from django_cloudtasks.dispatch import sweep

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"
    emulator = serve_emulator(base_url=nowhere, retry={"max_attempts": 1})
    result = (add.s(2, 2) | add.s(1)).delay()
    assert emulator.wait_until_idle(timeout=10)  # one attempt, then Cloud Tasks gives up
    # As if a runner had claimed the node and died: STARTED, its lease long over.
    Node.objects.filter(pk=result.parent.id).update(
        state=State.STARTED, attempts=1, lease_until=timezone.now() - timedelta(minutes=30)
    )
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "BASE_URL": live_server.url}

    assert sweep(grace=0).resent == 1

    assert result.get(timeout=30) == 5
    assert Node.objects.get(pk=result.parent.id).attempts == 2


def test_a_timeout_reports_cloud_tasks_attempts_and_the_last_answer(live_emulator):
    gateway.fail_next(1_000)
    result = add.si(1, 1).delay()
    for _ in range(400):
        if any(r.status_code == 503 for r in live_emulator.history):
            break
        time.sleep(0.025)
    with pytest.raises(TimeoutError) as caught:
        result.get(timeout=0, interval=0)
    message = str(caught.value)
    assert "(add) is QUEUED: sent, never delivered; Cloud Tasks sent it " in message
    assert "the last attempt: HTTP 503" in message
