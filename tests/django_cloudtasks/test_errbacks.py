"""Error callbacks and option precedence as in Celery (chord bodies, forms, apply_async)."""

from __future__ import annotations

import pytest

from django_cloudtasks import chain, chord, group
from django_cloudtasks.exceptions import NotRegistered
from django_cloudtasks.models import Node
from django_cloudtasks.transports import get_transport
from tests.testapp.models import Execution
from tests.testapp.tasks import (
    add,
    celery_errback,
    fail,
    identity,
    old_errback,
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


def recorded(name):
    return list(Execution.objects.filter(task=name).order_by("id").values_list("value", flat=True))


def test_a_chord_bodys_errback_runs_once_with_a_chord_error_naming_the_member(transport):
    boom = fail.si(9)
    result = run(chord([identity.si(1), boom], tsum.s().on_error(celery_errback.s())))
    with pytest.raises(ValueError):
        result.get(timeout=5)
    [seen] = recorded("celery_errback")
    failed = Node.objects.get(task_name="fail")
    assert seen["chord_error"] is True
    assert seen["exc"] == "ChordError"
    assert str(failed.pk) in seen["exc_args"][0]
    assert "ValueError" in seen["exc_args"][0]
    assert seen["id"] == result.id
    assert seen["task"] == "tsum"


def test_a_chords_on_error_runs_once_however_many_members_fail(transport):
    expr = chord([fail.si(1), fail.si(2), identity.si(3)], tsum.s()).on_error(on_error.s())
    with pytest.raises(ValueError):
        run(expr).get(timeout=5)
    assert len(recorded("on_error")) == 1
    assert recorded("on_error")[0]["error"].startswith("ChordError: Dependency ")


def test_a_groups_on_error_runs_once_per_failing_member(transport):
    expr = group(fail.si(1), fail.si(2), identity.si(3)).on_error(on_error.s())
    with pytest.raises(ValueError):
        run(expr).get(timeout=5)
    assert sorted(v["payload"]["args"] for v in recorded("on_error")) == [[1], [2]]


def test_a_chains_on_error_still_runs_once(transport):
    expr = chain(add.s(1, 2), fail.s(), add.si(3, 4), add.s(5)).on_error(on_error.s())
    with pytest.raises(ValueError):
        run(expr).get(timeout=5)
    assert len(recorded("on_error")) == 1


def test_downstream_nodes_run_their_own_errbacks_once_each(transport):
    expr = chain(fail.si(1), add.si(1, 1).on_error(old_errback.s(note="a")), add.s(2))
    expr = expr.on_error(on_error.s())
    with pytest.raises(ValueError):
        run(expr).get(timeout=5)
    assert len(recorded("on_error")) == 1
    [old] = recorded("old_errback")
    assert old == {"id": str(Node.objects.get(task_name="add", args=[1, 1]).pk), "note": "a"}


def test_a_celery_form_errback_gets_the_request_the_exception_and_the_traceback(transport):
    result = run(fail.s(7).on_error(celery_errback.s()))
    with pytest.raises(ValueError):
        result.get(timeout=5)
    [seen] = recorded("celery_errback")
    assert seen["id"] == result.id
    assert seen["task"] == "fail"
    assert seen["args"] == [7]
    assert seen["exc"] == "ValueError"
    assert seen["exc_args"] == ["failing on purpose with [7]"]
    assert "Traceback" in seen["traceback"]


def test_an_old_form_errback_gets_the_task_id(transport):
    result = run(fail.s(7).on_error(old_errback.s(note="extra")))
    with pytest.raises(ValueError):
        result.get(timeout=5)
    assert recorded("old_errback") == [{"id": result.id, "note": "extra"}]


def test_errbacks_are_checked_at_apply_async(memory):
    with pytest.raises(NotRegistered):
        fail.s().on_error(identity.si(1).__class__("no.such.task")).apply_async()
    with pytest.raises(TypeError, match="error callback"):
        fail.s().on_error(old_errback.s("a")).apply_async()
    with pytest.raises(TypeError, match="error callback"):
        fail.s().on_error(add.si(1)).apply_async()
    assert Node.objects.count() == 0


def test_apply_async_options_override_the_signatures_own(memory):
    result = identity.s(1).set(queue="mine", max_retries=1).apply_async(queue="theirs")
    node = Node.objects.get(pk=result.id)
    assert node.queue == "theirs"
    assert node.options["max_retries"] == 1


def test_composition_options_fill_in_only_what_a_task_did_not_set(memory):
    expr = group(identity.s(1).set(queue="mine"), identity.s(2)).set(queue="group")
    expr.apply_async()
    assert sorted(Node.objects.exclude(queue="").values_list("queue", flat=True)) == [
        "group",
        "mine",
    ]
