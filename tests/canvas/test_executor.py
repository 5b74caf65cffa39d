from __future__ import annotations

from typing import Any

import pytest

from canvas import NoExecutorError, executor, group


class RecordingExecutor:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def apply_async(self, expression, options):
        self.calls.append((expression, options))
        return "handle"


@pytest.fixture
def recording():
    recorder = RecordingExecutor()
    previous = executor.install(recorder)
    yield recorder
    executor.install(previous)


def test_without_an_executor_running_raises_a_clear_error(add):
    previous = executor.install(None)
    try:
        with pytest.raises(NoExecutorError, match="INSTALLED_APPS"):
            add.s(1, 2).delay()
    finally:
        executor.install(previous)


def test_apply_async_hands_the_expression_and_run_options_to_the_executor(add, recording):
    assert (add.s(1) | add.s(2)).apply_async(countdown=30) == "handle"
    expression, options = recording.calls[0]
    assert expression == add.s(1) | add.s(2)
    assert options == {"countdown": 30}


def test_delay_applies_arguments_to_the_first_tasks(add, recording):
    group(add.s(1), add.s(2)).delay(10)
    assert recording.calls[0][0] == group(add.s(10, 1), add.s(10, 2))


def test_run_options_are_validated_before_the_executor_sees_them(add, recording):
    with pytest.raises(TypeError, match="unknown option 'coundown'"):
        add.s(1, 2).apply_async(coundown=3)
    assert recording.calls == []


def test_the_former_engine_names_still_install_an_executor(add, recording):
    from canvas import NoEngineError, engine

    previous = engine.install(None)
    try:
        with pytest.raises(NoEngineError):
            add.s(1, 2).delay()
    finally:
        engine.install(previous)
