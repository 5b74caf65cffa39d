"""Workflows run through the engine under the eager and memory transports."""

from __future__ import annotations

import pytest

from django_cloudtasks import chain, chord, group, task
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.models import Node
from django_cloudtasks.runner import deliver
from django_cloudtasks.transports import get_transport
from tests.testapp.tasks import (
    CustomError,
    add,
    always_disconnects,
    fail,
    fail_custom,
    identity,
    on_error,
    tsum,
)

pytestmark = pytest.mark.django_db(transaction=True)


def run(expr, **options):
    result = expr.apply_async(**options)
    transport = get_transport()
    if transport.name == "memory":
        transport.drain()
    return result


def test_a_chain_passes_results_along(transport):
    assert run(add.s(4, 4) | add.s(8) | add.s(16)).get(timeout=5) == 32


def test_a_group_after_a_task_gives_each_member_the_result(transport):
    assert run(add.s(5, 6) | group(add.s(1) | add.s(2), add.s(3))).get(timeout=5) == [14, 14]


def test_a_chord_body_gets_the_header_results_in_member_order(transport):
    assert run(chord([identity.si(i) for i in range(10)], identity.s())).get(timeout=5) == list(
        range(10)
    )


def test_nested_groups_give_nested_lists(transport):
    expr = group(
        identity.si(1),
        identity.si(2),
        chain(identity.si(5), group(identity.si(3), identity.si(4))),
    )
    assert run(expr).get(timeout=5) == [1, 2, [3, 4]]


def test_group_into_group_into_task(transport):
    expr = add.si(1, 0) | group(add.s(1), add.s(1)) | group(tsum.s(), tsum.s()) | tsum.s()
    assert run(expr).get(timeout=5) == 8


def test_a_group_of_a_thousand_then_a_sum(transport, executions):
    result = run(group(add.si(i, i) for i in range(1000)) | tsum.s())
    assert result.get(timeout=30) == sum(2 * i for i in range(1000))
    assert executions() == {"add": 1000, "tsum": 1}


def test_empty_group_and_empty_chord_header(transport):
    assert run(group()).get(timeout=5) == []
    assert run(chord([], tsum.s())).get(timeout=5) == 0
    # Between chain members an empty group is skipped, as in Celery.
    assert run(add.s(1, 1) | group() | identity.s()).get(timeout=5) == 2


def test_a_chain_of_ten_thousand_runs_under_eager_without_recursion(eager):
    expr = chain(add.s(0, 1), *[add.s(1) for _ in range(9_999)])
    assert run(expr).get(timeout=60) == 10_000


def test_a_failing_chain_stops_raises_the_original_error_and_calls_the_errback_once(
    transport, executions
):
    expr = chain(add.s(1, 2), fail.s(), add.si(3, 4)).on_error(on_error.s())
    result = run(expr)
    with pytest.raises(ValueError, match="failing on purpose with \\[3\\]"):
        result.get(timeout=5)
    assert result.state == State.FAILURE
    assert result.workflow.status == WorkflowStatus.FAILURE
    assert executions() == {"add": 1, "fail": 1, "on_error": 1}
    record = Node.objects.get(task_name="on_error")
    assert record.state == State.SUCCESS
    failed = Node.objects.get(task_name="fail")
    assert "failing on purpose" in failed.error_traceback


def test_the_errback_receives_what_it_accepts(transport):
    from tests.testapp.models import Execution

    result = run(fail.s(7).on_error(on_error.s()))
    with pytest.raises(ValueError):
        result.get(timeout=5)
    seen = Execution.objects.get(task="on_error").value
    assert seen["id"] == result.id
    assert seen["name"] == "fail"
    assert seen["error"] == "ValueError: failing on purpose with [7]"
    assert seen["payload"] == {"args": [7]}


def test_downstream_nodes_of_a_failure_carry_the_original_error(transport):
    result = run(chain(fail.si(), add.si(1, 1), add.s(2)))
    with pytest.raises(ValueError):
        result.get(timeout=5)
    downstream = Node.objects.filter(task_name="add")
    assert {n.state for n in downstream} == {State.FAILURE}
    assert {n.error_type for n in downstream} == {"ValueError"}


def test_a_chord_with_a_failing_member_never_runs_its_body(transport, executions):
    result = run(chord([fail.s(), identity.si(1), identity.si(2)], identity.s()))
    with pytest.raises(ValueError):
        result.get(timeout=5)
    assert executions() == {"fail": 1, "identity": 2}
    assert Node.objects.get(task_name="identity", input_rule="prepend").state == State.FAILURE


