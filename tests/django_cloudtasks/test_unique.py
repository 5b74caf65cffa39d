"""Unique and debounced work: one unfinished workflow per key, held by the database."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from django_cloudtasks import group, task
from django_cloudtasks.constants import State
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry
from tests.testapp.flow_tasks import bill
from tests.testapp.models import Execution
from tests.testapp.tasks import add, tsum

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_second_call_with_the_key_of_an_unfinished_workflow_gets_that_workflow(memory):
    first = add.s(1, 2).apply_async(unique_key="sum:1")
    second = add.s(5, 5).apply_async(unique_key="sum:1")

    assert second.id == first.id
    assert Workflow.objects.count() == 1
    memory.drain()
    assert second.get(timeout=0) == 3


def test_the_key_is_free_again_once_the_workflow_finished(memory):
    first = add.s(1, 2).apply_async(unique_key="sum:2")
    memory.drain()
    again = add.s(1, 2).apply_async(unique_key="sum:2")

    assert again.id != first.id
    assert Workflow.objects.count() == 2


def test_unique_for_keeps_the_key_for_a_while_after_the_workflow_finished(memory):
    first = add.s(1, 2).apply_async(unique_key="sum:3", unique_for=3600)
    memory.drain()
    assert add.s(1, 2).apply_async(unique_key="sum:3").id == first.id

    Workflow.objects.update(unique_until=timezone.now() - timedelta(seconds=1))
    assert add.s(1, 2).apply_async(unique_key="sum:3").id != first.id


def test_a_task_declared_unique_computes_its_key_from_its_arguments(memory):
    first = bill.delay(42, 10)
    assert bill.delay(42, 99).id == first.id
    other = bill.delay(43, 10)

    assert other.id != first.id
    memory.drain()
    assert sorted(Execution.objects.values_list("value", flat=True)) == [[42, 10], [43, 10]]


def test_a_group_result_handle_is_returned_for_a_unique_group(memory):
    first = group(add.s(i, i) for i in range(3)).apply_async(unique_key="fan")
    second = group(add.s(i, i) for i in range(3)).apply_async(unique_key="fan")

    assert second.id == first.id
    memory.drain()
    assert second.get(timeout=0) == [0, 2, 4]


def test_fifty_concurrent_callers_of_one_key_create_one_workflow(memory):
    barrier = threading.Barrier(50)
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        try:
            barrier.wait()
            handle = add.s(i, i).apply_async(unique_key="invoice:7")
            with lock:
                ids.append(handle.id)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Workflow.objects.count() == 1
    assert len(ids) == 50
    assert set(ids) == {str(Node.objects.get().pk)}


# -- debounce ---------------------------------------------------------------------------


def test_calls_within_the_debounce_window_fold_into_one_run_with_the_latest_arguments(memory):
    first = tsum.s([1]).apply_async(unique_key="digest", debounce=30)
    start = Node.objects.get().eta
    second = tsum.s([1, 2]).apply_async(unique_key="digest", debounce=30)
    third = tsum.s([1, 2, 3]).apply_async(unique_key="digest", debounce=30)

    assert first.id == second.id == third.id
    node = Node.objects.get()
    assert node.args == [[1, 2, 3]]
    assert node.state == State.SCHEDULED
    assert node.eta > start >= timezone.now() + timedelta(seconds=29)
    # Each postponement withdrew the Cloud Task and sent one at the new time.
    assert len(memory.cancelled) == 2
    assert [d.eta for d in memory.pending] == [node.eta]

    memory.drain()
    assert Execution.objects.filter(task="tsum").count() == 1
    assert third.get(timeout=0) == 6


def test_a_debounced_call_after_the_run_started_does_not_change_it(memory):
    from django_cloudtasks import engine

    first = tsum.s([1]).apply_async(unique_key="late", debounce=30)
    engine.claim(first.id, None, None, timezone.now(), early=True)  # its run starts
    during = tsum.s([5]).apply_async(unique_key="late", debounce=30)

    assert during.id == first.id
    assert Node.objects.get(pk=first.id).args == [[1]]
    memory.clear()
    deliver_started = Node.objects.get(pk=first.id)
    engine.succeed(deliver_started, 1, deliver_started.attempts)
    after = tsum.s([7]).apply_async(unique_key="late", debounce=30)
    assert after.id != first.id
    assert Node.objects.get(pk=after.id).state == State.SCHEDULED


def test_debounce_without_a_unique_key_is_refused(memory):
    with pytest.raises(ValueError, match="debounce needs a unique_key"):
        tsum.s([1]).apply_async(debounce=30)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"unique_for": -1}, ValueError),
        ({"unique_key": 5}, TypeError),
        ({"debounce": "x"}, TypeError),
    ],
)
def test_bad_uniqueness_options_are_refused(options, error):
    with pytest.raises(error):
        tsum.s([1]).set(**options)


def test_a_negative_unique_for_is_refused_when_the_task_is_declared():
    with pytest.raises(ValueError, match="unique_for"):

        @task(name="flow_unique_refused", unique_key="k", unique_for=-5)
        def refused():
            return 1

    assert "flow_unique_refused" not in registry
