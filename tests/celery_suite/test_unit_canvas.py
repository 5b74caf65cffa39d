"""The chord and errback parts of Celery's ``t/unit/tasks/test_canvas.py``.

Ported: the error-callback tests of ``test_Signature`` (``test_link_error``,
``test_keeping_link_error_on_chaining``, ``test_signature_on_error_adds_error_callback``),
of ``test_chain`` (``test_chain_errbacks_propagated_to_chord_body``) and of ``test_group``
(``test_cannot_link_on_group``, ``test_cannot_link_error_on_group``, ``test_link_error``,
``test_link_error_with_dict_sig``, ``test_link_error_preserves_mutable_errback``), and
the class ``test_chord``. Celery's unit tests inspect the options a call leaves on
mutable signatures; the ports check the same through what runs (which errback is
called, how often, with what), or on the immutable values' own fields.

Not applicable here (with the reason), all from ``test_chord``:

* ``test__get_app_does_not_exhaust_generator``, ``test_app_when_app``,
  ``test_app_when_app_in_task``, ``test_app_when_header_is_empty``,
  ``test_app_fallback_to_current``: a canvas is not bound to a Celery app.
* the 27 ``test_chord_size_*`` tests: they count ``chord.__length_hint__()``, the
  number of header results Celery's backend counts before it unlocks the body; a join
  here counts its parents in its row. (What a body receives is checked by the
  integration ports ``test_nested_group_chord_counting_*`` and ``test_nested_chord``.)
* ``test_set_immutable``, ``test_freeze_tasks_is_not_group``: they change a chord in
  place and freeze ids ahead; values are immutable and ids are created when stored.
* ``test_flag_allow_error_cb_on_chord_header_with_dict_callback``,
  ``test_link_error_on_chord_header``: the setting ``task_allow_error_cb_on_chord_header``
  is not offered (attach errbacks to header members instead).
* ``test_chord_run_ensures_body_has_valid_task_id``,
  ``test_chord_run_generates_task_id_when_none_provided``,
  ``test_chord_run_body_freeze_prevents_task_id_empty_error``,
  ``test_chord_run_body_freeze_with_no_external_task_id``: ``chord.run()`` and frozen
  task ids are Celery internals (the failure they guard against is ported as the
  integration test ``test_chord_error_propagation_with_different_body_types``).

Counts for this module: 68 Celery tests, 28 ported (all passing), 40 not applicable.
"""

from __future__ import annotations

import json

import pytest

