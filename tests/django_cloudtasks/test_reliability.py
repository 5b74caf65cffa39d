"""Duplicates, concurrency, crashes and outages lose nothing and run nothing twice.

The concurrency tests need PostgreSQL: every thread uses its own connection.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from django_cloudtasks import chain, chord, group
from django_cloudtasks.constants import READY_STATES, State, WorkflowStatus
from django_cloudtasks.dispatch import sweep
from django_cloudtasks.exceptions import EnqueueError
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.runner import deliver
from django_cloudtasks.transports.base import Dispatch
from django_cloudtasks.transports.memory import MemoryTransport
from tests.testapp.models import Execution
from tests.testapp.tasks import add, identity, tsum

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(func: Callable[[], object]) -> Callable[[], object]:
    """Run ``func`` and close this thread's database connection afterwards."""

    def run() -> object:
        try:
            return func()
        finally:
            connections.close_all()

    return run


def deliver_until_settled(dispatch: Dispatch) -> int:
    """Deliver like Cloud Tasks: retry while the answer is 409 (another copy holds it)."""
    while True:
        outcome = deliver(dispatch.node_id, retries=dispatch.retries)
        if outcome.status != 409:
            return outcome.status
        time.sleep(0.005)


def execution_counts(task: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in Execution.objects.filter(task=task).values_list("value", flat=True):
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


@pytest.mark.postgres
def test_every_delivery_of_a_chord_of_a_thousand_made_twice_concurrently_runs_once(memory):
    result = chord([add.si(i, i) for i in range(1000)], tsum.s()).apply_async()
    with ThreadPoolExecutor(max_workers=12) as pool:
        while True:
            batch = []
            while (dispatch := memory.take()) is not None:
                batch.append(dispatch)
            if not batch:
                break
            copies = [pool.submit(in_thread(lambda d=d: deliver_until_settled(d))) for d in batch]
            copies += [pool.submit(in_thread(lambda d=d: deliver_until_settled(d))) for d in batch]
            assert {c.result() for c in copies} == {200}
    assert result.get(timeout=0) == sum(2 * i for i in range(1000))
    assert Execution.objects.filter(task="add").count() == 1000
    assert set(execution_counts("add").values()) == {1}
    assert Execution.objects.filter(task="tsum").count() == 1


@pytest.mark.postgres
def test_sixteen_workers_completing_one_chord_at_once_enqueue_the_body_exactly_once(memory):
    chord([identity.si(i) for i in range(16)], tsum.s()).apply_async()
    members = [memory.take() for _ in range(16)]
    start = threading.Barrier(16)

    def work(dispatch: Dispatch) -> int:
        start.wait()
        return deliver(dispatch.node_id).status

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda d: in_thread(lambda: work(d))(), members))
    assert answers == [200] * 16
    body = Node.objects.get(task_name="tsum")
    assert [d.node_id for d in memory.sent].count(str(body.pk)) == 1
    assert body.state == State.QUEUED and body.input == list(range(16))