def test_a_non_builtin_exception_is_rebuilt_with_its_name(transport):
    result = run(fail_custom.si())
    with pytest.raises(Exception) as info:
        result.get(timeout=5)
    assert type(info.value).__name__ == CustomError.__name__
    assert str(info.value) == "a custom error"


def test_get_without_propagate_returns_the_exception(transport):
    result = run(fail.si())
    error = result.get(timeout=5, propagate=False)
    assert isinstance(error, ValueError)
    assert result.failed() and result.ready() and not result.successful()


def test_a_non_json_result_fails_the_node_with_a_clear_message(transport):
    from tests.testapp.tasks import not_json

    result = run(not_json.si())
    with pytest.raises(TypeError, match="not JSON serializable"):
        result.get(timeout=5)


@task(name="engine_returns_not_finite", autoretry_for=(Exception,), max_retries=3)
def returns_not_finite(which):
    """Returns a number JSON cannot carry; retries on any exception."""
    return {"inf": 1e400, "nan": [float("nan")], "-inf": {"a": -float("inf")}}[which]


@pytest.mark.parametrize("which", ["inf", "nan", "-inf"])
def test_a_result_json_cannot_store_fails_the_node_for_good(transport, which):
    result = run(returns_not_finite.si(which) | add.s(1))

    with pytest.raises(TypeError, match="Out of range float values are not JSON compliant"):
        result.get(timeout=5)
    first = Node.objects.get(index=0)
    assert (first.state, first.attempts) == (State.FAILURE, 1)
    # The value is not stored; the failure keeps its exception's arguments, as any does
    # (Python 3.12 and later add the value to the message).
    (message,) = first.result
    assert message.startswith(
        "the return value is not JSON serializable: Out of range float values are not "
        "JSON compliant"
    )
    assert Node.objects.get(index=1).state == State.FAILURE


@task(name="engine_raises_not_finite")
def raises_not_finite():
    """Fails with an exception whose argument JSON cannot carry."""
    raise ValueError(float("inf"))


def test_an_exception_whose_arguments_json_cannot_store_fails_the_node(transport):
    result = run(raises_not_finite.si() | add.s(1))

    with pytest.raises(ValueError, match=r"^inf$"):
        result.get(timeout=5)
    first = Node.objects.get(index=0)
    assert (first.state, first.attempts, first.lease_until) == (State.FAILURE, 1, None)
    assert Node.objects.get(index=1).state == State.FAILURE


@task(name="engine_retries_not_finite", bind=True, max_retries=3)
def retries_not_finite(self, which):
    """Asks for a retry the database cannot store."""
    if which == "args":
        raise self.retry(args=[float("nan")], countdown=0)
    if which == "kwargs":
        raise self.retry(kwargs={"which": [float("-inf")]}, countdown=0)
    raise self.retry(countdown=float("inf"))


@pytest.mark.parametrize(
    ("which", "error", "message"),
    [
        ("args", TypeError, r"args\[0\] of the retry of 'engine_retries_not_finite' is nan"),
        ("kwargs", TypeError, r"kwargs\['which'\]\[0\] of the retry of .* is -inf"),
        ("countdown", ValueError, r"countdown of the retry of .* is inf, which is not a delay"),
    ],
)
def test_a_retry_the_database_cannot_store_fails_the_node_for_good(
    transport, executions, which, error, message
):
    result = run(retries_not_finite.si(which))

    with pytest.raises(error, match=message):
        result.get(timeout=5)
    node = Node.objects.get()
    assert (node.state, node.retries, node.lease_until) == (State.FAILURE, 0, None)


@task(name="engine_reports_not_finite", bind=True)
def reports_not_finite(self):
    """Reports progress JSON cannot carry, and returns what that raised."""
    try:
        self.update_state(state="PROGRESS", meta={"done": float("nan")})
    except TypeError as exc:
        return str(exc)
    return "stored"


def test_progress_json_cannot_store_is_a_type_error_in_the_task(transport):
    message = run(reports_not_finite.si()).get(timeout=5)

    assert message == "meta['done'] of update_state() is nan, which JSON cannot represent"


def test_arguments_that_cannot_bind_are_refused_at_apply_async(memory):
    with pytest.raises(TypeError, match="parent's result as first argument"):
        (add.s(1, 2) | add.s(3, 4)).apply_async()
    with pytest.raises(TypeError, match="missing a required argument"):
        add.s(1).apply_async()
    assert Node.objects.count() == 0
    assert memory.sent == []


