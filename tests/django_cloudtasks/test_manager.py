"""``CloudChainManager``: the original README's examples, and its canvas equivalents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from canvas import Expression, Signature, group
from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.exceptions import NotRegistered
from django_cloudtasks.manager import CloudChainManager
from django_cloudtasks.models import Node
from django_cloudtasks.transports import get_transport
from tests.testapp import tasks
from tests.testapp.models import Execution

run_in_db = pytest.mark.django_db(transaction=True)


def finish(transport: str) -> None:
    """Run whatever the memory transport holds (the eager one already ran it)."""
    if transport == "memory":
        get_transport().drain()  # type: ignore[attr-defined]


def recorded(task: str) -> list[Any]:
    """The values a test task recorded, in execution order."""
    return list(Execution.objects.filter(task=task).order_by("id").values_list("value", flat=True))


# -- the README examples, each with its canvas equivalent ----------------------------------


def readme_single_task() -> CloudChainManager:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 4, "b": 5})
    return chain_mgr


def readme_chain() -> CloudChainManager:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 4, "b": 5})
    chain_mgr.add_task("sum", {"b": 10})  # auto-inject result from previous task into 'a'
    return chain_mgr


def readme_group() -> CloudChainManager:
    chain_mgr = CloudChainManager()
    chain_mgr.add_group(
        [
            {"endpoint_path": "sum", "payload": {"a": 3, "b": 3}},
            {"endpoint_path": "sum", "payload": {"a": 7, "b": 2}},
        ]
    )
    chain_mgr.add_task("sum", {"a": 4, "b": 5}, delay_seconds=30)
    return chain_mgr


def readme_delay() -> CloudChainManager:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 2, "b": 1}, delay_seconds=300)
    return chain_mgr


def readme_chain_group() -> CloudChainManager:
    c1 = CloudChainManager()
    c1.add_task("sum", {"a": 4, "b": 5})
    c2 = CloudChainManager()
    c2.add_task("sum", {"a": 2, "b": 5})
    c3 = CloudChainManager()
    c3.add_chain_group(c1, c2)
    return c3


@dataclass(frozen=True)
class Example:
    manager: Callable[[], CloudChainManager]
    canvas: Callable[[], Expression]
    result: Any
    executions: dict[str, int]


EXAMPLES = {
    "single task": Example(readme_single_task, lambda: tasks.sum.si(a=4, b=5), 9, {"sum": 1}),
    "chain": Example(
        readme_chain, lambda: tasks.sum.si(a=4, b=5) | tasks.sum.s(b=10), 19, {"sum": 2}
    ),
    "group": Example(
        readme_group,
        lambda: (
            group(tasks.sum.si(a=3, b=3), tasks.sum.si(a=7, b=2))
            | tasks.sum.si(a=4, b=5).set(countdown=30)
        ),
        9,
        {"sum": 3},
    ),
    "delay": Example(
        readme_delay, lambda: tasks.sum.si(a=2, b=1).set(countdown=300), 3, {"sum": 1}
    ),
    "chain group": Example(
        readme_chain_group,
        lambda: group(tasks.sum.si(a=4, b=5), tasks.sum.si(a=2, b=5)),
        [9, 7],
        {"sum": 2},
    ),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_readme_example_compiles_to_its_canvas_equivalent(name):
    example = EXAMPLES[name]
    assert example.manager().to_expression() == example.canvas()


@run_in_db
@pytest.mark.parametrize("how", ["manager", "canvas"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_each_readme_example_gives_its_documented_result(name, how, transport, executions):
    example = EXAMPLES[name]
    res = example.manager().run() if how == "manager" else example.canvas().apply_async()
    finish(transport)

    assert res.get(timeout=5) == example.result
    assert res.state == State.SUCCESS
    assert res.workflow.status == WorkflowStatus.SUCCESS
    assert {node.state for node in res.workflow.nodes()} == {State.SUCCESS}
    assert executions() == example.executions


@run_in_db
def test_the_chain_example_injects_the_previous_result_into_a(transport):
    res = readme_chain().run()
    finish(transport)

    assert res.get(timeout=5) == 19
    assert recorded("sum") == [[4, 5], [9, 10]]


@run_in_db
def test_the_group_example_runs_the_group_first_and_delays_the_last_step(memory):
    res = readme_group().run()
    assert len(memory.sent) == 2  # only the group's members are ready
    assert memory.sent[0].eta is None and memory.sent[1].eta is None

    memory.drain()

    assert res.get(timeout=5) == 9
    assert recorded("sum") == [[3, 3], [7, 2], [4, 5]]
    assert len(memory.sent) == 3
    last = Node.objects.get(pk=memory.sent[2].node_id)
    assert last.task_name == "sum" and last.kwargs == {"a": 4, "b": 5}
    assert memory.sent[2].eta == last.ready_at + timedelta(seconds=30)


@run_in_db
def test_the_delay_example_sends_the_task_with_an_eta_300_seconds_ahead(memory, executions):
    before = timezone.now()
    res = readme_delay().run()
    after = timezone.now()

    assert res.state == State.PENDING and res.detailed_state == State.SCHEDULED
    assert len(memory.sent) == 1
    eta = memory.sent[0].eta
    assert eta is not None
    assert before + timedelta(seconds=300) <= eta <= after + timedelta(seconds=300)
    assert executions() == {}

    memory.drain()  # the memory transport records ETAs without waiting for them
    assert res.get(timeout=5) == 3
    assert executions() == {"sum": 1}


def readme_error_callback() -> CloudChainManager:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("faulty_task", {"a": 1, "b": 2}, error_callback="my_error_handler")
    return chain_mgr


def test_the_error_callback_example_compiles_to_its_canvas_equivalent():
    expected = tasks.faulty_task.si(a=1, b=2).on_error(tasks.my_error_handler.s())
    assert readme_error_callback().to_expression() == expected


@run_in_db
@pytest.mark.parametrize("how", ["manager", "canvas"])
def test_the_error_callback_example_calls_the_handler_once_with_the_failure(
    how, transport, executions
):
    if how == "manager":
        res = readme_error_callback().run()
    else:
        sig = tasks.faulty_task.si(a=1, b=2).on_error(tasks.my_error_handler.s())
        res = sig.apply_async()
    finish(transport)

    assert res.state == State.FAILURE
    with pytest.raises(ValueError, match="Test error: inputs 1, 2"):
        res.get(timeout=5)
    assert res.workflow.status == WorkflowStatus.FAILURE
    assert executions() == {"my_error_handler": 1}
    [info] = recorded("my_error_handler")
    assert info["id"] == res.id
    assert info["name"] == "faulty_task"
    assert "Test error: inputs 1, 2" in info["error"]
    assert info["payload"] == {"a": 1, "b": 2}
    [errback] = Node.objects.filter(kind=NodeKind.ERRBACK)
    assert errback.task_name == "my_error_handler" and errback.state == State.SUCCESS


# -- result injection ---------------------------------------------------------------------


@run_in_db
def test_the_result_goes_to_the_one_parameter_left_unset_even_when_it_is_not_the_first(
    transport,
):
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    mgr.add_task("legacy_subtract", {"a": 100})
    assert mgr.to_expression() == tasks.sum.si(a=4, b=5) | Signature(
        "legacy_subtract", kwargs={"a": 100}, options={"result_kwarg": "b"}
    )

    res = mgr.run()
    finish(transport)

    assert res.get(timeout=5) == 91
    assert recorded("legacy_subtract") == [[100, 9]]


@run_in_db
def test_a_step_whose_payload_sets_everything_ignores_the_previous_result(transport):
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    mgr.add_task("legacy_subtract", {"a": 10, "b": 3})
    res = mgr.run()
    finish(transport)

    assert res.get(timeout=5) == 7
    assert recorded("legacy_subtract") == [[10, 3]]


@run_in_db
def test_a_required_parameter_is_preferred_to_one_with_a_default(transport):
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5}).add_task("legacy_scale", {})
    res = mgr.run()
    finish(transport)

    assert res.get(timeout=5) == 18
    assert recorded("legacy_scale") == [[9, 2]]


@run_in_db
def test_a_lone_parameter_with_a_default_receives_the_result_when_all_else_is_set(transport):
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    mgr.add_task("legacy_scale", {"value": 3})
    res = mgr.run()
    finish(transport)

    assert res.get(timeout=5) == 27
    assert recorded("legacy_scale") == [[3, 9]]


@run_in_db
def test_each_group_member_after_a_step_follows_the_injection_rule(transport, executions):
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    mgr.add_group(
        [
            {"endpoint_path": "legacy_subtract", "payload": {"a": 100}},
            {"endpoint_path": "sum", "payload": {"b": 1}},
            {"endpoint_path": "sum", "payload": {"a": 1, "b": 1}},
        ]
    )
    res = mgr.run()
    finish(transport)

    assert res.get(timeout=5) == [91, 10, 2]
    assert executions() == {"sum": 3, "legacy_subtract": 1}


@run_in_db
def test_the_step_after_a_chain_group_receives_the_list_of_their_results(transport):
    c3 = readme_chain_group().add_task("legacy_total", {})
    res = c3.run()
    finish(transport)

    assert res.get(timeout=5) == 16
    assert recorded("legacy_total") == [[9, 7]]


@run_in_db
def test_chains_in_a_chain_group_after_a_step_receive_its_result(transport):
    first = CloudChainManager().add_task("legacy_subtract", {"a": 100})
    second = CloudChainManager().add_task("sum", {"a": 1, "b": 1}).add_task("sum", {"a": 5})
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5}).add_chain_group(first, second)
    res = mgr.run()
    finish(transport)

    assert res.get(timeout=5) == [91, 7]
    assert recorded("sum") == [[4, 5], [1, 1], [5, 2]]


# -- add_chain ------------------------------------------------------------------------------


@run_in_db
def test_a_chain_added_with_add_chain_receives_the_previous_result(transport, executions):
    c1 = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    c2 = CloudChainManager().add_task("legacy_subtract", {"a": 100}).add_task("sum", {"b": 1})
    res = c1.add_chain(c2).run()
    finish(transport)

    assert res.get(timeout=5) == 92
    assert recorded("legacy_subtract") == [[100, 9]]
    assert executions() == {"sum": 2, "legacy_subtract": 1}
    assert {node.state for node in res.workflow.nodes()} == {State.SUCCESS}


@run_in_db
def test_a_chain_added_with_add_chain_runs_after_steps_added_later(transport):
    c2 = CloudChainManager().add_task("legacy_subtract", {"a": 100})
    c1 = CloudChainManager().add_task("sum", {"a": 4, "b": 5}).add_chain(c2)
    c1.add_task("sum", {"b": 1})
    res = c1.run()
    finish(transport)

    assert res.get(timeout=5) == 90
    assert recorded("sum") == [[4, 5], [9, 1]]
    assert recorded("legacy_subtract") == [[100, 10]]


@run_in_db
def test_several_chains_added_with_add_chain_run_in_parallel_on_the_same_result(transport):
    c1 = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    c1.add_chain(CloudChainManager().add_task("legacy_subtract", {"a": 100}))
    c1.add_chain(CloudChainManager().add_task("legacy_scale", {}))
    res = c1.run()
    finish(transport)

    assert res.get(timeout=5) == [91, 18]


# -- failures downstream --------------------------------------------------------------------


@run_in_db
def test_a_failing_step_stops_the_chain_and_runs_its_callback_once(transport, executions):
    mgr = CloudChainManager()
    mgr.add_task("sum", {"a": 1, "b": 1})
    mgr.add_task("faulty_task", {"b": 2}, error_callback="my_error_handler")
    mgr.add_task("sum", {"b": 3})
    res = mgr.run()
    finish(transport)

    assert res.state == State.FAILURE
    assert res.workflow.status == WorkflowStatus.FAILURE
    assert executions() == {"sum": 1, "my_error_handler": 1}
    [info] = recorded("my_error_handler")
    assert info["name"] == "faulty_task"
    assert "Test error: inputs 2, 2" in info["error"]
    [last] = [n for n in res.workflow.nodes() if n.index == 2]
    assert last.state == State.FAILURE


@run_in_db
def test_the_callback_payload_includes_the_argument_injected_from_the_previous_step(
    transport,
):
    mgr = CloudChainManager().add_task("sum", {"a": 1, "b": 1})
    mgr.add_task("faulty_task", {"b": 2}, error_callback="my_error_handler")
    mgr.run()
    finish(transport)

    [info] = recorded("my_error_handler")
    assert info["payload"] == {"a": 2, "b": 2}


@run_in_db
def test_a_group_error_callback_runs_for_the_failed_member_only(transport, executions):
    mgr = CloudChainManager()
    mgr.add_group(
        [
            {"endpoint_path": "sum", "payload": {"a": 1, "b": 1}},
            {"endpoint_path": "faulty_task", "payload": {"a": 3, "b": 4}},
        ],
        error_callback="my_error_handler",
    )
    mgr.add_task("legacy_total", {})
    res = mgr.run()
    finish(transport)

    assert res.state == State.FAILURE
    assert executions() == {"sum": 1, "my_error_handler": 1}
    [info] = recorded("my_error_handler")
    assert info["name"] == "faulty_task" and info["payload"] == {"a": 3, "b": 4}


# -- errors at add time ---------------------------------------------------------------------


def test_a_step_that_leaves_several_parameters_unset_after_another_is_refused():
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    with pytest.raises(ValueError, match=r"'legacy_combine'.*'b', 'c' unset"):
        mgr.add_task("legacy_combine", {"a": 1})
    assert mgr.to_expression() == tasks.sum.si(a=4, b=5)  # nothing was added


def test_an_ambiguous_group_member_after_a_step_is_refused():
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    with pytest.raises(ValueError, match=r"'sum'.*'a', 'b' unset"):
        mgr.add_group([{"endpoint_path": "sum", "payload": {}}])


def test_an_ambiguous_first_step_is_refused_when_the_chain_is_attached():
    ambiguous = CloudChainManager().add_task("legacy_combine", {"a": 1})
    mgr = CloudChainManager().add_task("sum", {"a": 4, "b": 5})
    with pytest.raises(ValueError, match=r"'legacy_combine'.*'b', 'c' unset"):
        mgr.add_chain(ambiguous)
    with pytest.raises(ValueError, match=r"'legacy_combine'.*'b', 'c' unset"):
        mgr.add_chain_group(ambiguous)
    CloudChainManager().add_chain_group(ambiguous)  # first step: nothing to inject


@run_in_db
def test_a_first_step_that_leaves_a_required_parameter_unset_fails_at_run(transport):
    mgr = CloudChainManager().add_task("sum", {"b": 10})
    with pytest.raises(TypeError, match=r"sum.*'a'"):
        mgr.run()
    assert not Node.objects.exists()


def test_an_unknown_task_name_is_refused_at_add_time_with_suggestions():
    mgr = CloudChainManager()
    with pytest.raises(NotRegistered, match=r"no task is registered as 'sums'.*'sum'"):
        mgr.add_task("sums", {"a": 1, "b": 2})
    with pytest.raises(NotRegistered, match="'nope'"):
        mgr.add_group([{"endpoint_path": "nope"}])
    with pytest.raises(NotRegistered, match="'no_handler'"):
        mgr.add_task("sum", {"a": 1, "b": 2}, error_callback="no_handler")


def test_an_error_callback_that_cannot_take_the_failure_is_refused():
    with pytest.raises(TypeError, match=r"'legacy_needs_value' requires 'value'"):
        CloudChainManager().add_task("sum", {"a": 1, "b": 2}, error_callback="legacy_needs_value")


@pytest.mark.parametrize("payload", [[4, 5], "a=4", 45])
def test_a_payload_that_is_not_a_dict_is_refused(payload):
    with pytest.raises(TypeError, match="payload of 'sum' must be a dict"):
        CloudChainManager().add_task("sum", payload)


def test_a_payload_that_does_not_fit_the_task_is_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        CloudChainManager().add_task("sum", {"a": 1, "c": 2})
    with pytest.raises(TypeError, match="JSON"):
        CloudChainManager().add_task("sum", {"a": 1, "b": {1, 2}})


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        ({"endpoint_path": "sum"}, TypeError, "list of dicts"),
        ([], ValueError, "at least one task"),
        (["sum"], TypeError, "must be a dict"),
        ([{"payload": {"a": 1, "b": 2}}], ValueError, "no 'endpoint_path'"),
        ([{"endpoint_path": "sum", "delay": 3}], ValueError, r"unknown keys \['delay'\]"),
    ],
)
def test_malformed_group_items_are_refused(items, error, message):
    with pytest.raises(error, match=message):
        CloudChainManager().add_group(items)


@pytest.mark.parametrize(
    ("delay", "error"), [(-1, ValueError), ("30", TypeError), (True, TypeError)]
)
def test_a_bad_delay_is_refused(delay, error):
    with pytest.raises(error, match="delay_seconds"):
        CloudChainManager().add_task("sum", {"a": 1, "b": 2}, delay_seconds=delay)


@run_in_db
def test_an_empty_manager_cannot_run_or_be_attached(transport):
    empty = CloudChainManager()
    with pytest.raises(ValueError, match="nothing to run"):
        empty.run()
    with pytest.raises(ValueError, match="nothing to run"):
        empty.to_expression()
    mgr = CloudChainManager().add_task("sum", {"a": 1, "b": 2})
    with pytest.raises(ValueError, match="no steps"):
        mgr.add_chain(empty)
    with pytest.raises(ValueError, match="no steps"):
        mgr.add_chain_group(mgr.__class__(), empty)
    with pytest.raises(ValueError, match="at least one"):
        mgr.add_chain_group()
    assert not Node.objects.exists()


def test_a_manager_cannot_contain_itself():
    mgr = CloudChainManager().add_task("sum", {"a": 1, "b": 2})
    with pytest.raises(ValueError, match="cannot contain itself"):
        mgr.add_chain(mgr)
    other = CloudChainManager().add_task("sum", {"b": 2})
    mgr.add_chain(other)
    with pytest.raises(ValueError, match="cannot contain itself"):
        other.add_chain_group(mgr)
    with pytest.raises(TypeError, match="CloudChainManager instances"):
        mgr.add_chain_group(tasks.sum.s())


@run_in_db
def test_each_run_starts_a_new_workflow(transport, executions):
    mgr = readme_single_task()
    first, second = mgr.run(), mgr.run()
    finish(transport)

    assert first.workflow_id != second.workflow_id
    assert first.get(timeout=5) == second.get(timeout=5) == 9
    assert executions() == {"sum": 2}


# -- the original README's attributes and django_cloudtasks.utils --------------------------


@run_in_db
def test_chain_and_last_task_name_the_latest_run(memory):
    chain_mgr = readme_chain()
    assert chain_mgr.last_task is None
    with pytest.raises(RuntimeError, match="call run"):
        chain_mgr.chain  # noqa: B018

    res = chain_mgr.run()

    assert chain_mgr.last_task == res
    assert str(chain_mgr.chain.id) == res.workflow_id
    assert chain_mgr.chain.status == WorkflowStatus.PENDING
    memory.drain()
    assert chain_mgr.chain.status == WorkflowStatus.SUCCESS  # read afresh
    assert chain_mgr.last_task.status == State.SUCCESS


@run_in_db
def test_revoke_task_revokes_the_node_and_what_follows(memory):
    from django_cloudtasks.utils import revoke_task

    chain_mgr = readme_chain()
    chain_mgr.run()
    first = Node.objects.get(workflow_id=chain_mgr.chain.id, index=0)

    assert revoke_task(first.pk) is True
    assert revoke_task(str(first.pk)) is True  # already revoked: still known
    memory.drain()

    states = list(
        Node.objects.filter(workflow_id=chain_mgr.chain.id).values_list("state", flat=True)
    )
    assert states == [State.REVOKED, State.REVOKED]
    assert recorded("sum") == []
    assert revoke_task("00000000-0000-0000-0000-000000000000") is False
    assert revoke_task("not-an-id") is False


@run_in_db
def test_revoke_chain_revokes_the_whole_workflow(memory):
    from django_cloudtasks.utils import revoke_chain

    chain_mgr = readme_group()
    chain_mgr.run()

    assert revoke_chain(chain_mgr.chain.id) is True
    memory.drain()

    assert chain_mgr.chain.status == WorkflowStatus.REVOKED
    assert recorded("sum") == []
    assert revoke_chain(str(chain_mgr.chain.id)) is True
    assert revoke_chain("00000000-0000-0000-0000-000000000000") is False
    assert revoke_chain(None) is False
