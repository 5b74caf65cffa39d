"""The parts of Celery's canvas API a migrating user reaches for, with Celery's meaning."""

from __future__ import annotations

from typing import Any

import pytest

from canvas import (
    Signature,
    chain,
    chord,
    chunks,
    compile,
    executor,
    group,
    signature,
    xmap,
    xstarmap,
)
from tests.canvas.interpreter import evaluate


class RecordingExecutor:
    def __init__(self) -> None:
        self.applied: list[tuple[Any, dict[str, Any]]] = []
        self.called: list[Signature] = []

    def apply_async(self, expression, options):
        self.applied.append((expression, options))
        return "handle"

    def call(self, sig):
        self.called.append(sig)
        return "called"


@pytest.fixture
def recording():
    recorder = RecordingExecutor()
    previous = executor.install(recorder)
    yield recorder
    executor.install(previous)


def test_calling_a_signature_calls_its_function_in_process_with_extra_arguments(add, recording):
    assert add.s(2)(3, z=1) == "called"
    assert recording.called == [add.s(3, 2, z=1)]
    assert recording.applied == []


def test_calling_an_immutable_signature_ignores_extra_arguments(add, recording):
    add.si(2, 2)(99)
    assert recording.called == [add.si(2, 2)]


def test_calling_a_chain_or_a_group_applies_it(add, recording):
    chain(add.s(1), add.s(2))(10)
    group(add.s(1), add.s(2))(10, countdown=5)
    assert recording.applied == [
        (chain(add.s(10, 1), add.s(2)), {}),
        (group(add.s(10, 1), add.s(10, 2)), {"countdown": 5}),
    ]


def test_a_chord_without_a_body_is_applied_by_calling_it_with_one(add, tsum, recording):
    header = chord([add.si(1, 1), add.si(2, 2)])
    assert header(tsum.s(), countdown=3) == "handle"
    assert recording.applied == [(chord([add.si(1, 1), add.si(2, 2)], tsum.s()), {"countdown": 3})]


def test_a_chord_without_a_body_takes_one_from_the_pipe(add, tsum):
    assert chord([add.si(1, 1)]) | tsum.s() == chord([add.si(1, 1)], tsum.s())


def test_a_chord_without_a_body_round_trips_through_dicts(add):
    expr = chord([add.si(1, 1)])
    assert signature(expr.to_dict()) == expr


def test_clone_works_on_every_kind_of_expression(add, tsum):
    expr = chain(add.s(1), add.s(2))
    assert expr.clone() is expr
    assert expr.clone((10,)) == chain(add.s(10, 1), add.s(2))
    assert group(add.s(1)).clone((5,), queue="q") == group(add.s(5, 1)).set(queue="q")
    assert chord([add.s(1)], tsum.s()).clone((5,)) == chord([add.s(5, 1)], tsum.s())


def test_skew_spreads_the_members_countdowns_like_celery(add):
    skewed = group(add.si(i, i) for i in range(5)).skew(start=1, stop=3, step=1)
    assert [member.options["countdown"] for member in skewed.tasks] == [1, 2, 3, 3, 3]
    assert skewed.tasks[0].args == (0, 0)


@pytest.mark.parametrize(
    ("method", "rewrite"),
    [("link_error", r"sig = sig\.on_error\(errback\)"), ("link", r"sig = sig \| callback")],
)
def test_celerys_in_place_callbacks_fail_loudly_with_the_rewrite(add, method, rewrite):
    sig = add.s(1, 1)
    with pytest.raises(AttributeError, match=rewrite):
        getattr(sig, method)(add.s(2))
    with pytest.raises(AttributeError, match=rewrite):
        getattr(group(sig), method)(add.s(2))


def test_signature_accepts_a_name_an_expression_or_a_dict(add):
    assert signature("add", (1, 2), countdown=3) == add.s(1, 2).set(countdown=3)
    assert signature(add.s(1)) == add.s(1)
    assert signature(add.s(1), (0,)) == add.s(0, 1)
    assert signature(add.s(1, 2).to_dict()) == add.s(1, 2)


def test_signature_reads_celerys_dict_forms(add, tsum):
    celery_sig = {
        "task": "add",
        "args": [1, 2],
        "kwargs": {},
        "options": {"countdown": 5},
        "subtask_type": None,
        "immutable": True,
    }
    assert signature(celery_sig) == add.si(1, 2).set(countdown=5)
    celery_chain = {
        "task": "celery.chain",
        "args": [],
        "kwargs": {"tasks": [celery_sig, {"task": "add", "args": [3], "subtask_type": None}]},
        "options": {},
        "subtask_type": "chain",
        "immutable": False,
    }
    assert signature(celery_chain) == chain(add.si(1, 2).set(countdown=5), add.s(3))
    celery_group = {
        "task": "celery.group",
        "kwargs": {"tasks": [celery_sig]},
        "subtask_type": "group",
    }
    assert signature(celery_group) == group(add.si(1, 2).set(countdown=5))
    celery_chord = {
        "task": "celery.chord",
        "kwargs": {"header": celery_group, "body": {"task": "tsum", "subtask_type": None}},
        "subtask_type": "chord",
    }
    assert signature(celery_chord) == chord([add.si(1, 2).set(countdown=5)], tsum.s())


def test_signature_refuses_dicts_of_neither_form():
    with pytest.raises(TypeError, match="not a signature dict"):
        signature({"args": [1]})
    with pytest.raises(TypeError, match="unsupported Celery signature type 'xmap'"):
        signature({"task": "celery.map", "subtask_type": "xmap"})


def test_xmap_and_xstarmap_are_one_immutable_task_over_all_items(add, identity):
    mapped = xmap(identity.s(), [1, 2, 3])
    assert mapped.immutable
    assert mapped.kwargs == {"task": identity.s().to_dict(), "it": [1, 2, 3]}
    starmapped = xstarmap(add.s(), zip([1, 2], [3, 4], strict=True))
    assert starmapped.kwargs["it"] == [[1, 3], [2, 4]]
    assert [node.task_name for node in compile(starmapped)] == ["cloudtasks.starmap"]


def test_chunks_splits_the_items_into_a_group_of_starmaps(add, tsum, functions):
    parts = chunks(add.s(), [(i, i) for i in range(10)], 4)
    assert len(parts) == 3
    assert [len(part.kwargs["it"]) for part in parts.tasks] == [4, 4, 2]
    assert parts.group() == group(parts.tasks)
    # Stored and composed as the group it is.
    assert signature(parts.to_dict()) == parts.group()
    assert isinstance(parts | tsum.s(), chord)

    def starmap(task, it):
        return [functions[task["task"]](*item) for item in it]

    result = evaluate(parts, {**functions, "cloudtasks.starmap": starmap})
    assert result == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda add: chunks(add.s(), [(1, 1)], 0), ValueError),
        (lambda add: chunks(add.s(), "abc", 2), TypeError),
        (lambda add: xmap("add", [1]), TypeError),
        (lambda add: xmap(add.s(), 5), TypeError),
    ],
)
def test_maps_refuse_bad_input_when_built(add, build, error):
    with pytest.raises(error):
        build(add)