def test_one_group_member_that_cannot_bind_is_refused_among_many_that_can(memory):
    from canvas import group

    members = [add.s(i, i) for i in range(50)]
    members[37] = add.s(1, 2, c=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        group(members).apply_async()
    members[37] = add.s(1, 2, 3)
    with pytest.raises(TypeError, match="too many positional arguments"):
        group(members).apply_async()
    assert Node.objects.count() == 0
    assert memory.sent == []


def test_unregistered_task_names_are_refused_at_apply_async(memory):
    from canvas import Signature
    from django_cloudtasks.exceptions import NotRegistered

    with pytest.raises(NotRegistered, match="no task is registered as 'nope'"):
        Signature("nope").apply_async()


def test_countdown_on_a_node_counts_from_when_it_becomes_ready(memory):
    from datetime import timedelta

    from django.utils import timezone

    before = timezone.now()
    result = (add.s(1, 1) | add.s(1).set(countdown=60)).apply_async()
    first = memory.sent[0]
    assert first.eta is None
    memory.drain(limit=1)
    second = memory.sent[1]
    assert second.eta >= before + timedelta(seconds=60)
    assert Node.objects.get(pk=second.node_id).state == State.SCHEDULED
    memory.drain()
    assert result.get(timeout=1) == 3


def test_countdown_on_apply_async_delays_the_whole_canvas(memory):
    from datetime import timedelta

    from django.utils import timezone

    before = timezone.now()
    group(add.si(1, 1), add.si(2, 2)).apply_async(countdown=300)
    assert len(memory.sent) == 2
    assert all(d.eta >= before + timedelta(seconds=300) for d in memory.sent)


def test_an_eta_beyond_thirty_days_is_parked_and_sent_when_within_reach(memory):
    from datetime import timedelta

    from django.utils import timezone

    from django_cloudtasks.dispatch import sweep

    result = add.s(1, 2).apply_async(countdown=45 * 24 * 3600)
    assert memory.sent == []
    node = Node.objects.get(pk=result.id)
    assert node.parked and node.state == State.SCHEDULED
    assert sweep().unparked == 0
    assert sweep(now=timezone.now() + timedelta(days=20)).unparked == 1
    assert [d.node_id for d in memory.sent] == [result.id]
    assert not Node.objects.get(pk=result.id).parked


def test_an_expired_node_is_revoked_instead_of_run(memory, executions):
    from datetime import timedelta

    from django.utils import timezone

    result = add.s(1, 2).set(expires=10).apply_async()
    Node.objects.filter(pk=result.id).update(ready_at=timezone.now() - timedelta(seconds=11))
    memory.drain()
    assert result.state == State.REVOKED
    assert executions() == {}


def test_state_walks_pending_queued_started_success(memory):
    from tests.testapp.tasks import own_state

    result = (add.s(1, 1) | own_state.si()).apply_async()
    assert result.state == State.PENDING
    memory.drain(limit=1)
    # Celery's vocabulary: a queued task is PENDING; the finer state says QUEUED.
    assert result.state == State.PENDING
    assert result.detailed_state == State.QUEUED
    memory.drain()
    assert result.get(timeout=1) == State.STARTED
    assert result.state == State.SUCCESS


def test_get_raises_a_timeout_error_when_nothing_runs(memory):
    from django_cloudtasks.exceptions import TimeoutError as CloudTasksTimeout

    result = add.s(1, 2).apply_async()
    with pytest.raises(CloudTasksTimeout, match=r"timed out after 0\.3s"):
        result.get(timeout=0.3, interval=0.05)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.1, interval=0.05)


def test_a_timeout_says_a_node_waits_on_its_parents(memory):
    result = (add.s(1, 2) | add.s(3)).apply_async()
    with pytest.raises(TimeoutError, match=r"is PENDING, waiting on 1 unfinished parents"):
        result.get(timeout=0, interval=0)


def test_a_timeout_says_when_a_scheduled_node_is_due(memory):
    result = add.si(1, 2).apply_async(countdown=3600)
    due = Node.objects.get(pk=result.id).due_at()
    assert due is not None
    with pytest.raises(TimeoutError) as caught:
        result.get(timeout=0, interval=0)
    assert f"is SCHEDULED until {due.isoformat(timespec='seconds')}" in str(caught.value)