from canvas import Signature
from django_cloudtasks import chain, chord, group, signature
from django_cloudtasks.models import Node
from tests.celery_suite.running import TIMEOUT, count, node_ids, recorded, run
from tests.celery_suite.tasks import (
    ExpectedException,
    add,
    errback_new_style,
    fail,
    identity,
    mul,
    redis_count,
    redis_echo,
    tsum,
    xsum,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _errback():
    return redis_count.si(redis_key="eb")


class TestSignature:
    """Celery's ``test_Signature``: its error-callback tests."""

    def test_link_error(self, path):
        # Celery keeps one copy of an errback linked twice.
        res = run(fail.si().on_error(_errback()).on_error(_errback()))
        with pytest.raises(ExpectedException):
            res.get(timeout=TIMEOUT)
        assert count("eb") == 1

    def test_keeping_link_error_on_chaining(self, path):
        x = (add.s(2, 2) | mul.s(4)).on_error(_errback())
        t = fail.s()
        # x | t: the errback stays with x's tasks; t's failure does not call it.
        with pytest.raises(ExpectedException):
            run(x | t).get(timeout=TIMEOUT)
        assert count("eb") == 0
        # t | x: x's tasks keep it; they fail after t does, and call it once.
        with pytest.raises(ExpectedException):
            run(fail.si() | x).get(timeout=TIMEOUT)
        assert count("eb") == 1
        # x's own first task failing calls it once more.
        failing_x = (fail.si() | mul.s(4)).on_error(_errback())
        with pytest.raises(ExpectedException):
            run(failing_x | (add.s(4, 4) | add.s(2))).get(timeout=TIMEOUT)
        assert count("eb") == 2
        assert x.options["link_error"] == [_errback().to_dict()]

    def test_signature_on_error_adds_error_callback(self, path):
        sig = signature("celery_suite.fail").on_error(signature("celery_suite.redis_count"))
        assert sig.options["link_error"] == [signature("celery_suite.redis_count").to_dict()]


class TestChain:
    """Celery's ``test_chain``: its error-callback test."""

    def test_chain_errbacks_propagated_to_chord_body(self, path):
        g = group(add.si(1, 1), fail.si())
        c = chain(chord(g, add.s(10)), add.s(20))
        with pytest.raises(ExpectedException):
            run(c, link_error=_errback()).get(timeout=TIMEOUT)
        assert count("eb") == 1


class TestGroup:
    """Celery's ``test_group``: its error-callback tests."""

    def test_cannot_link_on_group(self, path):
        x = group([add.s(2, 2), add.s(4, 4)])
        with pytest.raises(TypeError, match=r"compose with \|"):
            x.apply_async(link=add.s(2, 2))

    def test_cannot_link_error_on_group(self, path):
        # Celery raises TypeError ("do that on individual tasks"); here the option gives
        # every member the errback, as group.on_error() does (documented).
        x = group([fail.si(), add.s(4, 4)])
        with pytest.raises(ExpectedException):
            run(x, link_error=_errback()).get(timeout=TIMEOUT)
        assert count("eb") == 1

    def test_link_error(self, path):
        # Every member gets the errback, to be sure it is called.
        g1 = group(fail.si(1), fail.si(2)).on_error(_errback())
        with pytest.raises(ExpectedException):
            run(g1).get(timeout=TIMEOUT)
        assert count("eb") == 2

    def test_link_error_with_dict_sig(self, path):
        # Celery's dict form of the errback is read with signature(); on_error() takes
        # a signature.
        errback_dict = {
            "task": "celery_suite.redis_count",
            "args": [],
            "kwargs": {"redis_key": "eb"},
        }
        errback_dict["immutable"] = True
        g1 = group(fail.si(1), fail.si(2)).on_error(signature(errback_dict))
        with pytest.raises(ExpectedException):
            run(g1).get(timeout=TIMEOUT)
        assert count("eb") == 2
        with pytest.raises(TypeError, match="must hold signatures"):
            group(fail.si()).on_error(errback_dict)

    def test_link_error_preserves_mutable_errback(self, path):
        g1 = group(fail.si(1), fail.si(2)).on_error(errback_new_style.s())
        with pytest.raises(ExpectedException):
            run(g1).get(timeout=TIMEOUT)
        # Mutable: each call gets the failed member's request.
        assert [count(i) for i in node_ids("celery_suite.fail")] == [1, 1]


class TestChord:
    """Celery's ``test_chord``."""

    def test_reverse(self, path):
        x = chord([add.s(2, 2), add.s(4, 4)], body=mul.s(4))
        assert isinstance(signature(x), chord)
        assert isinstance(signature(x.to_dict()), chord)
        celery_dict = {
            "task": "celery.chord",
            "subtask_type": "chord",
            "args": [],
            "kwargs": {
                "header": [add.s(2, 2).to_dict(), add.s(4, 4).to_dict()],
                "body": mul.s(4).to_dict(),
            },
            "options": {},
        }
        assert signature(celery_dict) == x

    def test_clone_clones_body(self, path):
        x = chord([add.s(2, 2), add.s(4, 4)], body=mul.s(4))
        y = x.clone()
        assert y == x
        with pytest.raises(AttributeError, match="immutable"):
            y.body = None  # type: ignore[misc]
        assert x.body == mul.s(4)

    def test_argument_is_group(self, path):
        x = chord(group(add.s(2, 2), add.s(4, 4)))
        assert x.header.tasks

    def test_freeze_empty_group_body_returns_result(self, path):
        x = chord(group(add.s(2, 2)), group())
        result = run(x)
        assert result.get(timeout=TIMEOUT) == []
        assert result.parent is not None

    def test_links_to_body(self, path):
        x = chord([add.s(2, 2), fail.si()], body=tsum.s())
        with pytest.raises(AttributeError, match=r"sig \| callback"):
            x.link(mul.s(2))
        res = run(x.on_error(redis_echo.si("body errback", redis_key="eb")))
        with pytest.raises(ExpectedException):
            res.get(timeout=TIMEOUT)
        assert recorded("eb") == ["body errback"]
        body = Node.objects.get(pk=res.id)
        assert body.task_name == "celery_suite.tsum"
        assert body.options["link_error"]
        assert x.header.tasks
        assert x.body is not None

    def test_repr(self, path):
        x = chord([add.s(2, 2), add.s(4, 4)], body=mul.s(4))
        assert repr(x)
        assert "without a body" in chord([add.s(2, 2)]).describe()

    def test_freeze_tasks_body_is_group(self, path):
        # The members of a chord's body group count their group_index from 0, the chord
        # being inside a group.
        chord_body = group([identity.s()] * 42)
        res = run(group([chord(add.si(1, 1), body=chord_body)]))
        assert res.get(timeout=TIMEOUT) == [[2]] * 42
        members = Node.objects.filter(task_name="celery_suite.identity").order_by("index")
        indexes = [m.options["lineage"]["group_index"] for m in members]
        assert indexes == list(range(42))

    def test_chain_always_eager(self, path, settings):
        from django_cloudtasks.transports import reset_transport

        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "eager"}
        reset_transport()
        result = chord([add.s(4, 4)], identity.s()).apply_async()
        assert result.get(timeout=TIMEOUT) == [8]

    def test_from_dict(self, path):
        rebuilt = chord.from_dict(chord(add.s(1, 2)).to_dict())
        assert isinstance(rebuilt, chord)

    def test_from_dict_with_body(self, path):
        rebuilt = chord.from_dict(chord(add.s(1, 2), add.s(1, 2)).to_dict())
        assert isinstance(rebuilt, chord)
        assert rebuilt.body == add.s(1, 2)

    def test_from_dict_deep_deserialize(self, path):
        header = body = add.s(1, 2)
        serialized = json.loads(json.dumps(chord(header=header, body=body).to_dict()))
        deserialized = chord.from_dict(serialized)
        assert isinstance(deserialized, chord)
        assert all(isinstance(t, Signature) for t in deserialized.header.tasks)
        assert isinstance(deserialized.body, Signature)

    def test_from_dict_deep_deserialize_group(self, path):
        header = body = group([add.s(1, 2)] * 42)
        serialized = json.loads(json.dumps(chord(header=header, body=body).to_dict()))
        deserialized = chord.from_dict(serialized)
        assert isinstance(deserialized, chord)
        # A header which is a group gets unpacked into the chord's tasks.
        assert all(isinstance(t, Signature) for t in deserialized.header.tasks)
        # A body which is a group remains as we passed it in.
        assert isinstance(deserialized.body, group)
        assert all(isinstance(t, Signature) for t in deserialized.body.tasks)

    def test_from_dict_deeper_deserialize_group(self, path):
        inner_group = group([add.s(1, 2)] * 42)
        header = body = group([inner_group] * 42)
        serialized = json.loads(json.dumps(chord(header=header, body=body).to_dict()))
        deserialized = chord.from_dict(serialized)
        assert isinstance(deserialized, chord)
        assert all(isinstance(t, group) for t in deserialized.header.tasks)
        assert all(isinstance(g, Signature) for t in deserialized.header.tasks for g in t.tasks)
        assert isinstance(deserialized.body, group)
        assert all(isinstance(t, group) for t in deserialized.body.tasks)

    def test_from_dict_deep_deserialize_chain(self, path):
        header = body = chain([add.s(1, 2)] * 42)
        serialized = json.loads(json.dumps(chord(header=header, body=body).to_dict()))
        deserialized = chord.from_dict(serialized)
        assert isinstance(deserialized, chord)
        # Celery unpacks a header chain's tasks into the chord's header (they then run in
        # parallel); here the chain stays one member, run in order (documented).
        [member] = deserialized.header.tasks
        assert isinstance(member, chain) and len(member.tasks) == 42
        assert isinstance(deserialized.body, chain)

    def test_chord_clone_kwargs(self, path):
        c = chord([add.s(1), add.s(2)], identity.s())
        assert c.clone() == c
        # Arguments given to clone() go to the header's members, as apply_async's do.
        c3 = c.clone(args=(10,), kwargs={"z": 100})
        assert run(c3).get(timeout=TIMEOUT) == [111, 112]
        assert run(c, args=(10,), kwargs={"z": 100}).get(timeout=TIMEOUT) == [111, 112]

    def test_flag_allow_error_cb_on_chord_header(self, path):
        # Celery's default (the setting off): chord.link_error() links only the body.
        chord_sig = chord(group(fail.si(1), fail.si(2)), identity.s()).on_error(_errback())
        with pytest.raises(ExpectedException):
            run(chord_sig).get(timeout=TIMEOUT)
        assert count("eb") == 1
        assert all("link_error" not in t.options for t in chord_sig.header.tasks)

    def test_flag_allow_error_cb_on_chord_header_various_header_types(self, path):
        headers = [fail.si(), [fail.si(), fail.si()], group(fail.si(), fail.si())]
        for i, chord_header in enumerate(headers, start=1):
            c = chord(chord_header, identity.s()).on_error(_errback())
            with pytest.raises(ExpectedException):
                run(c).get(timeout=TIMEOUT)
            assert count("eb") == i

    def test_chord__or__group_of_single_task(self, path):
        c = chord([identity.si(1)], identity.s())
        still_chord = c | group(identity.s())  # the group is chained to the body of c
        assert isinstance(still_chord, chord)
        assert isinstance(still_chord.body, chain)
        assert run(still_chord).get(timeout=TIMEOUT) == [1]

    def test_chord_upgrade_on_chaining(self, path):
        c = chord([identity.si(1)], group(identity.s(), identity.s()))
        still_chord = c | xsum.s()  # xsum is chained to the body of c: a new chord
        assert isinstance(still_chord, chord)
        assert isinstance(still_chord.body, chord)
        assert run(still_chord).get(timeout=TIMEOUT) == 2
