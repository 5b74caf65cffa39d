"""Exact query counts on the hot paths."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_cloudtasks import group
from django_cloudtasks.models import Node
from django_cloudtasks.runner import deliver
from tests.testapp.tasks import quiet_add as add
from tests.testapp.tasks import quiet_sum as tsum

pytestmark = pytest.mark.django_db(transaction=True)


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def record_and_advance():
    """Statements to record a result and advance the children: one on PostgreSQL."""
    return 1 if connection.vendor == "postgresql" else 2


def queries_of(func):
    """Statements the engine ran, leaving out transaction control (SQLite logs BEGIN)."""
    with CaptureQueriesContext(connection) as captured:
        func()
    return len([q for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)])


def test_a_chain_step_costs_a_claim_then_recording_and_advancing(memory):
    (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    first = memory.pending[0]
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance()
    assert len(memory.sent) == 2
    assert first.node_id != memory.sent[1].node_id


def round_trips_of(func):
    """Statements run and, of those, the ones inside an explicit transaction.

    A statement outside one commits on its own; one inside costs two more round
    trips (``BEGIN`` and ``COMMIT``), which Django does not log on PostgreSQL.
    """
    in_transaction = []

    def watch(execute, sql, params, many, context):
        if not sql.startswith(TRANSACTION_CONTROL):  # SQLite's own BEGIN
            in_transaction.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        func()
    return len(in_transaction), sum(in_transaction)


def test_a_chain_step_runs_without_an_explicit_transaction_on_postgresql(memory):
    (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    statements, in_transaction = round_trips_of(lambda: memory.drain(limit=1))
    if connection.vendor == "postgresql":
        # the claim, then recording and advancing: two round trips in all
        assert (statements, in_transaction) == (2, 0)
    else:
        assert (statements, in_transaction) == (3, 2)


@pytest.mark.parametrize("size", [10, 1000])
def test_a_group_member_advances_inside_a_transaction_since_it_may_close_the_join(memory, size):
    (group(add.si(i, i) for i in range(size)) | tsum.s()).apply_async()
    statements, in_transaction = round_trips_of(lambda: memory.drain(limit=1))
    assert statements == 1 + record_and_advance()
    assert in_transaction == record_and_advance()


def test_the_last_step_of_a_workflow_costs_three_queries(memory):
    result = (add.s(1, 1) | add.s(1)).apply_async()
    memory.drain(limit=1)
    assert queries_of(lambda: memory.drain(limit=1)) == 3
    assert result.get(timeout=0) == 3


@pytest.mark.parametrize("size", [10, 1000])
def test_a_group_member_costs_the_same_as_a_chain_step_whatever_the_group_size(memory, size):
    (group(add.si(i, i) for i in range(size)) | tsum.s()).apply_async()
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance()
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance()


@pytest.mark.parametrize("size", [10, 250])  # up to JOIN_SHARD_SIZE: one join row
def test_the_member_that_closes_a_group_costs_one_more_whatever_its_size(memory, size):
    result = (group(add.si(i, i) for i in range(size)) | tsum.s()).apply_async()
    memory.drain(limit=size - 1)
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance() + 1
    assert queries_of(lambda: memory.drain(limit=1)) == 3
    assert result.get(timeout=0) == sum(2 * i for i in range(size))


def test_persisting_ten_thousand_nodes_takes_a_constant_number_of_bulk_queries(memory):
    expr = group(add.si(i, i) for i in range(9_999)) | tsum.s()
    count = queries_of(expr.apply_async)
    assert count == 2  # the workflow row, then every node in one statement
    assert Node.objects.count() == 10_001 + 40  # and the join's forty shards


def test_persisting_ten_thousand_nodes_in_json_batches_takes_one_statement_per_batch(
    memory, monkeypatch
):
    from django_cloudtasks.store import get_store

    store = get_store()  # where rows cannot be streamed (psycopg2): batches of 5,000
    monkeypatch.setattr(store, "insert", store.insert_batches)
    expr = group(add.si(i, i) for i in range(9_999)) | tsum.s()
    # The workflow row, then 10,041 nodes (the join has 40 shards) in batches of 5,000.
    assert queries_of(expr.apply_async) == 1 + 3
    assert Node.objects.count() == 10_041


def test_a_duplicate_delivery_of_a_finished_node_costs_two_queries(memory):
    result = add.s(1, 1).apply_async()
    memory.drain()
    assert queries_of(lambda: deliver(result.id)) == 2


def test_a_group_of_groups_closes_each_join_with_one_statement(memory):
    from tests.testapp.tasks import identity

    # A group directly in a group unrolls into it; a chain ending in a group does not.
    inner = [add.si(0, 0) | group(add.si(i, j) for i in range(3)) for j in range(2)]
    expr = group(inner) | identity.s()
    result = expr.apply_async()
    memory.drain(limit=7)
    # the last member closes its own group, then the outer one: one statement each
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance() + 2
    memory.drain()
    assert result.get(timeout=0) == [[0, 1, 2], [1, 2, 3]]


# -- flow control: what a limit costs ---------------------------------------------------


def test_a_limited_task_costs_one_statement_more_to_take_its_slot_and_one_to_give_it_back(memory):
    from tests.testapp.flow_tasks import one_per_account

    assert queries_of(lambda: one_per_account.delay("q", 0)) == 2 + 1
    assert queries_of(lambda: memory.drain(limit=1)) == 3 + 1


def hand_on():
    """Statements to give a slot to the next in line and take it out: one on PostgreSQL."""
    return 1 if connection.vendor == "postgresql" else 2


def test_a_member_of_a_bounded_group_hands_its_slot_on_with_one_statement_more(memory):
    from tests.testapp.flow_tasks import counting_member

    (group(counting_member.si(i) for i in range(30)).set(max_concurrency=5) | tsum.s()).delay()
    # The member counts its group's members in flight: one query of its own.
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + 1 + record_and_advance() + hand_on()
    memory.drain(limit=24)
    # Nobody waits any more: the slot goes back in the same one statement.
    assert queries_of(lambda: memory.drain(limit=1)) == 1 + 1 + record_and_advance() + 1


def pace_and_eta():
    """Statements to pace a stored node and give it its ETA: one on PostgreSQL."""
    return 1 if connection.vendor == "postgresql" else 2


def test_a_rate_limited_successor_is_paced_with_one_statement_more(memory):
    (add.s(1, 1) | tsum.si([1]).set(rate_limit="1/m") | tsum.si([2]).set(rate_limit="1/m")).delay()
    memory.drain(limit=1)  # the first successor starts at once: its pace had no one before

    assert queries_of(lambda: memory.drain(limit=1)) == 1 + record_and_advance() + pace_and_eta()
    paced = Node.objects.get(index=2)
    assert paced.state == "SCHEDULED" and paced.eta is not None


# -- the attempt log: written by the statement that records the outcome ------------------

#: The statement with which the test tasks ``flaky`` and ``fail`` record their run.
THE_TASK_RECORDS_ITS_RUN = 1


def test_a_retry_costs_a_claim_and_one_statement_that_also_logs_the_attempt(memory):
    from tests.testapp.tasks import flaky

    result = flaky.s(1).apply_async()
    assert queries_of(lambda: memory.drain(limit=1)) == 2 + THE_TASK_RECORDS_ITS_RUN
    # the success: claim, record, finish the workflow
    assert queries_of(lambda: memory.drain(limit=1)) == 3 + THE_TASK_RECORDS_ITS_RUN
    outcomes = [e["outcome"] for e in Node.objects.get(pk=result.id).attempt_log]
    assert outcomes == ["RETRY", "SUCCESS"]


def test_a_failure_costs_a_claim_a_statement_that_also_logs_the_attempt_and_the_workflow(memory):
    from tests.testapp.tasks import fail

    result = fail.si().apply_async()
    assert queries_of(lambda: memory.drain(limit=1)) == 3 + THE_TASK_RECORDS_ITS_RUN
    assert [e["outcome"] for e in Node.objects.get(pk=result.id).attempt_log] == ["FAILURE"]
