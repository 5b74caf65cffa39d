"""Revoking nodes, group members and whole workflows leaves nothing pending forever."""

from __future__ import annotations

import pytest

from django_cloudtasks import chord, group
from django_cloudtasks.constants import READY_STATES, State, WorkflowStatus
from django_cloudtasks.exceptions import TaskRevoked
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.results import WorkflowResult
from tests.testapp.tasks import add, check_revoked, identity, tsum

pytestmark = pytest.mark.django_db(transaction=True)


def assert_nothing_left_waiting(workflow_id):
    states = set(Node.objects.filter(workflow_id=workflow_id).values_list("state", flat=True))
    assert states <= READY_STATES, states


def test_revoking_a_pending_node_revokes_everything_downstream(memory, executions):
    result = (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    second = result.parent
    revoked = second.revoke()
    assert len(revoked) == 2
    memory.drain()
    assert executions() == {"add": 1}
    assert second.state == State.REVOKED and result.state == State.REVOKED
    with pytest.raises(TaskRevoked):
        result.get(timeout=1)
    assert Workflow.objects.get().status == WorkflowStatus.REVOKED
    assert_nothing_left_waiting(result.workflow_id)


def test_revoking_a_queued_node_deletes_its_cloud_task(memory):
    result = add.s(1, 1).apply_async()
    result.revoke()
    assert [d.node_id for d in memory.cancelled] == [result.id]
    assert memory.pending == []


def test_revoking_a_chord_member_revokes_the_join_and_the_body_never_runs(memory, executions):
    result = chord([identity.si(i) for i in range(5)], tsum.s()).apply_async()
    member = Node.objects.get(task_name="identity", index=2)
    member_result = type(result)(member.pk)
    member_result.revoke()
    memory.drain()
    assert executions() == {"identity": 4}
    assert result.state == State.REVOKED
    assert_nothing_left_waiting(result.workflow_id)


def test_revoking_a_whole_chain_revokes_every_unfinished_node(memory, executions):
    result = (add.s(1, 1) | add.s(1) | group(add.s(1), add.s(2)) | tsum.s()).apply_async()
    memory.drain(limit=1)
    revoked = WorkflowResult(result.workflow_id).revoke()
    assert len(revoked) == 5
    memory.drain()
    assert executions() == {"add": 1}
    assert Node.objects.get(index=0).state == State.SUCCESS
    assert_nothing_left_waiting(result.workflow_id)
    assert WorkflowResult(result.workflow_id).status == WorkflowStatus.REVOKED


def test_revoking_twice_changes_nothing_the_second_time(memory):
    result = add.s(1, 1).apply_async()
    assert result.revoke() == [result.id]
    assert result.revoke() == []
    assert len(memory.cancelled) == 1


def test_a_task_can_see_that_it_was_revoked_while_running(memory):
    result = check_revoked.si().apply_async()
    from django_cloudtasks.runner import deliver

    Node.objects.filter(pk=result.id).update(state=State.STARTED)
    assert result.state == State.STARTED
    result.revoke()
    assert result.state == State.REVOKED
    assert deliver(result.id).state == State.REVOKED


def test_a_node_revoked_while_running_keeps_its_result_but_starts_nothing(memory, executions):
    from django.db import transaction

    from django_cloudtasks import engine

    result = (add.s(1, 1) | add.s(1)).apply_async()
    first = Node.objects.get(index=0)
    Node.objects.filter(pk=first.pk).update(state=State.STARTED, attempts=1)
    engine.revoke_node(first.pk)
    with transaction.atomic():
        assert engine.complete(first, 2, attempt=1) == []
    first.refresh_from_db()
    assert first.state == State.REVOKED and first.result == 2
    assert result.state == State.REVOKED
    memory.drain()
    assert executions() == {}
