"""Celery's ``t/integration/test_canvas.py``, classes ``test_result_set`` and ``test_group``.

One test per Celery test, named after it (see ``test_canvas_chain`` for how Celery's
links, Redis keys and frozen ids are ported). ``group.link_error(e)`` is
``group.on_error(e)``: as in Celery, it runs once per failing member.

Not applicable here (with the reason):

* ``test_callback_called_by_group``, ``test_group_children_with_callbacks``,
  ``test_group_with_callback_child_replaced``, ``test_group_child_with_callback_replaced``:
  they test ``link`` success callbacks, which are not supported (compose with ``|``).

Counts for this module: 31 Celery tests, 27 ported (all passing), 4 not applicable.
"""

from __future__ import annotations

import pytest

from django_cloudtasks import GroupResult, ResultSet, chain, chord, group
from django_cloudtasks.models import Node
from tests.celery_suite.running import TIMEOUT, count, drain, node_ids, recorded, run
from tests.celery_suite.tasks import (
    ExpectedException,
    add,
    add_replaced,
    add_to_all,
    errback_new_style,
    errback_old_style,
    fail,
    fail_replaced,
    identity,
    ids,
    raise_error,
    redis_count,
    redis_echo,
    replace_with_chain,
)

pytestmark = pytest.mark.django_db(transaction=True)


# -- test_result_set -------------------------------------------------------------------


@pytest.mark.emulator
def test_result_set(path):
    rs = ResultSet([add.delay(1, 1), add.delay(2, 2)])
    drain()
    assert rs.get(timeout=TIMEOUT) == [2, 4]


def test_result_set_error(path):
    rs = ResultSet([raise_error.delay(), add.delay(1, 1)])
    drain()
    rs.get(timeout=TIMEOUT, propagate=False)
    assert rs.results[0].failed()
    assert rs.results[1].successful()


def test_result_set_built_via_add(path):
    rs = ResultSet([])
    rs.add(add.delay(1, 1))
    rs.add(add.delay(2, 2))
    drain()
    assert rs.get(timeout=TIMEOUT) == [2, 4]


# -- test_group ------------------------------------------------------------------------


@pytest.mark.emulator
def test_ready_with_exception(path):
    result = run(group([add.s(1, 2), raise_error.s()]))
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert result.ready()


def test_empty_group_result(path):
    result = run(group([]))
    # Celery saves and restores the GroupResult; here it is always stored.
    assert GroupResult(result.id).results == []
    assert result.get(timeout=TIMEOUT) == []


def test_parent_ids(path):
    g = ids.si(i=1) | ids.si(i=2) | group(ids.si(i=i) for i in range(2, 50))
    res = run(g)
    expected_parent_id = res.parent.id
    assert res.parent.parent is not None
    values = res.get(timeout=TIMEOUT)
    for i, (root_id, parent_id, value) in enumerate(values):
        # Celery's root_id is the first task's id; here it is the workflow's (documented).
        assert root_id == res.workflow_id
        assert parent_id == expected_parent_id
        assert value == i + 2


def test_nested_group(path):
    c = group(
        add.si(1, 10),
        group(add.si(1, 100), group(add.si(1, 1000), add.si(1, 2000))),
    )
    assert run(c).get(timeout=TIMEOUT) == [11, 101, 1001, 2001]


def test_large_group(path):
    c = group(identity.s(i) for i in range(1000))
    assert run(c).get(timeout=TIMEOUT) == list(range(1000))


@pytest.mark.emulator
def test_group_lone(path):
    sig = group(identity.s(42), identity.s(42))
    assert run(sig).get(timeout=TIMEOUT) == [42, 42]


def test_nested_group_group(path):
    sig = group(group(identity.s(42), identity.s(42)))  # [42, 42] due to unrolling
    assert run(sig).get(timeout=TIMEOUT) == [42, 42]


def test_nested_group_chord_counting_simple(path):
    child_chord = chord((identity.si(42),), identity.s())
    assert run(group((child_chord,))).get(timeout=TIMEOUT) == [[42]]


def test_nested_group_chord_counting_chain(path):
    gchild_sig = chain((identity.si(1337),) * 42)
    child_chord = chord((gchild_sig,), identity.s())
    assert run(group((child_chord,))).get(timeout=TIMEOUT) == [[1337]]


def test_nested_group_chord_counting_group(path):
    gchild_sig = group((identity.si(1337),) * 42)
    child_chord = chord((gchild_sig,), identity.s())
    assert run(group((child_chord,))).get(timeout=TIMEOUT) == [[1337] * 42]


