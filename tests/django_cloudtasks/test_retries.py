"""The task's own retry policy: backoff, jitter, autoretry_for, self.retry, exhaustion."""

from __future__ import annotations

import itertools

import pytest

from django_cloudtasks.constants import State
from django_cloudtasks.models import Node
from django_cloudtasks.policy import backoff
from django_cloudtasks.registry import Task, TaskPolicy
from tests.testapp.models import Execution
from tests.testapp.tasks import always_disconnects, flaky, on_error

pytestmark = pytest.mark.django_db(transaction=True)


def policy_task(**policy) -> Task:
    return Task(lambda: None, "policy_probe", TaskPolicy(**policy))


def test_exponential_backoff_doubles_and_is_capped():
    task = policy_task(retry_backoff=2, retry_backoff_max=20, retry_jitter=False)
    assert [backoff(n, task, {}) for n in range(6)] == [2, 4, 8, 16, 20, 20]


def test_retry_backoff_true_starts_at_one_second():
    task = policy_task(retry_backoff=True, retry_jitter=False)
    assert [backoff(n, task, {}) for n in range(3)] == [1, 2, 4]


def test_jitter_stays_between_zero_and_the_backoff():
    task = policy_task(retry_backoff=3, retry_backoff_max=100, retry_jitter=True)
    for retries in range(5):
        values = [backoff(retries, task, {}) for _ in range(200)]
        assert all(0 <= v <= 3 * 2**retries for v in values)
        assert len(set(values)) > 100


def test_without_backoff_the_default_retry_delay_applies():
    assert backoff(4, policy_task(default_retry_delay=42), {}) == 42


def test_signature_options_override_the_task_policy():
    task = policy_task(retry_backoff=False)
    options = {"retry_backoff": 5, "retry_jitter": False, "retry_backoff_max": 7}
    assert [backoff(n, task, options) for n in range(3)] == [5, 7, 7]


def test_autoretry_for_retries_with_backoff_then_fails_for_good_and_calls_the_errback_once(
    memory,
):
    result = always_disconnects.si().on_error(on_error.s()).apply_async()
    memory.drain()
    assert result.state == State.FAILURE
    assert Execution.objects.filter(task="always_disconnects").count() == 4  # 1 + 3 retries
    assert Execution.objects.filter(task="on_error").count() == 1
    retries = [d for d in memory.sent if d.task_name == "always_disconnects"]
    assert [d.retries for d in retries] == [0, 1, 2, 3]
    assert len({d.cloud_task_id for d in retries}) == 4
    node = Node.objects.get(pk=result.id)
    assert node.retries == 3 and node.error_type == "ConnectionError"


def test_retry_etas_follow_the_backoff_schedule(memory):
    from datetime import timedelta

    result = always_disconnects.si().apply_async()
    memory.drain()
    etas = [d.eta for d in memory.sent if d.retries > 0]
    node = Node.objects.get(pk=result.id)
    assert len(etas) == 3
    # retry_backoff=1 without jitter: 1 s, 2 s, 4 s after each failed attempt
    assert node.eta is not None
    spacing = [b - a for a, b in itertools.pairwise(etas)]
    assert all(s >= timedelta(seconds=0.9) for s in spacing)


def test_self_retry_in_a_bound_task_runs_again_and_sees_the_retry_count(memory):
    result = flaky.s(2).apply_async()
    memory.drain()
    assert result.get(timeout=0) == 2
    assert list(
        Execution.objects.filter(task="flaky").order_by("id").values_list("value", flat=True)
    ) == [0, 1, 2]


def test_self_retry_beyond_max_retries_fails_with_the_given_exception(memory):
    result = flaky.s(5).apply_async()
    memory.drain()
    with pytest.raises(RuntimeError, match="attempt 2"):
        result.get(timeout=0)
    assert Execution.objects.filter(task="flaky").count() == 3
