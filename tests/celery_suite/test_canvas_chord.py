"""Celery's ``t/integration/test_canvas.py``, class ``test_chord``.

One test per Celery test, named after it (see ``test_canvas_chain`` for how Celery's
links, Redis keys and frozen ids are ported). ``chord.link_error(e)`` is
``chord.on_error(e)``: as Celery's, it belongs to the body, and runs once per chord
(once per failing member when the body is a group, whose members carry it).

Not applicable here (with the reason):

* ``test_simple_chord_with_a_delay_in_group_save``: slows down the key-value result
  backend's chord counter (``_apply_chord_incr``); a join here is a row's counter.
* ``test_redis_subscribed_channels_leak``: counts Redis pub/sub channels.
* ``test_add_to_chord``, ``test_add_chord_to_chord``: ``Task.add_to_chord`` works on
  Celery's Redis backend only and is not offered (compose the extra work into the
  header instead).
* ``test_flag_allow_error_cb_on_chord_header_on_upgraded_chord``: tests the setting
  ``task_allow_error_cb_on_chord_header``, which is not offered; with Celery's default
  (the setting off) an implicit chord's errback runs once, as
  ``test_disabling_flag_allow_error_cb_on_chord_header`` and
  ``test_upgraded_chord_link_error_with_header_errback_enabled`` check here; attaching
  errbacks to header members gives the setting's effect
  (``test_enabling_flag_allow_error_cb_on_chord_header``).

Counts for this module: 62 Celery tests, 57 ported (all passing), 5 not applicable.
"""

from __future__ import annotations

import pytest

from django_cloudtasks import AsyncResult, GroupResult, chain, chord, group
from django_cloudtasks.exceptions import ChordError
from django_cloudtasks.models import Node
from tests.celery_suite.running import TIMEOUT, count, node_ids, recorded, run
from tests.celery_suite.tasks import (
    ExpectedException,
    add,
    add_replaced,
    add_to_all,
    chord_add,
    collect_ids,
    errback_new_style,
    errback_old_style,
    fail,
    identity,
    ids,
    print_unicode,
    redis_count,
    redis_echo,
    replace_with_chain,
    tsum,
    write_to_file_and_return_int,
)
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

ERRBACK_FORMS = [errback_old_style, errback_new_style]


def test_chord_order(path):
    inputs = list(range(10))
    c = chord((identity.si(i) for i in inputs), identity.s())
    assert run(c).get(timeout=TIMEOUT) == inputs


@pytest.mark.emulator
def test_replaced_nested_chord(path):
    c1 = chord(
        [
            chord([add.s(1, 2), add_replaced.s(3, 4)], add_to_all.s(5)) | tsum.s(),
            chord([add_replaced.s(6, 7), add.s(0, 0)], add_to_all.s(8)) | tsum.s(),
        ],
        add_to_all.s(9),
    )
    assert run(c1).get(timeout=TIMEOUT) == [29, 38]


def test_eager_chord_inside_task(path, settings):
    from django_cloudtasks.transports import reset_transport

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "eager"}
    reset_transport()
    assert chord_add.apply_async(args=(4, 8)).get(timeout=TIMEOUT) is None
    # As in Celery, the inner chord's body is add([16], 8), which raises; the outer task
    # does not wait for it.
    [body] = Node.objects.filter(task_name="celery_suite.add", args=[8])
    with pytest.raises(TypeError, match="can only concatenate list"):
        AsyncResult(body.pk).get(timeout=TIMEOUT)


@pytest.mark.emulator
def test_group_chain(path):
    c = add.s(2, 2) | group(add.s(i) for i in range(4)) | add_to_all.s(8)
    assert run(c).get(timeout=TIMEOUT) == [12, 13, 14, 15]


def test_group_kwargs(path):
    c = add.s(2, 2) | group(add.s(i) for i in range(4)) | add_to_all.s(8)
    assert run(c, kwargs={"z": 1}).get(timeout=TIMEOUT) == [13, 14, 15, 16]