def test_a_timeout_says_a_queued_node_was_never_delivered(memory):
    result = add.si(1, 2).apply_async()
    with pytest.raises(TimeoutError) as caught:
        result.get(timeout=0, interval=0)
    message = str(caught.value)
    assert f"node {result.id[:8]} (add) is QUEUED: sent, never delivered" in message
    assert "drain()" in message


def test_a_timeout_says_a_retry_is_due_and_after_which_error(memory):
    result = always_disconnects.delay()
    memory.drain(limit=1)
    with pytest.raises(TimeoutError, match=r"is RETRY 1 until .* after ConnectionError: "):
        result.get(timeout=0, interval=0)


def test_results_know_their_parent_children_and_group_members(memory):
    result = (add.s(1, 1) | group(add.s(1), add.s(2))).apply_async()
    memory.drain()
    assert result.get(timeout=1) == [3, 4]
    assert [r.get() for r in result.results] == [3, 4]
    assert result.completed_count() == 2 and result.successful()
    first = result.results[0]
    assert first.parent.get() == 2
    assert len(first.parent.children) == 2


def test_the_workflow_result_reports_status_and_nodes(memory):
    from django_cloudtasks.results import WorkflowResult

    result = (add.s(1, 1) | add.s(1)).apply_async()
    workflow = WorkflowResult(result.workflow_id)
    assert workflow.status == WorkflowStatus.PENDING and workflow.state == State.PENDING
    memory.drain(limit=1)
    assert workflow.state == State.STARTED
    memory.drain()
    assert workflow.get(timeout=1) == 3
    assert [n.state for n in workflow.nodes()] == [State.SUCCESS, State.SUCCESS]


def test_an_eta_on_a_later_node_is_kept_when_it_becomes_ready(memory):
    from datetime import timedelta

    from django.utils import timezone

    moment = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    (add.s(1, 1) | add.s(1).set(eta=moment)).apply_async()
    memory.drain(limit=1)
    assert memory.sent[1].eta == moment
    node = Node.objects.get(pk=memory.sent[1].node_id)
    assert node.state == State.SCHEDULED and not node.parked


def test_task_level_expires_and_dispatch_deadline_apply_to_its_nodes(memory, settings):
    from django_cloudtasks import task
    from django_cloudtasks.registry import registry

    @task(name="policy_defaults_probe", expires=60, dispatch_deadline=120, queue="slow")
    def probe():
        return 1

    try:
        result = probe.s().set(expires=5).apply_async()
        node = Node.objects.get(pk=result.id)
        assert node.options["expires"] == 5  # the signature's own option wins
        assert node.options["dispatch_deadline"] == 120
        assert node.queue == "slow"
        assert memory.sent[0].dispatch_deadline == 120
    finally:
        registry.unregister("policy_defaults_probe")


def test_a_member_finishing_after_its_group_failed_leaves_the_failed_join_as_it_was(memory):
    result = chord([fail.si(), identity.si(1), identity.si(2)], tsum.s()).apply_async()
    failing, *others = sorted(memory.pending, key=lambda d: d.task_name != "fail")
    deliver(failing.node_id)
    join = Node.objects.get(workflow_id=result.workflow_id, kind="barrier")
    assert join.state == State.FAILURE and join.pending_parents == 3

    for dispatch in others:
        deliver(dispatch.node_id)

    join.refresh_from_db()
    assert join.state == State.FAILURE
    assert join.pending_parents == 3
    assert Node.objects.get(workflow_id=result.workflow_id, task_name="tsum").pending_parents == 1


def test_apply_async_name_names_the_workflow(memory):
    from django_cloudtasks.models import Workflow

    named = (add.s(1, 2) | add.s(3)).apply_async(name="resize avatar 42")
    single = add.apply_async((1, 2), name="one sum")
    plain = (add.s(1, 2) | add.s(3)).apply_async()

    assert Workflow.objects.get(nodes__pk=named.id).name == "resize avatar 42"
    assert Workflow.objects.get(nodes__pk=single.id).name == "one sum"
    assert Workflow.objects.get(nodes__pk=plain.id).name == "a chain starting with 'add'"
    assert all("name" not in n.options for n in Node.objects.all())
    memory.drain()
    assert named.get(timeout=1) == 6


@pytest.mark.parametrize("name", ["", "   ", 42, "x" * 201])
def test_a_run_name_must_be_a_short_non_empty_string(memory, name):
    with pytest.raises(TypeError, match="option 'name' of apply_async"):
        add.s(1, 2).apply_async(name=name)
    assert not Node.objects.exists()
