"""A large group join counts its members on shards, so no row takes every update."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_cloudtasks import group
from django_cloudtasks.constants import NodeKind, State
from django_cloudtasks.engine import join_shards, retry_node
from django_cloudtasks.models import Node, Workflow
from tests.testapp.tasks import fail
from tests.testapp.tasks import quiet_add as add
from tests.testapp.tasks import quiet_sum as tsum

pytestmark = pytest.mark.django_db(transaction=True)

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 10 members, so that a group of 25 has three."""
    monkeypatch.setattr(join_shards, "JOIN_SHARD_SIZE", 10)


def queries_of(func):
    with CaptureQueriesContext(connection) as captured:
        func()
    return len([q for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)])


def record_and_advance():
    return 1 if connection.vendor == "postgresql" else 2


def test_a_join_of_more_members_than_a_shard_holds_waits_on_its_shards(memory, small_shards):
    result = (group(add.si(i, i) for i in range(25)) | tsum.s()).apply_async()
    join = Node.objects.get(workflow_id=result.workflow_id, index=25)
    shards = list(Node.objects.filter(workflow_id=result.workflow_id, index__gt=26))
    assert join.kind == NodeKind.BARRIER and len(join.parents) == 25
    assert join.pending_parents == 3 == len(shards)
    assert [s.pending_parents for s in shards] == [9, 8, 8]
    assert [s.parents[:3] for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert {c for m in Node.objects.filter(index__lt=25) for c in m.children} == {
        s.index for s in shards
    }
    assert Workflow.objects.get(pk=result.workflow_id).size == 30


def test_a_sharded_group_returns_its_members_results_in_order(memory, small_shards):
    result = (group(add.si(i, 1) for i in range(25)) | tsum.s()).apply_async()
    memory.drain()
    assert result.get(timeout=0) == sum(i + 1 for i in range(25))
    join = Node.objects.get(workflow_id=result.workflow_id, index=25)
    assert join.result == [i + 1 for i in range(25)]
    assert len(result.parent.results) == 25


def test_the_member_that_closes_a_sharded_group_costs_one_statement_more(memory, small_shards):
    result = (group(add.si(i, i) for i in range(25)) | tsum.s()).apply_async()
    closes = []
    for _ in range(25):
        closes.append(queries_of(lambda: memory.drain(limit=1)))
    member, closes_shard = 1 + record_and_advance(), 1 + record_and_advance() + 1
    # Two members close a shard; the last one closes its shard, then the join.
    assert sorted(closes[:-1]) == [member] * 22 + [closes_shard] * 2
    assert closes[22:24] == [closes_shard] * 2  # members 22 and 23 close the first two
    assert closes[-1] == closes_shard + 1
    assert queries_of(lambda: memory.drain(limit=1)) == 3
    assert result.get(timeout=0) == sum(2 * i for i in range(25))


@pytest.mark.parametrize("size", [100, 2_000])
def test_the_closing_member_costs_the_same_whatever_the_number_of_shards(memory, size):
    join_shards.JOIN_SHARD_SIZE, before = 10, join_shards.JOIN_SHARD_SIZE
    try:
        result = (group(add.si(i, i) for i in range(size)) | tsum.s()).apply_async()
        memory.drain(limit=size - 1)
        assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance() + 2
    finally:
        join_shards.JOIN_SHARD_SIZE = before
    memory.drain()
    assert result.get(timeout=0) == sum(2 * i for i in range(size))


def test_a_group_of_250_is_not_sharded_and_one_of_1000_has_four_shards(memory):
    small = group(add.si(i, i) for i in range(250)).apply_async()
    assert Node.objects.filter(workflow_id=small.workflow_id).count() == 251
    large = group(add.si(i, i) for i in range(1_000)).apply_async()
    shards = Node.objects.filter(workflow_id=large.workflow_id, options__has_key="join_shard_of")
    assert shards.count() == 4
    assert Node.objects.filter(workflow_id=large.workflow_id).count() == 1_005


def test_a_failed_member_of_a_sharded_group_fails_the_join_and_retried_it_resumes(
    memory, small_shards
):
    members = [add.si(i, 0) for i in range(25)]
    members[12] = fail.si(12)
    result = (group(members) | tsum.s()).apply_async()
    memory.drain()
    join = Node.objects.get(workflow_id=result.workflow_id, index=25)
    assert join.state == State.FAILURE
    assert Node.objects.get(workflow_id=result.workflow_id, index=26).state == State.FAILURE
    failed = Node.objects.get(workflow_id=result.workflow_id, index=12)
    Node.objects.filter(pk=failed.pk).update(task_name="quiet_add", args=[12, 0])  # fixed
    report = retry_node(failed.pk)
    assert report.resumed
    join.refresh_from_db()
    assert join.state == State.PENDING and join.pending_parents == 1
    memory.drain()
    assert result.get(timeout=0) == sum(range(25))


def test_revoking_a_sharded_group_revokes_its_shards(memory, small_shards):
    result = (group(add.si(i, i) for i in range(25)) | tsum.s()).apply_async()
    memory.drain(limit=3)
    result.workflow.revoke()
    memory.drain()
    states = set(
        Node.objects.filter(workflow_id=result.workflow_id, kind=NodeKind.BARRIER).values_list(
            "state", flat=True
        )
    )
    assert states == {State.REVOKED}


def test_a_debounced_sharded_group_folds_later_calls_into_its_run(memory, small_shards):
    def call(extra):
        members = group(add.si(i, extra) for i in range(25))
        return (members | tsum.s()).apply_async(unique_key="batch", debounce=30)

    first, second = call(0), call(1)
    assert first.id == second.id
    assert Node.objects.get(workflow_id=first.workflow_id, index=3).args == [3, 1]
    memory.drain()
    assert second.get(timeout=0) == sum(i + 1 for i in range(25))