def test_group_args_and_kwargs(path):
    c = group(add.s(i) for i in range(4)) | add_to_all.s(8)
    assert run(c, args=(4,), kwargs={"z": 1}).get(timeout=TIMEOUT) == [13, 14, 15, 16]


def test_nested_group_chain(path):
    c = chain(
        add.si(1, 0),
        group(add.si(1, 100), chain(add.si(1, 200), group(add.si(1, 1000), add.si(1, 2000)))),
        add.si(1, 10),
    )
    assert run(c).get(timeout=TIMEOUT) == 11


def test_single_task_header(path):
    c1 = chord([add.s(2, 5)], body=add_to_all.s(9))
    assert run(c1).get(timeout=TIMEOUT) == [16]
    c2 = group([add.s(2, 5)]) | add_to_all.s(9)
    assert run(c2).get(timeout=TIMEOUT) == [16]


def test_empty_header_chord(path):
    c1 = chord([], body=add_to_all.s(9))
    assert run(c1).get(timeout=TIMEOUT) == []
    c2 = group([]) | add_to_all.s(9)
    assert run(c2).get(timeout=TIMEOUT) == []


@pytest.mark.emulator
def test_nested_chord(path):
    c1 = chord(
        [
            chord([add.s(1, 2), add.s(3, 4)], add.s([5])),
            chord([add.s(6, 7)], add.s([10])),
        ],
        add_to_all.s(["A"]),
    )
    assert run(c1).get(timeout=TIMEOUT) == [[3, 7, 5, "A"], [13, 10, "A"]]
    c2 = group(
        [
            group([add.s(1, 2), add.s(3, 4)]) | add.s([5]),
            group([add.s(6, 7)]) | add.s([10]),
        ]
    ) | add_to_all.s(["A"])
    assert run(c2).get(timeout=TIMEOUT) == [[3, 7, 5, "A"], [13, 10, "A"]]
    c = group(
        [group([group([group([add.s(1, 2)]) | add.s([3])]) | add.s([4])]) | add.s([5])]
    ) | add.s([6])
    assert run(c).get(timeout=TIMEOUT) == [[[[3, 3], 4], 5], 6]


def test_parent_ids(path):
    root = ids.si(i=1)
    g = chain(
        root,
        ids.si(i=2),
        chord(group(ids.si(i=i) for i in range(3, 50)), chain(collect_ids.s(i=50) | ids.si(i=51))),
    )
    _assert_parentids_chord(run(g))


def test_parent_ids__OR(path):
    root = ids.si(i=1)
    g = (
        root
        | ids.si(i=2)
        | group(ids.si(i=i) for i in range(3, 50))
        | collect_ids.s(i=50)
        | ids.si(i=51)
    )
    _assert_parentids_chord(run(g))


def _assert_parentids_chord(res):
    # Celery's root_id is the first task's id; here it is the workflow's (documented).
    expected_root_id = res.workflow_id
    assert isinstance(res, AsyncResult)
    assert isinstance(res.parent, AsyncResult)
    assert isinstance(res.parent.parent, GroupResult)
    assert isinstance(res.parent.parent.parent, AsyncResult)
    assert isinstance(res.parent.parent.parent.parent, AsyncResult)
    # first we check the last task
    root_id, parent_id, value = res.get(timeout=TIMEOUT)
    assert (value, root_id, parent_id) == (51, expected_root_id, res.parent.id)
    # then the chord callback
    prev, (root_id, parent_id, value) = res.parent.get(timeout=TIMEOUT)
    assert value == 50
    assert root_id == expected_root_id
    # started by one of the chord header tasks.
    assert parent_id in [r.id for r in res.parent.parent.results]
    # check what the chord callback recorded
    for root_id, parent_id, _value in prev:
        assert root_id == expected_root_id
        assert parent_id == res.parent.parent.parent.id
    # ids(i=2)
    root_id, parent_id, value = res.parent.parent.parent.get(timeout=TIMEOUT)
    assert value == 2
    assert parent_id == res.parent.parent.parent.parent.id
    assert root_id == expected_root_id
    # ids(i=1)
    root_id, parent_id, value = res.parent.parent.parent.parent.get(timeout=TIMEOUT)
    assert value == 1
    assert root_id == expected_root_id
    assert parent_id is None


