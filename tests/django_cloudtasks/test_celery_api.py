"""Celery's task API: apply(), AsyncResult(), attributes, decorator arguments, signals."""

from __future__ import annotations

import pytest

from django_cloudtasks import signals, task
from django_cloudtasks.constants import State
from django_cloudtasks.models import Node
from django_cloudtasks.registry import registry
from django_cloudtasks.results import AsyncResult
from django_cloudtasks.transports import get_transport
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    add,
    expected_failure,
    fail,
    flaky,
    forgets,
    identity,
    looks_up,
    overruns,
    request_info,
    untyped,
)

pytestmark = pytest.mark.django_db(transaction=True)


def run(expr, **options):
    result = expr.apply_async(**options)
    transport = get_transport()
    if transport.name == "memory":
        transport.drain()
    return result


def test_apply_runs_the_function_now_and_returns_an_eager_result(memory):
    result = add.apply((2, 3))
    assert result.get() == 5 and result.successful() and result.state == "SUCCESS"
    assert memory.sent == [] and Node.objects.count() == 0
    failed = fail.apply((1,))
    assert failed.failed() and isinstance(failed.result, ValueError)
    assert "failing on purpose" in failed.traceback
    with pytest.raises(ValueError):
        failed.get()
    info = request_info.apply((1,), {"y": 2}).get()
    assert info["is_eager"] is True and info["called_directly"] is False


def test_task_async_result_and_policy_attributes(memory):
    result = add.delay(1, 1)
    assert add.AsyncResult(result.id) == AsyncResult(result.id)
    assert flaky.max_retries == 2 and flaky.default_retry_delay == 0
    assert add.max_retries == 3 and add.queue is None
    assert looks_up.max_retries == 1


def test_time_limit_is_the_dispatch_deadline():
    @task(name="tests.limited", time_limit=42)
    def limited():
        return 1

    try:
        assert limited.time_limit == limited.dispatch_deadline == 42
    finally:
        registry.unregister("tests.limited")


@pytest.mark.parametrize(
    "option",
    [
        "priority",
        "routing_key",
        "link",
        "exchange",
        "acks_late",
        "serializer",
        "track_started",
        "base",
    ],
)
def test_unsupported_celery_arguments_name_the_rewrite(option):
    with pytest.raises(TypeError, match=f"does not support {option}="):
        task(name="tests.unsupported", **{option: 1})(lambda: None)
    with pytest.raises(TypeError, match="unknown arguments: colour"):
        task(name="tests.unsupported", colour=1)(lambda: None)


@pytest.mark.parametrize(
    "option",
    [
        "priority",
        "routing_key",
        "link",
        "task_id",
        "serializer",
        "headers",
        "retry_policy",
        "ignore_result",
    ],
)
def test_unsupported_celery_options_name_the_rewrite(option):
    with pytest.raises(TypeError, match="is not supported: "):
        add.s(1, 1).set(**{option: "x"})
    with pytest.raises(TypeError, match="is not supported: "):
        add.apply_async((1, 1), **{option: "x"})


def test_dont_autoretry_for_and_retry_kwargs(transport):
    with pytest.raises(KeyError):
        run(looks_up.s("key")).get(timeout=5)
    with pytest.raises(IndexError):
        run(looks_up.s("index")).get(timeout=5)
    kinds = list(Execution.objects.filter(task="looks_up").values_list("value", flat=True))
    assert kinds.count("key") == 1 and kinds.count("index") == 2


def test_soft_time_limit_raises_inside_the_task(eager):
    assert overruns.delay().get(timeout=5) == "stopped"


def test_ignore_result_keeps_no_result_for_a_last_node(transport):
    assert run(forgets.s(5)).get(timeout=5) is None
    assert run(forgets.s(5) | identity.s()).get(timeout=5) == 5


def test_typing_false_skips_the_argument_check_at_apply_async(memory):
    result = untyped.s(1, 2).apply_async()
    memory.drain()
    assert result.failed()


def test_throws_records_an_expected_error_without_traceback(transport):
    result = run(expected_failure.s())
    with pytest.raises(KeyError):
        result.get(timeout=5)
    assert result.traceback is None


def test_celerys_signals_are_sent_with_celerys_arguments(memory):
    seen = []

    def receiver(signal, sender, **kwargs):
        seen.append((signal, {**kwargs, "sender": sender}))

    names = [
        "before_task_publish",
        "after_task_publish",
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_failure",
        "task_revoked",
    ]
    for name in names:
        getattr(signals, name).connect(receiver, dispatch_uid=f"test-{name}")
    try:
        ok = run(add.s(1, 1))
        assert ok.get(timeout=5) == 2
        with pytest.raises(ValueError):
            run(fail.s(1)).get(timeout=5)
        later = add.apply_async((1, 2), countdown=3600)
        later.revoke()
    finally:
        for name in names:
            getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")
    by_signal = {}
    for signal, kwargs in seen:
        by_signal.setdefault(signal, []).append(kwargs)
    assert by_signal[signals.before_task_publish][0]["headers"]["id"] == ok.id
    assert by_signal[signals.after_task_publish][0]["body"]["task"] == "add"
    assert by_signal[signals.task_prerun][0]["task_id"] == ok.id
    assert by_signal[signals.task_prerun][0]["args"] == [1, 1]
    assert by_signal[signals.task_postrun][0]["retval"] == 2
    assert by_signal[signals.task_postrun][0]["state"] == State.SUCCESS
    assert by_signal[signals.task_success] == [{"result": 2, "sender": add}]
    [failure] = by_signal[signals.task_failure]
    assert isinstance(failure["exception"], ValueError) and failure["args"] == [1]
    assert failure["sender"] is fail
    [revoked] = by_signal[signals.task_revoked]
    assert revoked["task_id"] == later.id and revoked["expired"] is False
    assert revoked["sender"] is add


def test_task_retry_signal_carries_the_request_and_reason(memory):
    seen = []
    signals.task_retry.connect(
        lambda sender, **kw: seen.append(kw), weak=False, dispatch_uid="test-retry"
    )
    try:
        flaky.delay(1)
        memory.drain()
    finally:
        signals.task_retry.disconnect(dispatch_uid="test-retry")
    [retry] = seen
    assert retry["request"].retries == 0
    assert isinstance(retry["reason"], RuntimeError)
