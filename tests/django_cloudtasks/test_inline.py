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
from django_cloudtasks.policy import inline_seconds
from django_cloudtasks.runner import deliver
from django_cloudtasks.transports import reset_transport
from tests.testapp.models import Execution
from tests.testapp.tasks import ProcessDied, add, dies_once, identity, quiet_add, tsum

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


def test_an_inline_step_gets_no_cloud_task_of_its_own(inline):
    (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    inline.drain(limit=1)
    assert len(inline.sent) == 1  # only the first step's
    assert Node.objects.filter(state=State.SUCCESS).count() == 3


def test_the_successor_is_claimed_in_the_transaction_that_records_its_parent(inline):
    result = (add.s(1, 1) | dies_once.s() | add.s(1)).apply_async()
    origin = inline.take()
    with pytest.raises(ProcessDied):
        deliver(origin.node_id, origin.task_name, origin.retries)
    first, second, third = Node.objects.order_by("index")
    assert first.state == State.SUCCESS
    assert second.state == State.STARTED
    assert str(second.inline_origin) == origin.node_id
    assert third.state == State.PENDING
    assert inline.pending == []
    assert result.state == State.PENDING


def _die_mid_inline_run(inline):
    result = (add.s(1, 1) | dies_once.s() | add.s(1)).apply_async()
    origin = inline.take()
    with pytest.raises(ProcessDied):
        deliver(origin.node_id, origin.task_name, origin.retries)
    return result, origin


def _expire_leases(seconds=0):
    Node.objects.filter(state=State.STARTED).update(
        lease_until=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_redelivery_of_the_origin_waits_while_the_inline_lease_lives(inline):
    result, origin = _die_mid_inline_run(inline)
    again = deliver(origin.node_id, origin.task_name, origin.retries)
    assert again.status == 409
    assert Execution.objects.filter(task="dies_once").count() == 1
    assert Node.objects.get(index=1).state == State.STARTED
    assert result.state == State.PENDING


def test_a_redelivery_of_the_origin_takes_over_once_the_lease_expired(inline):
    result, origin = _die_mid_inline_run(inline)
    _expire_leases()
    again = deliver(origin.node_id, origin.task_name, origin.retries)
    assert (again.status, again.detail) == (200, "resumed its inline successors")
    assert result.get(timeout=0) == 3
    assert Node.objects.get(index=1).attempts == 2
    assert Execution.objects.filter(task="dies_once").count() == 2
    assert Execution.objects.filter(task="add").count() == 2  # the first step ran once
    # once everything is done, a further redelivery changes nothing
    assert deliver(origin.node_id, origin.task_name, origin.retries).detail == "already finished"


def test_the_sweeper_resends_a_stranded_inline_successor(inline, settings):
    from django_cloudtasks.dispatch import sweep

    result, _ = _die_mid_inline_run(inline)
    _expire_leases(seconds=settings.CLOUDTASKS.get("SWEEP_GRACE", 300) + 1)
    assert sweep().resent == 1
    inline.drain()
    assert result.get(timeout=0) == 3
    assert Execution.objects.filter(task="dies_once").count() == 2


def test_a_duplicate_delivery_of_a_finished_step_costs_three_queries(inline):
    (quiet_add.s(1, 1) | quiet_add.s(1)).apply_async()
    origin = inline.take()
    deliver(origin.node_id, origin.task_name, origin.retries)
    with CaptureQueriesContext(connection) as captured:
        outcome = deliver(origin.node_id, origin.task_name, origin.retries)
    assert outcome.detail == "already finished"
    # the claim finds nothing, one read says why, one looks for a stranded successor
    assert len(captured) == 3


def test_an_inline_step_costs_one_statement_on_postgresql_and_two_elsewhere(inline):
    (quiet_add.s(1, 1) | quiet_add.s(1) | quiet_add.s(1)).apply_async()
    with CaptureQueriesContext(connection) as captured:
        inline.drain(limit=1)
    statements = [q for q in captured if not q["sql"].startswith(("BEGIN", "COMMIT"))]
    # the delivery's claim; then per step, recording it, advancing its successor and
    # claiming that successor (one statement on PostgreSQL, two elsewhere); the last
    # step records its result and finishes the workflow
    per_step = 1 if connection.vendor == "postgresql" else 2
    assert len(statements) == 1 + 2 * per_step + 2
    assert Node.objects.filter(state=State.SUCCESS).count() == 3


def test_inline_steps_run_without_an_explicit_transaction_on_postgresql(inline):
    (quiet_add.s(1, 1) | quiet_add.s(1) | quiet_add.s(1) | quiet_add.s(1)).apply_async()
    in_transaction = []

    def watch(execute, sql, params, many, context):
        if not sql.startswith(("BEGIN", "COMMIT")):
            in_transaction.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        inline.drain(limit=1)
    if connection.vendor == "postgresql":
        # the claim and the three steps that took their successor commit on their own;
        # the last step finishes the workflow too, in a transaction
        assert in_transaction == [False, False, False, False, True, True]
    else:
        assert all(in_transaction[1:])


def test_a_chord_body_runs_in_the_request_of_the_member_that_closes_it(inline):
    result = chord([identity.si(i) for i in range(5)], tsum.s()).apply_async()
    assert inline.drain(limit=5) == 5
    assert result.get(timeout=0) == 10


def test_a_fan_out_runs_one_successor_inline_sends_the_others_and_steals_them_back(inline):
    result = (add.s(1, 1) | group(add.s(i) for i in range(4))).apply_async()
    inline.drain(limit=1)
    # the first member was taken by the statement that advanced it, the other three
    # were sent, then stolen while their group's join still waited
    assert Execution.objects.filter(task="add").count() == 5
    assert result.get(timeout=0) == [2, 3, 4, 5]
    due_now = [d for d in inline.pending if d.eta is None]
    assert len(due_now) == 3
    # their own deliveries find them finished and run nothing again
    assert inline.drain() == 3
    assert Execution.objects.filter(task="add").count() == 5


# -- stealing: a request with budget left runs the queued members of its group -------


def test_one_delivery_runs_a_whole_group_by_stealing_its_queued_members(inline):
    result = group(add.si(i, i) for i in range(6)).apply_async()
    assert inline.drain(limit=1) == 1
    assert result.get(timeout=0) == [0, 2, 4, 6, 8, 10]
    first, *stolen = Node.objects.filter(kind="task").order_by("started_at", "index")
    assert first.index == 0 and first.inline_origin is None
    # the highest index first: the members Cloud Tasks would deliver last
    assert [n.index for n in stolen] == [5, 4, 3, 2, 1]
    assert {n.inline_origin for n in stolen} == {first.pk}
    assert inline.drain() == 5
    assert Execution.objects.filter(task="add").count() == 6


def test_a_chord_body_runs_after_its_members_were_stolen(inline):
    result = chord([identity.si(i) for i in range(5)], tsum.s()).apply_async()
    assert inline.drain(limit=1) == 1
    assert result.get(timeout=0) == 10


def test_members_that_cannot_run_inline_are_left_to_their_own_delivery(inline):
    from tests.testapp.flow_tasks import paced

    members = [
        add.si(0, 0),
        add.si(1, 1).set(queue="other"),
        add.si(2, 2).set(countdown=60),
        paced.si(3),
        add.si(4, 4),
    ]
    group(members).apply_async()
    inline.drain(limit=1)
    ran = {n.index for n in Node.objects.filter(kind="task", state=State.SUCCESS)}
    assert ran == {0, 4}
    assert Node.objects.get(index=1).state == State.QUEUED
    assert Node.objects.get(index=2).state == State.SCHEDULED


def test_a_member_stolen_by_a_run_that_died_is_taken_over_by_the_origins_redelivery(inline):
    result = group([add.si(0, 0), dies_once.si(5), add.si(2, 2)]).apply_async()
    origin = inline.take()
    with pytest.raises(ProcessDied):
        deliver(origin.node_id, origin.task_name, origin.retries)
    died = Node.objects.get(index=1)
    assert died.state == State.STARTED and str(died.inline_origin) == origin.node_id
    # the stolen member's own Cloud Task finds it taken while the lease lives
    own = next(d for d in inline.pending if d.node_id == str(died.pk))
    assert deliver(own.node_id, own.task_name, own.retries).status == 409
    _expire_leases()
    again = deliver(origin.node_id, origin.task_name, origin.retries)
    assert (again.status, again.detail) == (200, "resumed its inline successors")
    assert result.get(timeout=0) == [0, 5, 4]


def test_a_stolen_member_taken_over_by_its_own_delivery_loses_the_mark(inline):
    result = group([add.si(0, 0), dies_once.si(5), add.si(2, 2)]).apply_async()
    origin = inline.take()
    with pytest.raises(ProcessDied):
        deliver(origin.node_id, origin.task_name, origin.retries)
    _expire_leases()
    died = Node.objects.get(index=1)
    own = next(d for d in inline.pending if d.node_id == str(died.pk))
    assert deliver(own.node_id, own.task_name, own.retries).status == 200
    died.refresh_from_db()
    # it ran under its own delivery: a redelivery of it may resume what that ran
    assert died.state == State.SUCCESS and died.inline_origin is None
    assert result.get(timeout=0) == [0, 5, 4]


def test_the_own_delivery_of_a_finished_stolen_member_reads_it_once(inline):
    group(quiet_add.si(i, i) for i in range(3)).apply_async()
    origin = inline.take()
    deliver(origin.node_id, origin.task_name, origin.retries)
    stolen = Node.objects.get(index=2)
    assert stolen.inline_origin is not None
    own = next(d for d in inline.pending if d.node_id == str(stolen.pk))
    with CaptureQueriesContext(connection) as captured:
        outcome = deliver(own.node_id, own.task_name, own.retries)
    assert (outcome.status, outcome.detail) == (200, "already finished")
    # the claim, then the read that says why: nothing it ran can be left to resume
    assert len(captured) == 2


def test_a_steal_looks_farther_down_when_the_end_of_the_group_was_taken(inline):
    group(quiet_add.si(i, i) for i in range(1_000)).apply_async()
    # other requests took the last 600 members: more than two windows' worth
    Node.objects.filter(kind="task", index__gte=400).update(state=State.STARTED)
    origin = inline.take()
    deliver(origin.node_id, origin.task_name, origin.retries)
    done = Node.objects.filter(kind="task", state=State.SUCCESS)
    assert done.count() == 400
    assert set(done.values_list("index", flat=True)) == set(range(400))


def test_a_stolen_member_costs_its_record_alone_on_postgresql(inline):
    group(quiet_add.si(i, i) for i in range(4)).apply_async()
    origin = inline.take()
    with CaptureQueriesContext(connection) as captured:
        deliver(origin.node_id, origin.task_name, origin.retries)
    statements = [q["sql"] for q in captured if not q["sql"].startswith(("BEGIN", "COMMIT"))]
    steals = [sql for sql in statements if sql.startswith("UPDATE") and _is_steal(sql)]
    assert Node.objects.filter(kind="task", state=State.SUCCESS).count() == 4
    if connection.vendor == "postgresql":
        # the claim; per member its record and advance, which also steals the next
        # member while the join waits; the member closing the join closes it and
        # finishes the workflow in two more
        assert len(statements) == 1 + 4 + 2
        assert steals == []
    else:
        # the claim; per member its record, then its advance; per stolen member its
        # steal; the join's close and the workflow's finish
        assert len(statements) == 1 + 4 * 2 + 3 + 2
        assert len(steals) == 3


def test_a_steal_in_the_record_that_finds_nothing_goes_on_under_its_window(inline):
    from django_cloudtasks.store import STEAL_WINDOW

    size = 2 * STEAL_WINDOW
    group(quiet_add.si(i, i) for i in range(size)).apply_async()
    # other requests took the top window: the record's steal finds nothing there
    Node.objects.filter(kind="task", index__gte=size - STEAL_WINDOW).update(state=State.STARTED)
    origin = inline.take()
    with CaptureQueriesContext(connection) as captured:
        deliver(origin.node_id, origin.task_name, origin.retries)
    done = Node.objects.filter(kind="task", state=State.SUCCESS)
    assert set(done.values_list("index", flat=True)) == set(range(size - STEAL_WINDOW))
    steals = [q["sql"] for q in captured if q["sql"].startswith("UPDATE") and _is_steal(q["sql"])]
    # PostgreSQL: the top window was read by the origin's record, so one look under it
    # finds the first member, whose record steals the next, and so on; elsewhere each
    # member is a look of its own, and so are the two empty windows
    expected = 1 if connection.vendor == "postgresql" else STEAL_WINDOW + 1
    assert len(steals) == expected


def test_no_steal_is_tried_without_a_waiting_join(inline):
    (quiet_add.s(1, 1) | quiet_add.s(1)).apply_async()
    with CaptureQueriesContext(connection) as captured:
        inline.drain(limit=1)
    assert not [q for q in captured if _is_steal(q["sql"])]


def _is_steal(sql: str) -> bool:
    """The statement of :meth:`Store.steal` (PostgreSQL's form, or the other one)."""
    return "generate_series" in sql or "DESC LIMIT 1" in sql


def test_a_delayed_successor_is_never_run_inline(inline):
    result = (add.s(1, 1) | add.s(1).set(countdown=60)).apply_async()
    inline.drain(limit=1)
    second = Node.objects.get(index=1)
    assert second.state == State.SCHEDULED
    inline.drain()
    assert result.get(timeout=0) == 3


def test_inline_runs_are_off_by_default_for_the_in_process_transports(memory):
    result = (add.s(1, 1) | add.s(1)).apply_async()
    memory.drain(limit=1)
    assert Node.objects.get(index=1).state == State.QUEUED
    memory.drain()
    assert result.get(timeout=0) == 3


# -- the default budget -------------------------------------------------------------


def test_deliveries_from_cloud_tasks_run_successors_inline_for_five_seconds_by_default(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": None}
    assert inline_seconds("default", None, in_process=False) == 5.0


def test_the_default_budget_is_a_tenth_of_a_short_dispatch_deadline(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": None, "DISPATCH_DEADLINE": 20}
    assert inline_seconds("default", None, in_process=False) == 2.0
    assert inline_seconds("default", 15, in_process=False) == 1.5  # the node's own deadline


def test_a_queue_with_rate_limits_runs_nothing_inline_by_default(settings):
    paced = {"slow": {"max_dispatches_per_second": 5}, "wide": {"max_attempts": 3}}
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": None, "QUEUES": paced}
    assert inline_seconds("slow", None, in_process=False) == 0
    assert inline_seconds("wide", None, in_process=False) == 5.0


def test_inline_seconds_when_set_is_the_budget_everywhere(settings):
    paced = {"slow": {"max_dispatches_per_second": 5}}
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": 30, "QUEUES": paced}
    assert inline_seconds("slow", None, in_process=True) == 30
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": 0}
    assert inline_seconds("default", None, in_process=False) == 0


def test_a_step_that_ends_after_the_budget_takes_no_successor(settings, memory):
    from django_cloudtasks.transports import get_transport
    from tests.testapp.tasks import slow

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "memory", "INLINE_SECONDS": 0.05}
    reset_transport()
    transport = get_transport()
    result = (slow.si(0.1, 0) | add.si(1, 1)).apply_async()
    transport.drain(limit=1)
    assert Node.objects.get(index=1).state == State.QUEUED
    transport.drain()
    assert result.get(timeout=0) == 2