def test_chord_on_error(path):
    c1 = chord(
        header=[add.s(1, 2), add.s(3, 4), fail.s()],
        body=print_unicode.s("This should not be called").on_error(errback_old_style.s()),
    )
    res = run(c1)
    with pytest.raises(ExpectedException):
        res.get(propagate=True, timeout=TIMEOUT)
    # The errback ran once, with the body's id (Celery: the id the ChordError is stored
    # under). Here the body's result is the member's own exception (documented).
    [errback] = Node.objects.filter(task_name="celery_suite.errback_old_style")
    assert AsyncResult(errback.pk).get(timeout=TIMEOUT) == res.id
    assert count(res.id) == 1
    assert isinstance(res.result, ExpectedException)
    header = res.parent
    assert [r.state for r in header.results] == ["SUCCESS", "SUCCESS", "FAILURE"]
    assert [r.result for r in header.results][:2] == [3, 7]


@pytest.mark.parametrize("size", [3, 4, 5, 6, 7, 8, 9])
def test_generator(path, size, tmp_path):
    file_name = tmp_path / "ints"

    def assert_generator():
        for i in range(size):
            # Celery starts header tasks while the generator runs; here the canvas is
            # stored whole (one transaction) before any of its tasks runs.
            assert not file_name.exists()
            yield write_to_file_and_return_int.s(str(file_name), i)

    c = chord(assert_generator(), tsum.s())
    assert run(c).get(timeout=TIMEOUT) == size * (size - 1) // 2
    assert sorted(int(line) for line in file_name.read_text().split()) == list(range(size))


def test_parallel_chords(path):
    c1 = chord(group(add.s(1, 2), add.s(3, 4)), tsum.s())
    c2 = chord(group(add.s(1, 2), add.s(3, 4)), tsum.s())
    assert run(group(c1, c2)).get(timeout=TIMEOUT) == [10, 10]


@pytest.mark.emulator
def test_chord_in_chords_with_chains(path):
    inner = chain(add.si(1, 2), chord(group([add.si(1, 2), add.si(1, 2)]), add.si(1, 2)))
    c = chord(group([inner, inner]), add.si(2, 2))
    assert run(c).get(timeout=TIMEOUT) == 4


def test_chain_chord_chain_chord(path):
    # test for #2573
    c = chain(
        identity.si(1),
        chord(
            [
                identity.si(2),
                chain(identity.si(3), chord([identity.si(4), identity.si(5)], identity.si(6))),
            ],
            identity.si(7),
        ),
    )
    assert run(c).get(timeout=TIMEOUT) == 7


def test_chord_in_chain_with_args(path):
    # xfail in Celery (#6176). Celery also checks c1.apply(args=(1,)); a canvas's
    # apply() is not offered here (the eager transport runs a canvas in process).
    c1 = chain(chord([identity.s(), identity.s()], identity.s()), identity.s())
    assert run(c1, args=(1,)).get(timeout=TIMEOUT) == [1, 1]


def test_chain_in_chain_with_args(path):
    # xfail in Celery (#6200); apply() as in test_chord_in_chain_with_args.
    c1 = chain(chain(identity.s(), identity.s()))
    assert run(c1, args=(1,)).get(timeout=TIMEOUT) == 1


def test_large_header(path):
    c = group(identity.si(i) for i in range(1000)) | tsum.s()
    assert run(c).get(timeout=TIMEOUT) == 499500


def test_chain_to_a_chord_with_large_header(path):
    c = identity.si(1) | group(identity.s() for _ in range(1000)) | tsum.s()
    assert run(c).get(timeout=TIMEOUT) == 1000


def test_priority(path):
    # Cloud Tasks has no priorities: the option is refused, naming the rewrite.
    with pytest.raises(TypeError, match=r"priority.*queue="):
        chain(identity.signature((1,), priority=3))


def test_priority_chain(path):
    with pytest.raises(TypeError, match=r"priority.*queue="):
        identity.signature((1,), priority=3) | identity.signature(priority=5)