class FlakyTransport(MemoryTransport):
    """Loses a third of the dispatches it is given, then reports the failure."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.random = random.Random(seed)
        self.lost = 0

    def send(self, dispatches):
        kept = [d for d in dispatches if self.random.random() >= 1 / 3]
        super().send(kept)
        if len(kept) < len(dispatches):
            self.lost += len(dispatches) - len(kept)
            raise EnqueueError(f"lost {len(dispatches) - len(kept)} dispatches")


@pytest.mark.postgres
@pytest.mark.parametrize("seed", [1, 2])
def test_an_unreliable_transport_loses_nothing_once_the_sweeper_runs(settings, seed, monkeypatch):
    from django_cloudtasks import transports

    flaky = FlakyTransport(seed)
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "memory"}
    monkeypatch.setitem(transports._instances, "memory", flaky)
    expressions = [
        add.s(1, 1) | add.s(2) | add.s(3),
        chord([add.si(i, 1) for i in range(30)], tsum.s()),
        group(add.si(i, 0) for i in range(20)) | tsum.s() | add.s(1),
        chain(identity.si("x"), group(identity.s(), identity.s()), identity.s()),
    ]
    expected = [7, sum(i + 1 for i in range(30)), sum(range(20)) + 1, ["x", "x"]]
    results = []
    for expr in expressions:
        try:
            results.append(expr.apply_async())
        except EnqueueError:
            results.append(Workflow.objects.order_by("-created_at").first())
    for _ in range(200):
        try:
            flaky.drain()
        except EnqueueError:
            continue
        if not Workflow.objects.unfinished().exists():
            break
        with contextlib.suppress(EnqueueError):
            sweep(grace=0)
    assert flaky.lost > 0
    workflows = list(Workflow.objects.order_by("created_at"))
    assert [w.status for w in workflows] == [WorkflowStatus.SUCCESS] * 4
    from django_cloudtasks.results import WorkflowResult

    assert [WorkflowResult(w.pk).get(timeout=0) for w in workflows] == expected
    for node in Node.objects.filter(kind="task"):
        assert node.attempts == 1, node
    assert Execution.objects.filter(task="add").count() == 3 + 30 + 20 + 1


def test_a_failed_send_at_apply_async_hands_back_the_saved_workflow(settings, monkeypatch):
    from django_cloudtasks import transports

    class Down(MemoryTransport):
        def send(self, dispatches: list[Dispatch]) -> None:
            raise EnqueueError("the transport is down")

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "memory"}
    monkeypatch.setitem(transports._instances, "memory", Down())
    with pytest.raises(EnqueueError) as raised:
        (add.s(1, 1) | add.s(2)).apply_async()
    result = raised.value.result
    workflow = Workflow.objects.get()
    assert raised.value.workflow_id == str(workflow.pk) == result.workflow_id
    assert result.state == "PENDING"
    up = MemoryTransport()
    monkeypatch.setitem(transports._instances, "memory", up)
    assert sweep(grace=0).resent == 1
    up.drain()
    assert result.get(timeout=0) == 4


def test_a_repeated_delivery_of_a_finished_node_answers_200_and_runs_nothing(memory, executions):
    result = add.s(1, 2).apply_async()
    memory.drain()
    assert deliver(result.id).status == 200
    assert deliver(result.id).status == 200
    assert executions() == {"add": 1}


def test_a_delivery_finding_the_node_running_under_a_live_lease_answers_409(memory, executions):
    from datetime import timedelta

    from django.utils import timezone

    result = add.s(1, 2).apply_async()
    Node.objects.filter(pk=result.id).update(
        state=State.STARTED, attempts=1, lease_until=timezone.now() + timedelta(minutes=5)
    )
    assert deliver(result.id).status == 409
    assert executions() == {}
    Node.objects.filter(pk=result.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert deliver(result.id).status == 200
    assert executions() == {"add": 1}
    assert Node.objects.get(pk=result.id).attempts == 2


def test_a_crash_between_commit_and_enqueue_is_recovered_by_the_sweeper(memory, executions):
    from datetime import timedelta

    from django.utils import timezone

    result = (add.s(1, 1) | add.s(1)).apply_async()
    memory.clear()  # the enqueue after commit never happened
    assert sweep().resent == 0  # within the grace period: maybe still on its way
    Node.objects.update(ready_at=timezone.now() - timedelta(minutes=10))
    assert sweep().resent == 1
    memory.drain()
    assert result.get(timeout=0) == 3
    assert executions() == {"add": 2}


def test_a_failed_enqueue_after_apply_async_raises_and_keeps_the_workflow(memory, monkeypatch):
    def broken(dispatches):
        raise ConnectionError("Cloud Tasks is down")

    monkeypatch.setattr(memory, "send", broken)
    with pytest.raises(EnqueueError, match="cloudtasks_sweep"):
        add.s(1, 2).apply_async()
    node = Node.objects.get()
    assert node.state == State.QUEUED


def test_nothing_is_left_waiting_forever_after_a_revoke_races_completions(memory):
    result = chord([identity.si(i) for i in range(8)], tsum.s()).apply_async()
    memory.drain(limit=4)
    from django_cloudtasks.engine import revoke_node

    revoke_node(Node.objects.get(task_name="identity", index=5).pk)
    memory.drain()
    states = set(Node.objects.values_list("state", flat=True))
    assert states <= READY_STATES
    assert result.state == State.REVOKED
    assert Execution.objects.filter(task="tsum").count() == 0


@pytest.mark.postgres
def test_revoking_a_chord_member_while_the_others_finish_leaves_nothing_waiting(memory):
    chord([identity.si(i) for i in range(12)], tsum.s()).apply_async()
    members = [memory.take() for _ in range(12)]
    victim = members[6]
    start = threading.Barrier(13)

    def finish(dispatch: Dispatch) -> None:
        start.wait()
        deliver_until_settled(dispatch)

    def revoke() -> None:
        from django_cloudtasks.engine import revoke_node

        start.wait()
        revoke_node(victim.node_id)

    with ThreadPoolExecutor(max_workers=13) as pool:
        jobs = [pool.submit(in_thread(lambda d=d: finish(d))) for d in members]
        jobs.append(pool.submit(in_thread(revoke)))
        for job in jobs:
            job.result()
    memory.drain()
    states = dict(Node.objects.values_list("task_name", "state").filter(task_name="tsum"))
    assert states == {"tsum": State.REVOKED}
    assert set(Node.objects.values_list("state", flat=True)) <= READY_STATES
    assert Execution.objects.filter(task="tsum").count() == 0


def test_revoking_a_node_waiting_for_its_retry_deletes_the_retry(memory, executions):
    from tests.testapp.tasks import always_disconnects

    result = always_disconnects.si().apply_async()
    memory.drain(limit=1)
    assert result.state == State.RETRY
    retry_dispatch = memory.pending[0]
    assert retry_dispatch.retries == 1
    result.revoke()
    assert memory.cancelled[-1].cloud_task_id == retry_dispatch.cloud_task_id
    assert deliver(retry_dispatch.node_id, retries=1).state == State.REVOKED
    assert executions() == {"always_disconnects": 1}


def test_the_sweeper_resends_a_node_whose_runner_died_after_its_lease(memory, executions):
    from datetime import timedelta

    from django.utils import timezone

    result = add.s(2, 2).apply_async()
    memory.clear()
    past = timezone.now() - timedelta(minutes=30)
    Node.objects.filter(pk=result.id).update(state=State.STARTED, attempts=1, lease_until=past)
    assert sweep().resent == 1
    memory.drain()
    assert result.get(timeout=0) == 4
    assert Node.objects.get(pk=result.id).attempts == 2


def test_a_report_whose_write_fails_leaves_the_node_to_be_taken_over_after_its_lease(
    memory, executions, monkeypatch
):
    from datetime import timedelta

    from django.db import DatabaseError
    from django.utils import timezone

    from django_cloudtasks import engine
    from django_cloudtasks.runner import report

    result = add.s(1, 2).apply_async()

    def broken(*args, **kwargs):
        raise DatabaseError("the write failed")

    monkeypatch.setattr(engine, "succeed", broken)
    with pytest.raises(DatabaseError):
        report(result.id, "success", 3, {})
    monkeypatch.undo()

    node = Node.objects.get(pk=result.id)
    assert node.state == State.STARTED
    assert node.lease_until is not None and node.lease_until > timezone.now()
    assert deliver(result.id).status == 409  # the report's lease holds it for now
    assert sweep(grace=0).resent == 0

    Node.objects.filter(pk=result.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert sweep(grace=0).resent == 1
    assert deliver(result.id).status == 200
    assert result.get(timeout=0) == 2 + 1
    assert executions() == {"add": 1}


def test_a_report_repeated_after_its_write_failed_records_the_result(memory, monkeypatch):
    from django.db import DatabaseError

    from django_cloudtasks import engine
    from django_cloudtasks.runner import report

    result = (add.s(1, 2) | add.s(10)).apply_async()
    succeed = engine.succeed

    def broken(*args, **kwargs):
        raise DatabaseError("the write failed")

    monkeypatch.setattr(engine, "succeed", broken)
    with pytest.raises(DatabaseError):
        report(result.parent.id, "success", 3, {})
    monkeypatch.setattr(engine, "succeed", succeed)

    assert report(result.parent.id, "success", 3, {}).state == State.SUCCESS
    memory.drain()
    assert result.get(timeout=0) == 13


def test_the_sweeper_takes_over_a_node_whose_delivery_name_is_still_taken(memory, executions):
    from datetime import timedelta

    from django.utils import timezone

    from django_cloudtasks import engine

    result = (add.s(2, 2) | add.s(1)).apply_async()
    first = memory.take()  # Cloud Tasks delivers it; the runner claims it, then dies
    assert first is not None and engine.claim(first.node_id, "add", 0, timezone.now())
    Node.objects.filter(pk=first.node_id).update(lease_until=timezone.now() - timedelta(minutes=30))
    # Cloud Tasks gave up on that delivery, but keeps its name taken for a while: the
    # memory transport, like Cloud Tasks, ignores a second task of a known name.

    assert sweep().resent == 1
    assert sweep().resent == 1  # sent under the same name again: one delivery

    assert memory.drain() == 2  # the node taken over, then its successor
    assert result.get(timeout=0) == 5
    assert Node.objects.get(pk=first.node_id).attempts == 2
    assert executions() == {"add": 2}


def test_the_sweeper_recovers_a_started_node_with_no_lease(memory, executions):
    from datetime import timedelta

    from django.utils import timezone

    result = (add.s(1, 1) | add.s(1)).apply_async()
    memory.clear()
    long_ago = timezone.now() - timedelta(minutes=10)
    Node.objects.filter(pk=result.parent.id).update(
        state=State.STARTED, attempts=1, started_at=long_ago, lease_until=None
    )
    assert deliver(result.parent.id).status == 200  # a redelivery takes it over
    memory.drain()
    assert result.get(timeout=0) == 3

    stranded = (add.s(2, 2) | add.s(1)).apply_async()
    memory.clear()
    Node.objects.filter(pk=stranded.parent.id).update(
        state=State.STARTED, attempts=1, started_at=long_ago, lease_until=None
    )
    assert sweep().resent == 1
    memory.drain()
    assert stranded.get(timeout=0) == 5
    assert executions() == {"add": 4}
