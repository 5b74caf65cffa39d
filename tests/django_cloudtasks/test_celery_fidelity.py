"""Celery's behaviour where users notice it: eager runs, states, retries, exceptions."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from django_cloudtasks.constants import State
from django_cloudtasks.exceptions import (
    MaxRetriesExceededError,
    TaskRevoked,
    TaskRevokedError,
    TimeoutError,
)
from django_cloudtasks.models import Node
from django_cloudtasks.results import AsyncResult
from django_cloudtasks.transports import get_transport
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    PaymentDeclined,
    add,
    bad_json,
    declines,
    identity,
    ignores,
    lineage,
    nested_delay,
    rejects,
    replaced_by_add,
    reports_progress,
    request_info,
    retries_with_new_args,
    retries_without_exc,
    retry_directly,
    retry_later,
    waits_on_child,
)

pytestmark = pytest.mark.django_db(transaction=True)


def run(expr, limit=None, **options):
    result = expr.apply_async(**options)
    transport = get_transport()
    if transport.name == "memory":
        transport.drain(limit)
    return result


def recorded(name):
    return list(Execution.objects.filter(task=name).order_by("id").values_list("value", flat=True))


# -- 7. eager mode -------------------------------------------------------------------


def test_a_nested_delay_in_an_eager_task_runs_at_once(eager):
    nested_delay.delay(5)
    order = list(Execution.objects.order_by("id").values_list("task", "value"))
    assert order == [("nested", "before"), ("identity", 5), ("nested", "after")]


def test_get_inside_a_running_task_raises_runtime_error(memory):
    result = run(waits_on_child.s(1))
    with pytest.raises(RuntimeError, match=r"Never call result\.get"):
        result.get(timeout=1)


def test_get_inside_an_eager_task_returns_the_finished_result(eager):
    assert waits_on_child.delay(3).get(timeout=1) == 3


def test_eager_propagates_makes_delay_raise_the_tasks_exception(eager, settings):
    from tests.testapp.tasks import fail

    assert fail.delay(1).failed()
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EAGER_PROPAGATES": True}
    with pytest.raises(ValueError, match="failing on purpose"):
        fail.delay(2)


# -- 8. states -----------------------------------------------------------------------


def test_an_unknown_id_is_pending_with_no_result_and_get_times_out(db):
    result = AsyncResult(uuid.uuid4())
    assert result.state == result.status == State.PENDING
    assert result.result is None and result.traceback is None
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3, interval=0.1)


def test_a_malformed_id_is_a_value_error():
    with pytest.raises(ValueError, match="not a task id"):
        AsyncResult("not-an-id")


# -- 9. expires ----------------------------------------------------------------------


def test_expires_is_a_deadline_that_retries_do_not_push_back(memory):
    result = retry_later.s().set(expires=60).apply_async()
    memory.drain(limit=1)
    node = Node.objects.get(pk=result.id)
    assert node.state == State.RETRY
    deadline = timezone.datetime.fromisoformat(node.options["expires"])
    assert deadline <= node.created_at + timedelta(seconds=60)


# -- 10. retries ---------------------------------------------------------------------


def test_running_out_of_retries_without_exc_raises_max_retries_exceeded(transport):
    result = run(retries_without_exc.s())
    if get_transport().name == "memory":
        get_transport().drain()
    with pytest.raises(MaxRetriesExceededError, match="Can't retry retries_without_exc"):
        result.get(timeout=5)
    assert recorded("retries_without_exc") == [0, 1]


def test_retry_can_change_the_arguments_and_the_queue(memory):
    result = run(retries_with_new_args.s(1))
    assert result.get(timeout=5) == 3
    assert recorded("retries_with_new_args") == [1, 2, 3]
    assert Node.objects.get(pk=result.id).queue == "other"


def test_retry_called_directly_raises_the_exception():
    with pytest.raises(ValueError, match="direct"):
        retry_directly("direct")


def test_the_retry_reason_is_the_info_while_in_retry(memory):
    result = retry_later.delay()
    memory.drain(limit=1)
    assert result.state == State.RETRY
    assert isinstance(result.info, KeyError)


# -- 11. exceptions ------------------------------------------------------------------


def test_a_custom_exception_comes_back_as_itself_with_its_args(transport):
    result = run(declines.s("card_declined", 12))
    with pytest.raises(PaymentDeclined) as info:
        result.get(timeout=5)
    assert info.value.args == ("card_declined", 12)


def test_a_builtin_subclass_keeps_its_bases(transport):
    result = run(bad_json.s())
    with pytest.raises(ValueError) as info:
        result.get(timeout=5)
    assert type(info.value) is json.JSONDecodeError


# -- 12. revoked ---------------------------------------------------------------------


def test_a_revoked_result_is_a_task_revoked_error(memory):
    result = add.delay(1, 1)
    result.revoke()
    assert TaskRevoked is TaskRevokedError
    assert isinstance(result.result, TaskRevokedError)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


# -- Reject, Ignore, request, update_state ---------------------------------------------


def test_ignore_ends_the_task_and_nothing_downstream_runs(transport):
    result = run(ignores.si() | identity.si(1))
    assert recorded("ignores") == [None]
    assert recorded("identity") == []
    assert result.state == State.REVOKED
    assert Node.objects.get(task_name="ignores").state == State.REVOKED


def test_reject_fails_the_task_without_a_retry(transport):
    result = run(rejects.si())
    with pytest.raises(Exception, match="bad input"):
        result.get(timeout=5)
    assert len(recorded("rejects")) == 1


def test_the_request_carries_celerys_fields(eager):
    result = request_info.delay(1, y=2)
    info = result.get(timeout=1)
    assert info == {
        "id": result.id,
        "args": [1],
        "kwargs": {"y": 2},
        "retries": 0,
        "root_id": result.workflow_id,
        "called_directly": False,
        "is_eager": True,
        "task": "request_info",
    }
    assert request_info(1)["called_directly"] is True


def test_update_state_shows_as_state_and_info_while_running(eager):
    assert reports_progress.delay().get(timeout=1) == ["PROGRESS", {"done": 1}]


# -- self.replace() and the request's place in the canvas -----------------------------


def test_a_replaced_task_waits_for_its_replacement_and_takes_its_result(memory):
    result = run(replaced_by_add.s(4) | identity.s(), limit=1)
    replaced = Node.objects.get(task_name="replaced_by_add")
    assert replaced.state == State.PENDING
    assert Node.objects.filter(workflow_id=replaced.workflow_id, task_name="add").exists()
    memory.drain()
    assert result.get(timeout=5) == 5
    assert AsyncResult(replaced.pk).get(timeout=5) == 5
    assert recorded("replaced_by_add") == [4]  # the function ran once


def test_a_replacement_that_cannot_run_fails_the_task(transport):
    result = run(replaced_by_add.s(4, task_name="no.such.task") | identity.s())
    with pytest.raises(Exception, match=r"no\.such\.task"):
        result.get(timeout=5)
    assert Node.objects.get(task_name="replaced_by_add").state == State.FAILURE
    assert recorded("identity") == []


def test_replace_called_directly_calls_the_replacement_in_process(db):
    assert replaced_by_add(4) == 5
    assert replaced_by_add.apply((6,)).get() == 7
    assert Node.objects.count() == 0


def test_the_request_names_its_parent_its_group_and_its_chord(transport):
    from django_cloudtasks import chord

    result = run(identity.si(1) | chord([lineage.s(), lineage.s()], lineage.s()))
    body = result.get(timeout=5)
    header = result.parent
    members = [m.get(timeout=5) for m in header.results]
    first = Node.objects.get(task_name="identity")
    assert [m["parent_id"] for m in members] == [str(first.pk)] * 2
    assert [m["group"] for m in members] == [header.id] * 2
    assert [m["group_index"] for m in members] == [0, 1]
    assert [m["chord"] for m in members] == [result.id] * 2
    assert body["parent_id"] == header.results[-1].id
    assert body["group"] is None and body["chord"] is None