def test_nested_chord_group(path):
    sig = chord((group(identity.s(42), identity.s(42)),), identity.s())
    assert run(sig).get(timeout=TIMEOUT) == [42, 42]


def test_nested_chord_group_chain_group_tail(path):
    sig = chord(
        group(chain(identity.s(42), group(identity.s(), identity.s()))),
        identity.s(),  # [[42, 42]] since the chain prevents unrolling
    )
    assert run(sig).get(timeout=TIMEOUT) == [[42, 42]]


def test_error_propagates_from_chord(path):
    # xfail in Celery on Redis (#6437).
    res = run(add.s(1, 1) | fail.s() | group(add.s(1), add.s(1)))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)


def test_error_propagates_from_chord2(path):
    res = run(add.s(1, 1) | add.s(1) | group(add.s(1), fail.s()))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)


# -- errors reaching a chord from its header or its body ------------------------------

#: Celery's child signatures: a simple task, a chain failing before its end, a chain
#: failing at its end, and a group.
CHILDREN = {
    "simple": lambda: fail.s(),
    "chain": lambda: chain(identity.si(42), fail.s(), identity.si(42)),
    "chain_tail": lambda: chain(identity.si(42), fail.s()),
    "group": lambda: group(identity.si(42), fail.s()),
}


def _error_propagates(child):
    res = run(chord((child,), identity.s()))
    with pytest.raises(ExpectedException):  # from the header
        res.get(timeout=TIMEOUT)
    res = run(chord((identity.si(42),), child))
    with pytest.raises(ExpectedException):  # from the body
        res.get(timeout=TIMEOUT)


def _immutable_errback_called(child):
    errback = redis_echo.si("errback", redis_key="eb")
    res = run(chord((child,), identity.s()).on_error(errback))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert recorded("eb") == ["errback"]  # once, after the header fails
    res = run(chord((identity.si(42),), child).on_error(errback))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert recorded("eb") == ["errback", "errback"]  # once more, after the body fails


def _mutable_errback_called(child, errback_task):
    res = run(chord((child,), identity.s()).on_error(errback_task.s()))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert count(res.id) == 1  # called with the body's request
    res = run(chord((identity.si(42),), child).on_error(errback_task.s()))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    failed = node_ids("celery_suite.fail")[-1]
    assert count(failed) == 1  # called with the failing task's request


def test_error_propagates_to_chord_from_simple(path):
    _error_propagates(CHILDREN["simple"]())


def test_immutable_errback_called_by_chord_from_simple(path):
    _immutable_errback_called(CHILDREN["simple"]())


@pytest.mark.parametrize("errback_task", ERRBACK_FORMS)
def test_mutable_errback_called_by_chord_from_simple(path, errback_task):
    _mutable_errback_called(CHILDREN["simple"](), errback_task)


@pytest.mark.emulator
def test_error_propagates_to_chord_from_chain(path):
    _error_propagates(CHILDREN["chain"]())


def test_immutable_errback_called_by_chord_from_chain(path):
    _immutable_errback_called(CHILDREN["chain"]())


@pytest.mark.parametrize("errback_task", ERRBACK_FORMS)
def test_mutable_errback_called_by_chord_from_chain(path, errback_task):
    _mutable_errback_called(CHILDREN["chain"](), errback_task)


def test_error_propagates_to_chord_from_chain_tail(path):
    _error_propagates(CHILDREN["chain_tail"]())


def test_immutable_errback_called_by_chord_from_chain_tail(path):
    _immutable_errback_called(CHILDREN["chain_tail"]())


@pytest.mark.parametrize("errback_task", ERRBACK_FORMS)
def test_mutable_errback_called_by_chord_from_chain_tail(path, errback_task):
    _mutable_errback_called(CHILDREN["chain_tail"](), errback_task)


def test_error_propagates_to_chord_from_group(path):
    _error_propagates(CHILDREN["group"]())


@pytest.mark.emulator
def test_immutable_errback_called_by_chord_from_group(path):
    _immutable_errback_called(CHILDREN["group"]())


