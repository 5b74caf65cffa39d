"""Rate limits: a node is sent with the ETA its key's pace allows, shared by every server."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django.db import connections
from django.utils import timezone

from django_cloudtasks import group
from django_cloudtasks.constants import State
from django_cloudtasks.models import FlowKey, Node
from django_cloudtasks.runner import deliver
from django_cloudtasks.transports.memory import MemoryTransport
from tests.testapp.flow_tasks import paced
from tests.testapp.models import Execution
from tests.testapp.tasks import tsum

pytestmark = pytest.mark.django_db(transaction=True)


def deliver_on_time(memory: MemoryTransport, expected: int, workers: int = 3) -> None:
    """Deliver as Cloud Tasks does: each dispatch at its ETA, not before."""
    lock = threading.Lock()
    done: list[int] = []

    def worker() -> None:
        try:
            while True:
                with lock:
                    if len(done) >= expected:
                        return
                dispatch = memory.take()
                if dispatch is None:
                    time.sleep(0.002)
                    continue
                if dispatch.eta is not None:
                    time.sleep(max(0.0, (dispatch.eta - timezone.now()).total_seconds()))
                outcome = deliver(dispatch.node_id, retries=dispatch.retries)
                assert outcome.status == 200, outcome
                with lock:
                    done.append(1)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def etas(task_name: str) -> list[datetime]:
    """The ETAs of the task's nodes, in order; the first of a pace starts at once (no ETA)."""
    values = list(Node.objects.filter(task_name=task_name).values_list("eta", flat=True))
    assert values.count(None) == 1
    return sorted(v for v in values if v is not None)


def gaps(moments: list[datetime]) -> list[float]:
    return [round((b - a).total_seconds(), 3) for a, b in pairwise(moments)]


def test_twenty_a_second_over_a_hundred_tasks_spreads_their_starts_over_five_seconds(memory):
    before = timezone.now()
    result = group(paced.s(i) for i in range(100)).delay()

    moments = etas("paced")
    assert set(gaps(moments)) == {0.05}
    assert moments[0] - before >= timedelta(seconds=0.05)
    assert round((moments[-1] - moments[0]).total_seconds(), 3) == 4.9
    deliver_on_time(memory, expected=100)

    assert result.get(timeout=0) == list(range(100))
    # No task started before its turn, so the last started five seconds after the call.
    slot = {node.args[0]: node.eta for node in Node.objects.filter(task_name="paced")}
    started = dict(Execution.objects.filter(task="paced").values_list("value", "created"))
    assert all(slot[i] is None or started[i] >= slot[i] for i in range(100))
    assert (max(started.values()) - before).total_seconds() >= 4.9


def test_the_pace_is_shared_by_separate_workflows(memory):
    for i in range(5):
        tsum.s([i]).set(rate_limit="2/m").delay()

    assert gaps(etas("tsum")) == [30.0, 30.0, 30.0]
    assert FlowKey.objects.get(key="task:tsum").rate == pytest.approx(1 / 30)


def test_a_rate_limit_set_on_a_signature_paces_that_key(memory):
    for i in range(4):
        tsum.s([i]).set(rate_limit="4/h", concurrency_key="reports").delay()

    assert gaps(etas("tsum")) == [900.0, 900.0]
    assert Node.objects.filter(state=State.SCHEDULED).count() == 3
    assert not FlowKey.objects.filter(key="task:tsum").exists()


def test_a_paced_node_delivered_before_its_time_is_refused(memory):
    first = tsum.s([1]).set(rate_limit="6/m").delay()
    second = tsum.s([2]).set(rate_limit="6/m").delay()

    assert deliver(first.id).status == 200
    refused = deliver(second.id)
    assert refused.status == 409
    assert "not due until" in refused.detail
