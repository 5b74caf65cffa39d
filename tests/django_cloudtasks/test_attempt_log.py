"""Each finished attempt of a node is kept in its attempt log: start, end, outcome, error."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from django_cloudtasks import engine, task
from django_cloudtasks.constants import State
from django_cloudtasks.engine.attempts import MAX_ATTEMPTS_KEPT
from django_cloudtasks.models import Node
from tests.testapp.tasks import add, always_disconnects, flaky, identity, ignores, replaced_by_add

pytestmark = pytest.mark.django_db(transaction=True)


@task(bind=True, max_retries=100, default_retry_delay=0)
def retries_until(self, last):
    """Retry until the retry number ``last``, then return it."""
    if self.request.retries < last:
        raise self.retry(countdown=0, exc=ValueError(f"not yet: {self.request.retries}"))
    return self.request.retries


def log_of(node_id) -> list[dict]:
    return Node.objects.get(pk=node_id).attempt_log


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_node_that_retried_twice_keeps_each_attempt_with_its_error(memory):
    result = flaky.s(2).apply_async()
    memory.drain()
    assert result.get(timeout=0) == 2

    log = log_of(result.id)
    assert [e["outcome"] for e in log] == ["RETRY", "RETRY", "SUCCESS"]
    assert [e["attempt"] for e in log] == [1, 2, 3]
    assert [e["retry"] for e in log] == [0, 1, 2]
    assert [(e.get("error_type"), e.get("error_message")) for e in log] == [
        ("RuntimeError", "attempt 0"),
        ("RuntimeError", "attempt 1"),
        (None, None),
    ]
    for entry in log:
        assert moment(entry["started_at"]) <= moment(entry["finished_at"])
    assert moment(log[0]["finished_at"]) <= moment(log[1]["started_at"])
    node = Node.objects.get(pk=result.id)
    assert moment(log[-1]["started_at"]) == node.started_at
    assert moment(log[-1]["finished_at"]) == node.finished_at


def test_a_node_that_fails_for_good_ends_its_log_with_the_failure(memory):
    result = always_disconnects.si().apply_async()
    memory.drain()
    log = log_of(result.id)
    assert [e["outcome"] for e in log] == ["RETRY", "RETRY", "RETRY", "FAILURE"]
    assert {(e["error_type"], e["error_message"]) for e in log} == {("ConnectionError", "no route")}


def test_the_log_keeps_the_last_fifty_attempts(memory):
    result = retries_until.s(MAX_ATTEMPTS_KEPT + 9).apply_async()
    memory.drain()
    assert result.get(timeout=0) == MAX_ATTEMPTS_KEPT + 9
    log = log_of(result.id)
    assert len(log) == MAX_ATTEMPTS_KEPT
    assert log[0]["attempt"] == 11 and log[0]["outcome"] == "RETRY"
    assert log[-1]["attempt"] == MAX_ATTEMPTS_KEPT + 10 and log[-1]["outcome"] == "SUCCESS"
    assert log[0]["error_message"] == "not yet: 10"


def test_every_step_of_a_chain_logs_its_one_attempt(memory):
    result = (add.s(1, 1) | add.s(1) | identity.s()).apply_async()
    memory.drain()
    assert result.get(timeout=0) == 3
    for node in Node.objects.filter(workflow_id=result.workflow_id):
        assert [(e["attempt"], e["outcome"]) for e in node.attempt_log] == [(1, "SUCCESS")]


def test_a_task_that_ignores_itself_logs_its_attempt_as_revoked(memory):
    result = ignores.si().apply_async()
    memory.drain()
    assert result.state == State.REVOKED
    [entry] = log_of(result.id)
    assert (entry["outcome"], entry["detail"]) == ("REVOKED", "ignored")


def test_an_expired_node_logs_the_attempt_that_found_it_expired(memory):
    result = add.s(1, 2).set(expires=10).apply_async()
    engine_late = timezone.now() - timedelta(seconds=11)
    Node.objects.filter(pk=result.id).update(ready_at=engine_late)
    memory.drain()
    assert result.state == State.REVOKED
    [entry] = log_of(result.id)
    assert (entry["outcome"], entry["detail"]) == ("REVOKED", "expired")


def test_a_replaced_node_logs_the_replacement_then_the_result_it_passed_on(memory):
    result = replaced_by_add.s(4).apply_async()
    memory.drain()
    assert result.get(timeout=0) == 5
    assert [e["outcome"] for e in log_of(result.id)] == ["REPLACED", "SUCCESS"]


def test_a_node_revoked_while_running_logs_how_its_run_ended(memory):
    result = (add.s(1, 1) | add.s(1)).apply_async()
    node = engine.claim(result.parent.id, None, None, timezone.now(), early=True)
    assert node is not None
    engine.revoke_workflow(result.workflow_id)
    engine.succeed(node, 2, node.attempts)
    [entry] = log_of(node.pk)
    assert (entry["outcome"], entry["detail"]) == ("REVOKED", "revoked while running")
    assert Node.objects.get(pk=node.pk).result == 2