@pytest.mark.parametrize("errback_task", ERRBACK_FORMS)
def test_mutable_errback_called_by_chord_from_group(path, errback_task):
    _mutable_errback_called(CHILDREN["group"](), errback_task)


def _mixed_group(passing, failing):
    return group(*(identity.si(42) for _ in range(passing)), *(fail.s() for _ in range(failing)))


def test_immutable_errback_called_by_chord_from_group_fail_multiple(path):
    child_sig = _mixed_group(24, 42)
    errback = redis_count.si(redis_key="eb")
    res = run(chord((child_sig,), identity.s()).on_error(errback))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    # Once: it is attached to the chord body, which is a single task.
    assert count("eb") == 1
    res = run(chord((identity.si(42),), child_sig).on_error(errback))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    # Once per failing task of the body, which is a group.
    assert count("eb") == 1 + 42


@pytest.mark.parametrize("errback_task", ERRBACK_FORMS)
def test_mutable_errback_called_by_chord_from_group_fail_multiple_on_header_failure(
    path, errback_task
):
    chord_sig = chord((_mixed_group(8, 42),), identity.s()).on_error(errback_task.s())
    res = run(chord_sig)
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert count(res.id) == 1


@pytest.mark.parametrize("errback_task", ERRBACK_FORMS)
def test_mutable_errback_called_by_chord_from_group_fail_multiple_on_body_failure(
    path, errback_task
):
    chord_sig = chord((identity.si(42),), _mixed_group(8, 42)).on_error(errback_task.s())
    res = run(chord_sig)
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    fail_sig_ids = node_ids("celery_suite.fail")
    assert len(fail_sig_ids) == 42
    assert [count(i) for i in fail_sig_ids] == [1] * 42


# -- replaced tasks in a chord's header and body ---------------------------------------