def test_nested_group_chord_counting_chord(path):
    gchild_sig = chord((identity.si(1337),) * 42, identity.si(31337))
    child_chord = chord((gchild_sig,), identity.s())
    assert run(group((child_chord,))).get(timeout=TIMEOUT) == [[31337]]


@pytest.mark.emulator
def test_nested_group_chord_counting_mixed(path):
    gchild_count = 42
    child_chord = chord(
        (
            identity.si(42),
            chain((identity.si(42),) * gchild_count),
            group((identity.si(42),) * gchild_count),
            chord((identity.si(42),) * gchild_count, identity.si(1337)),
        ),
        identity.s(),
    )
    res = run(group((child_chord,)))
    # The group result gets unrolled into the encapsulating chord.
    assert res.get(timeout=TIMEOUT) == [[42, 42, *((42,) * gchild_count), 1337]]


def test_nested_group_chord_body_chain(path):
    # xfail in Celery (#6734: the result never arrives).
    child_chord = chord(identity.si(42), chain((identity.s(),)))
    res = run(group((child_chord,)))
    assert res.get(timeout=TIMEOUT) == [[42]]
    assert res.results[0].get(timeout=TIMEOUT) == [42]


@pytest.mark.emulator
def test_errback_called_by_group_fail_first(path):
    group_sig = group(fail.s(), identity.si(42)).on_error(redis_echo.si("errback", "eb"))
    res = run(group_sig)
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert recorded("eb") == ["errback"]


def test_errback_called_by_group_fail_last(path):
    group_sig = group(identity.si(42), fail.s()).on_error(redis_echo.si("errback", "eb"))
    res = run(group_sig)
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert recorded("eb") == ["errback"]


@pytest.mark.parametrize("errback_task", [errback_old_style, errback_new_style])
def test_mutable_errback_called_by_group(path, errback_task):
    group_sig = group(fail.s(), identity.si(42)).on_error(errback_task.s())
    res = run(group_sig)
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    [fail_sig_id] = node_ids("celery_suite.fail")
    assert count(fail_sig_id) == 1


def test_errback_called_by_group_fail_multiple(path):
    expected_errback_count = 42
    group_sig = group(
        *(identity.si(42) for _ in range(24)),
        *(fail.s() for _ in range(expected_errback_count)),
    ).on_error(redis_count.si(redis_key="eb"))
    res = run(group_sig)
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert count("eb") == expected_errback_count


def test_group_children_with_errbacks(path):
    child_sig = fail.si().on_error(redis_count.si(redis_key="eb"))
    res_obj = run(group(child_sig for _ in range(42)))
    with pytest.raises(ExpectedException):
        res_obj.get(timeout=TIMEOUT)
    assert count("eb") == 42


def test_group_with_errback_child_replaced(path):
    group_sig = group(add_replaced.si(42, 1337), fail.s())
    res_obj = run(group_sig.on_error(redis_count.si(redis_key="eb")))
    with pytest.raises(ExpectedException):
        res_obj.get(timeout=TIMEOUT)
    assert count("eb") == 1


@pytest.mark.emulator
def test_group_child_with_errback_replaced(path):
    child_sig = fail_replaced.si().on_error(redis_count.si(redis_key="eb"))
    res_obj = run(group(child_sig, identity.si(42)))
    with pytest.raises(ExpectedException):
        res_obj.get(timeout=TIMEOUT)
    assert count("eb") == 1


def test_group_child_replaced_with_chain_first(path):
    # xfail in Celery on the rpc backend.
    orig_sig = group(replace_with_chain.si(42), identity.s(1337))
    assert run(orig_sig).get(timeout=TIMEOUT) == [42, 1337]


def test_group_child_replaced_with_chain_middle(path):
    # xfail in Celery on the rpc backend.
    orig_sig = group(identity.s(42), replace_with_chain.s(1337), identity.s(31337))
    assert run(orig_sig).get(timeout=TIMEOUT) == [42, 1337, 31337]


def test_group_child_replaced_with_chain_last(path):
    # xfail in Celery on the rpc backend.
    orig_sig = group(identity.s(42), replace_with_chain.s(1337))
    assert run(orig_sig).get(timeout=TIMEOUT) == [42, 1337]


@pytest.mark.emulator
def test_task_replace_with_group_preserves_group_order(path):
    orig_sig = group([add_to_all.s([2, 1], 1), add_to_all.s([4, 3], 1)] * 10)
    assert run(orig_sig).get(timeout=TIMEOUT) == [[3, 2], [5, 4]] * 10
    assert Node.objects.filter(task_name="celery_suite.add").count() == 40
