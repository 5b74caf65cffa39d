"""INLINE_SECONDS: a finished node runs one ready successor in the same request."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_cloudtasks import chord, group
from django_cloudtasks.constants import State
from django_cloudtasks.models import Node
from django_cloudtasks.runner import deliver
from django_cloudtasks.transports import reset_transport
from tests.testapp.models import Execution
from tests.testapp.tasks import add, identity, quiet_add, tsum

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def inline(settings, memory):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "memory", "INLINE_SECONDS": 5}
    reset_transport()
    from django_cloudtasks.transports import get_transport

    return get_transport()


def test_a_chain_runs_to_its_end_in_one_delivery(inline):
    result = (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    assert inline.drain(limit=1) == 1
    assert result.get(timeout=0) == 4
    assert Execution.objects.filter(task="add").count() == 3


def test_each_inline_step_still_has_a_cloud_task_scheduled_after_its_lease(inline):
    before = timezone.now()
    (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    inline.drain(limit=1)
    nets = inline.sent[1:]
    assert len(nets) == 2
    assert all(d.eta >= before + timedelta(seconds=600) for d in nets)
    # when those safety nets arrive, the nodes are finished: nothing runs again
    assert [deliver(d.node_id, retries=d.retries).detail for d in nets] == [
        "already finished",
        "already finished",
    ]
    assert Execution.objects.filter(task="add").count() == 3


def test_an_inline_step_costs_the_same_three_queries(inline):
    (quiet_add.s(1, 1) | quiet_add.s(1) | quiet_add.s(1)).apply_async()
    with CaptureQueriesContext(connection) as captured:
        inline.drain(limit=1)
    statements = [q for q in captured if not q["sql"].startswith(("BEGIN", "COMMIT"))]
    assert len(statements) == 3 * 3


def test_a_chord_body_runs_in_the_request_of_the_member_that_closes_it(inline):
    result = chord([identity.si(i) for i in range(5)], tsum.s()).apply_async()
    assert inline.drain(limit=5) == 5
    assert result.get(timeout=0) == 10


def test_a_fan_out_runs_one_successor_inline_and_sends_the_others(inline):
    result = (add.s(1, 1) | group(add.s(i) for i in range(4))).apply_async()
    inline.drain(limit=1)
    assert Execution.objects.filter(task="add").count() == 2
    due_now = [d for d in inline.pending if d.eta is None]
    assert len(due_now) == 3
    inline.drain()
    assert result.get(timeout=0) == [2, 3, 4, 5]


def test_a_delayed_successor_is_never_run_inline(inline):
    result = (add.s(1, 1) | add.s(1).set(countdown=60)).apply_async()
    inline.drain(limit=1)
    second = Node.objects.get(index=1)
    assert second.state == State.SCHEDULED
    inline.drain()
    assert result.get(timeout=0) == 3


def test_inline_runs_are_off_by_default(memory):
    result = (add.s(1, 1) | add.s(1)).apply_async()
    memory.drain(limit=1)
    assert Node.objects.get(index=1).state == State.QUEUED
    memory.drain()
    assert result.get(timeout=0) == 3