def test_chord_header_task_replaced_with_chain(path):
    orig_sig = chord(replace_with_chain.si(42), identity.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == [42]


@pytest.mark.emulator
def test_chord_header_child_replaced_with_chain_first(path):
    orig_sig = chord((replace_with_chain.si(42), identity.s(1337)), identity.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == [42, 1337]


def test_chord_header_child_replaced_with_chain_middle(path):
    header = (identity.s(42), replace_with_chain.s(1337), identity.s(31337))
    assert run(chord(header, identity.s())).get(timeout=TIMEOUT) == [42, 1337, 31337]


def test_chord_header_child_replaced_with_chain_last(path):
    orig_sig = chord((identity.s(42), replace_with_chain.s(1337)), identity.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == [42, 1337]


def test_chord_body_task_replaced_with_chain(path):
    orig_sig = chord(identity.s(42), replace_with_chain.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == [42]


def test_chord_body_chain_child_replaced_with_chain_first(path):
    orig_sig = chord(identity.s(42), chain(replace_with_chain.s(), identity.s()))
    assert run(orig_sig).get(timeout=TIMEOUT) == [42]


def test_chord_body_chain_child_replaced_with_chain_middle(path):
    orig_sig = chord(identity.s(42), chain(identity.s(), replace_with_chain.s(), identity.s()))
    assert run(orig_sig).get(timeout=TIMEOUT) == [42]


def test_chord_body_chain_child_replaced_with_chain_last(path):
    orig_sig = chord(identity.s(42), chain(identity.s(), replace_with_chain.s()))
    assert run(orig_sig).get(timeout=TIMEOUT) == [42]


# -- error callbacks on chord headers (Celery's task_allow_error_cb_on_chord_header) ---

HEADERS = (
    (fail.si(),),
    (fail.si(), fail.si(), fail.si()),
    (fail.si(), identity.si(42)),
    (fail.si(), identity.si(42), identity.si(42)),
    (fail.si(), identity.si(42), fail.si()),
    (fail.si(), identity.si(42), fail.si(), identity.si(42)),
    (fail.si(), identity.si(42), fail.si(), identity.si(42), fail.si()),
)


@pytest.mark.emulator
def test_nested_chord_header_link_error(path):
    chord_inner = chord([identity.si("t1"), fail.si()], identity.si("t2 (body)"))
    body_sig = redis_echo.si("chord body called", redis_key="echo_body")
    chord_outer = chord(group([identity.si("t3"), chord_inner]), body_sig)
    res = run(chord_outer.on_error(redis_echo.si("errback called", redis_key="echo_errback")))
    with pytest.raises(ExpectedException):
        res.get(timeout=TIMEOUT)
    assert recorded("echo_body") == []  # the body was not executed
    assert recorded("echo_errback") == ["errback called"]  # only one errback was called


def test_enabling_flag_allow_error_cb_on_chord_header(path):
    # Celery needs task_allow_error_cb_on_chord_header for header errbacks to run; here
    # a header member's own errbacks run as any node's do.
    header_errback_sig = redis_echo.si("header errback called", redis_key="header_eb")
    body_errback_sig = redis_echo.si("body errback called", redis_key="body_eb")
    body_sig = redis_echo.si("chord body called", redis_key="echo_body")
    for header in HEADERS:
        Execution.objects.all().delete()
        chord_sig = chord(
            [t.on_error(header_errback_sig) for t in header], body_sig.on_error(body_errback_sig)
        )
        res = run(chord_sig)
        with pytest.raises(ExpectedException):
            res.get(timeout=TIMEOUT)
        assert recorded("echo_body") == []
        failed_header_tasks_count = sum(1 for t in header if t == fail.si())
        assert recorded("header_eb") == ["header errback called"] * failed_header_tasks_count
        assert recorded("body_eb") == ["body errback called"]


def test_disabling_flag_allow_error_cb_on_chord_header(path):
    errback_sig = redis_echo.si("errback called", redis_key="echo_errback")
    body_sig = redis_echo.si("chord body called", redis_key="echo_body")
    for i, header in enumerate(HEADERS, start=1):
        res = run(chord(header, body_sig).on_error(errback_sig))
        with pytest.raises(ExpectedException):
            res.get(timeout=TIMEOUT)
        assert recorded("echo_body") == []
        assert recorded("echo_errback") == ["errback called"] * i  # one more per chord


def test_upgraded_chord_link_error_with_header_errback_enabled(path):
    body_sig = redis_echo.si("chord body called", redis_key="echo_body")
    errback_sig = redis_echo.si("errback called", redis_key="echo_errback")
    sig = chain(identity.si(42), group(fail.si(), fail.si()), body_sig).on_error(errback_sig)
    with pytest.raises(ExpectedException):
        run(sig).get(timeout=TIMEOUT)
    assert recorded("echo_body") == []
    assert recorded("echo_errback") == ["errback called"]  # Celery's default: once


@pytest.mark.parametrize(
    "input_body",
    [
        lambda: add.si(9, 7),
        lambda: chain(add.si(9, 7), add.si(5, 7)),
        lambda: group([add.si(9, 7), add.si(5, 7)]),
        lambda: chord(group([add.si(1, 1), add.si(2, 2)]), add.si(10, 10)),
    ],
    ids=["body is a single_task", "body is a chain", "body is a group", "body is a chord"],
)
def test_chord_error_propagation_with_different_body_types(path, input_body):
    failing_chord = chain(group([add.si(15, 7), fail.si()]), input_body())
    result = run(failing_chord)
    with pytest.raises(ExpectedException):
        result.get(timeout=TIMEOUT)


def test_chord_error_in_nested_chain_does_not_crash(path):
    c = chain(chain(group(add.si(1, 1), fail.si()), identity.s()), identity.s())
    with pytest.raises(ExpectedException):
        run(c).get(timeout=TIMEOUT)


def test_chord_unlock_with_failed_task_in_nested_chain_member(path):
    c = chain(
        group(
            identity.si(1),
            chain(fail.si(), group(identity.si(2), identity.si(3)), identity.si(4)),
        ),
        identity.s(),
    )
    with pytest.raises((ExpectedException, ChordError)):
        run(c).get(timeout=TIMEOUT)
