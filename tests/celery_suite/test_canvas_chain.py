"""Celery's ``t/integration/test_canvas.py``, classes ``test_link_error`` and ``test_chain``.

One test per Celery test, named after it. Where Celery links a success callback
(``sig.link(cb)``), the port composes ``cb`` with ``|`` (``echo_through`` passes the
result on); where Celery calls ``link_error`` in place, the port uses
``sig = sig.on_error(cb)``; where Celery freezes a signature to learn a task id in
advance, the port reads the id from the stored node afterwards. Celery's Redis
lists and counters are rows the tasks record.

Not applicable here (with the reason):

* ``test_chord_header_id_duplicated_on_rabbitmq_msg_duplication``: republishes a
  message through the broker's producer pool, and there is no broker. (A repeated
  delivery of one node is covered by ``tests/django_cloudtasks/test_reliability.py``.)
* ``test_freezing_chain_sets_id_of_last_task``: ``freeze()`` and caller-chosen
  ``task_id`` are not offered; ids are created when the canvas is stored.
* ``test_groupresult_serialization``: returns an ``AsyncResult`` from a task, which
  Celery serializes as nested id tuples; results here must be JSON data.
* ``test_chain_flattening_keep_links_of_inner_chain``, ``test_chain_children_with_callbacks``,
  ``test_chain_with_callback_child_replaced``, ``test_chain_child_with_callback_replaced``,
  ``test_chain_with_cb_replaced_with_chain_with_cb``: the behaviour under test is the
  ``link`` success callback running beside the chain, which is not supported
  (``sig.link()`` raises ``AttributeError`` naming ``sig | callback``, tested in
  ``tests/canvas/test_celery_api.py``).

Counts for this module: 57 Celery tests, 49 ported (all passing), 8 not applicable.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_cloudtasks import AsyncResult, chain, chord, group, signature
from django_cloudtasks.models import Node
from tests.celery_suite.running import TIMEOUT, count, drain, recorded, run
from tests.celery_suite.tasks import (
    ExpectedException,
    add,
    add_replaced,
    chain_add,
    delayed_sum,
    delayed_sum_with_soft_guard,
    fail,
    fail_replaced,
    identity,
    ids,
    print_unicode,
    redis_count,
    redis_echo,
    replace_with_chain,
    replace_with_chain_which_raises,
    replace_with_empty_chain,
    retry_once,
    return_exception,
    second_order_replace1,
    tsum,
)

pytestmark = pytest.mark.django_db(transaction=True)


# -- test_link_error -------------------------------------------------------------------


def test_link_error_eager(path):
    exception = ExpectedException("Task expected to fail", "test")
    result = fail.apply(args=("test",), link_error=return_exception.s())
    actual = result.get(timeout=TIMEOUT, propagate=False)
    assert actual == exception


@pytest.mark.emulator
def test_link_error(path):
    exception = ExpectedException("Task expected to fail", "test")
    result = run(fail.s("test").on_error(return_exception.s()))
    actual = result.get(timeout=TIMEOUT, propagate=False)
    assert actual == exception


def test_link_error_callback_error_callback_retries_eager(path):
    exception = ExpectedException("Task expected to fail", "test")
    result = fail.apply(args=("test",), link_error=retry_once.s(countdown=None))
    assert result.get(timeout=TIMEOUT, propagate=False) == exception


def test_link_error_callback_retries(path):
    exception = ExpectedException("Task expected to fail", "test")
    result = run(fail.s("test").on_error(retry_once.s(countdown=0)))
    assert result.get(timeout=TIMEOUT, propagate=False) == exception
    [errback] = Node.objects.filter(task_name="celery_suite.retry_once")
    assert AsyncResult(errback.pk).get(timeout=TIMEOUT) == 1


def test_link_error_using_signature_eager(path):
    sig = signature("celery_suite.fail", args=("test",))
    sig = sig.on_error(signature("celery_suite.return_exception"))
    exception = ExpectedException("Task expected to fail", "test")
    assert (sig.apply().get(timeout=TIMEOUT, propagate=False), True) == (exception, True)


def test_link_error_using_signature(path):
    sig = signature("celery_suite.fail", args=("test",))
    sig = sig.on_error(signature("celery_suite.return_exception"))
    exception = ExpectedException("Task expected to fail", "test")
    result = sig.delay()
    if path == "memory":
        run(group())  # drains what delay() sent
    assert (result.get(timeout=TIMEOUT, propagate=False), True) == (exception, True)


# -- test_chain ------------------------------------------------------------------------


@pytest.mark.emulator
def test_simple_chain(path):
    c = add.s(4, 4) | add.s(8) | add.s(16)
    assert run(c).get(timeout=TIMEOUT) == 32


def test_single_chain(path):
    assert run(chain(add.s(3, 4))).get(timeout=TIMEOUT) == 7


@pytest.mark.emulator
def test_complex_chain(path):
    g = group(add.s(i) for i in range(4))
    c = add.s(2, 2) | (add.s(4) | add_replaced.s(8) | add.s(16) | add.s(32)) | g
    assert run(c).get(timeout=TIMEOUT) == [64, 65, 66, 67]


def test_group_results_in_chain(path):
    # xfail in Celery (times out): a group of one chain ending in a group is that chain.
    c = group(add.s(1, 2) | group(add.s(1), add.s(2)))
    assert run(c).get(timeout=TIMEOUT) == [4, 5]


def test_chain_of_chain_with_a_single_task(path):
    assert run(chain([chain(identity.s(42))])).get(timeout=TIMEOUT) == 42


def test_chain_on_error(path):
    res = run(chain(add.s(1, 2), fail.s(), add.s(3, 4)))
    with pytest.raises(ExpectedException):
        res.get(propagate=True, timeout=TIMEOUT)
    with pytest.raises(ExpectedException):
        res.parent.get(propagate=True, timeout=TIMEOUT)


def test_chain_inside_group_receives_arguments(path):
    c = add.s(5, 6) | group((add.s(1) | add.s(2), add.s(3)))
    assert run(c).get(timeout=TIMEOUT) == [14, 14]


def test_eager_chain_inside_task(path, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "eager"}
    from django_cloudtasks.transports import reset_transport

    reset_transport()
    assert chain_add.apply_async(args=(4, 8)).get(timeout=TIMEOUT) is None
    [inner] = Node.objects.filter(task_name="celery_suite.add", args=[4, 4])
    assert AsyncResult(inner.pk).children[0].get(timeout=TIMEOUT) == 16


@pytest.mark.emulator
def test_group_chord_group_chain(path):
    before = group(redis_echo.si(f"before {i}") for i in range(3))
    connect = redis_echo.si("connect")
    after = group(redis_echo.si(f"after {i}") for i in range(2))
    run(before | connect | after).get(timeout=TIMEOUT)
    messages = recorded("redis-echo")
    assert set(messages[:3]) == {"before 0", "before 1", "before 2"}
    assert messages[3] == "connect"
    assert set(messages[4:]) == {"after 0", "after 1"}


def test_group_result_not_has_cache(path):
    t1 = identity.si(1)
    t2 = identity.si(2)
    gt = group([identity.si(3), identity.si(4)])
    ct = chain(identity.si(5), gt)
    task = group(t1, t2, ct)
    assert run(task).get(timeout=TIMEOUT) == [1, 2, [3, 4]]


@pytest.mark.emulator
def test_second_order_replace(path):
    run(second_order_replace1.s()).get(timeout=TIMEOUT)
    assert recorded("redis-echo") == ["In A", "In B", "In/Out C", "Out B", "Out A"]


def test_parent_ids(path, num=10):
    res = run(chain(ids.si(i=i) for i in range(num)))
    res.get(timeout=TIMEOUT)
    _assert_ids(res, num - 1)


def _assert_ids(res, size):
    # Celery's root_id is the first task's id; here it is the workflow's id (documented).
    i, node = size, res
    while node:
        root_id, parent_id, value = node.get(timeout=TIMEOUT)
        assert value == i
        if node.parent:
            assert parent_id == node.parent.id
        else:
            assert parent_id is None
        assert root_id == res.workflow_id
        node = node.parent
        i -= 1


def test_chord_soft_timeout_recuperation(path):
    c = chord(
        [
            add.s(1, 2),
            # Celery: 2 s of work under a 1 s soft limit; the guard returns 0.
            delayed_sum_with_soft_guard.s([100], pause_time=0.5).set(soft_time_limit=0.1),
        ]
    )
    result = c(delayed_sum.s(pause_time=0))
    drain()
    assert result.get(timeout=TIMEOUT) == 3


def test_chain_error_handler_with_eta(path):
    eta = timezone.now() + timedelta(seconds=1)
    c = chain(group(add.s(1, 2), add.s(3, 4)), tsum.s())
    # Celery accepts an errback that could not be called with (request, exc, traceback)
    # and only fails if it ever runs; here error callbacks are checked at apply_async().
    with pytest.raises(TypeError, match=r"error callback celery_suite.print_unicode"):
        c.on_error(print_unicode.s()).apply_async(eta=eta)
    result = run(c.on_error(print_unicode.si()), eta=eta)
    assert result.get(timeout=TIMEOUT) == 10


def test_chain_of_task_a_group_and_a_chord(path):
    c = add.si(1, 0)
    c = c | group(add.s(1), add.s(1))
    c = c | group(tsum.s(), tsum.s())
    c = c | tsum.s()
    assert run(c).get(timeout=TIMEOUT) == 8


def test_chain_of_chords_as_groups_chained_to_a_task_with_two_tasks(path):
    c = add.si(1, 0)
    c = c | group(add.s(1), add.s(1))
    c = c | tsum.s()
    c = c | add.s(1)
    c = c | group(add.s(1), add.s(1))
    c = c | tsum.s()
    assert run(c).get(timeout=TIMEOUT) == 12


def test_chain_of_chords_with_two_tasks(path):
    c = add.si(1, 0)
    c = c | group(add.s(1), add.s(1))
    c = c | tsum.s()
    c = c | add.s(1)
    c = c | chord(group(add.s(1), add.s(1)), tsum.s())
    assert run(c).get(timeout=TIMEOUT) == 12


@pytest.mark.emulator
def test_chain_of_explicit_chords(path):
    c1 = chain(
        chord(group(add.si(1, 0), add.si(1, 0)), tsum.s()),
        chord(group(add.s(1), add.s(1)), tsum.s()),
        chord(group(add.s(0), add.s(0)), tsum.s()),
    )
    c2 = chain(
        chord(group(add.s(10), add.s(10)), tsum.s()),
        chord(group(add.s(0), add.s(0)), tsum.s()),
        chord(group(add.s(1), add.s(1)), tsum.s()),
    )
    assert run(c1 | c2).get(timeout=TIMEOUT) == 178


def test_chain_of_nine_chords(path):
    c = chain(
        chord(group(add.si(1, 0), add.si(1, 0), add.si(1, 0)), tsum.s()),
        *(chord(group(add.s(1), add.s(1), add.s(1)), tsum.s()) for _ in range(7)),
        chord(group(add.s(0), add.s(0), add.s(0)), tsum.s()),
    )
    assert run(c).get(timeout=TIMEOUT) == 29520


def test_chain_of_a_chord_and_a_group_with_two_tasks(path):
    c = add.si(1, 0)
    c = c | group(add.s(1), add.s(1))
    c = c | tsum.s()
    c = c | add.s(1)
    c = c | group(add.s(1), add.s(1))
    assert run(c).get(timeout=TIMEOUT) == [6, 6]


def test_chain_of_a_chord_and_a_task_and_a_group(path):
    c = group(add.s(1, 1), add.s(1, 1))
    c = c | tsum.s()
    c = c | add.s(1)
    c = c | group(add.s(1), add.s(1))
    assert run(c).get(timeout=TIMEOUT) == [6, 6]


def test_chain_of_a_chord_and_two_tasks_and_a_group(path):
    c = group(add.s(1, 1), add.s(1, 1))
    c = c | tsum.s()
    c = c | add.s(1)
    c = c | add.s(1)
    c = c | group(add.s(1), add.s(1))
    assert run(c).get(timeout=TIMEOUT) == [7, 7]


def test_chain_of_a_chord_and_three_tasks_and_a_group(path):
    c = group(add.s(1, 1), add.s(1, 1))
    c = c | tsum.s()
    c = c | add.s(1)
    c = c | add.s(1)
    c = c | add.s(1)
    c = c | group(add.s(1), add.s(1))
    assert run(c).get(timeout=TIMEOUT) == [8, 8]


def test_nested_chain_group_lone(path):
    # xfail in Celery (times out).
    sig = chain(group(identity.s(42), identity.s(42)))
    assert run(sig).get(timeout=TIMEOUT) == [42, 42]


def test_nested_chain_group_mid(path):
    sig = chain(identity.s(42), group(identity.s(), identity.s()), identity.s())
    assert run(sig).get(timeout=TIMEOUT) == [42, 42]


def test_nested_chain_group_last(path):
    sig = chain(identity.s(42), group(identity.s(), identity.s()))
    assert run(sig).get(timeout=TIMEOUT) == [42, 42]


@pytest.mark.emulator
def test_chain_replaced_with_a_chain_and_a_callback(path):
    link_msg = "Internal chain callback"
    c = chain(
        identity.s("Hello "),
        # The replacement chain will pass its args though
        replace_with_chain.s(link_msg=link_msg),
        add.s("world"),
    )
    assert run(c).get(timeout=TIMEOUT) == "Hello world"
    assert recorded("redis-echo") == [link_msg]


def test_chain_replaced_with_a_chain_and_an_error_callback(path):
    link_msg = "Internal chain errback"
    c = chain(
        identity.s("Hello "),
        replace_with_chain_which_raises.s(link_msg=link_msg),
        add.s(" will never be seen :("),
    )
    res = run(c)
    with pytest.raises(ValueError):
        res.get(timeout=TIMEOUT)
    assert recorded("redis-echo") == [link_msg]


def test_chain_with_eb_replaced_with_chain_with_eb(path):
    inner_link_msg = "Internal chain errback"
    outer_link_msg = "External chain errback"
    c = chain(
        identity.s("Hello "),
        # The replacement chain will die and break the encapsulating chain
        replace_with_chain_which_raises.s(link_msg=inner_link_msg),
        add.s("world"),
    )
    c = c.on_error(redis_echo.si(outer_link_msg))
    res = run(c)
    with pytest.raises(ValueError):
        res.get(timeout=TIMEOUT)
    assert sorted(recorded("redis-echo")) == sorted([inner_link_msg, outer_link_msg])


def test_replace_chain_with_empty_chain(path):
    r = run(chain(identity.s(1), replace_with_empty_chain.s()))
    # Celery: ImproperlyConfigured("Cannot replace with an empty chain"); here an
    # empty chain cannot be built at all.
    with pytest.raises(ValueError, match="a chain needs at least one member"):
        r.get(timeout=TIMEOUT)


def test_chain_children_with_errbacks(path):
    errback = redis_count.si(redis_key="errbacks")
    child_sig = fail.si().on_error(errback)
    chain_sig = chain(child_sig for _ in range(42))
    res_obj = run(chain_sig)
    with pytest.raises(ExpectedException):
        res_obj.get(timeout=TIMEOUT)
    # Only the first child task gets a chance to run and fail; the others share its
    # errback, which runs once for the failure.
    assert count("errbacks") == 1


def test_chain_with_errback_child_replaced(path):
    chain_sig = chain(add_replaced.si(42, 1337), fail.s())
    chain_sig = chain_sig.on_error(redis_count.si(redis_key="errbacks"))
    res_obj = run(chain_sig)
    with pytest.raises(ExpectedException):
        res_obj.get(timeout=TIMEOUT)
    assert count("errbacks") == 1


def test_chain_child_with_errback_replaced(path):
    child_sig = fail_replaced.si().on_error(redis_count.si(redis_key="errbacks"))
    chain_sig = chain(child_sig, identity.si(42))
    res_obj = run(chain_sig)
    with pytest.raises(ExpectedException):
        res_obj.get(timeout=TIMEOUT)
    assert count("errbacks") == 1


def test_task_replaced_with_chain(path):
    # xfail in Celery on the rpc backend.
    assert run(replace_with_chain.si(42)).get(timeout=TIMEOUT) == 42


def test_chain_child_replaced_with_chain_first(path):
    orig_sig = chain(replace_with_chain.si(42), identity.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == 42


def test_chain_child_replaced_with_chain_middle(path):
    orig_sig = chain(identity.s(42), replace_with_chain.s(), identity.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == 42


def test_chain_child_replaced_with_chain_last(path):
    # xfail in Celery on the rpc backend.
    orig_sig = chain(identity.s(42), replace_with_chain.s())
    assert run(orig_sig).get(timeout=TIMEOUT) == 42


def _echoes(*messages, key="echo_chamber"):
    return [redis_echo.si(m, redis_key=key) for m in messages]


def test_chaining_upgraded_chords_pure_groups(path):
    c = chain(
        group(*_echoes("1", "2", "3")),
        group(*_echoes("4", "5", "6")),
        group(*_echoes("7")),
        group(*_echoes("8")),
        *_echoes("9"),
        redis_echo.si("Done", redis_key="Done"),
    )
    run(c).get(timeout=TIMEOUT)
    assert recorded("Done") == ["Done"]
    assert sorted(recorded("echo_chamber")) == [str(i) for i in range(1, 10)]


def test_chaining_upgraded_chords_starting_with_chord(path):
    c = chain(
        chord(group(_echoes("1", "2", "3")), group(_echoes("4", "5", "6"))),
        group(*_echoes("7")),
        group(*_echoes("8")),
        *_echoes("9"),
        redis_echo.si("Done", redis_key="Done"),
    )
    run(c).get(timeout=TIMEOUT)
    assert recorded("Done") == ["Done"]
    assert sorted(recorded("echo_chamber")) == [str(i) for i in range(1, 10)]


def test_chaining_upgraded_chords_mixed_canvas(path):
    c = chain(
        chord(group(_echoes("1", "2", "3")), group(_echoes("4", "5", "6"))),
        *_echoes("7"),
        group(*_echoes("8")),
        *_echoes("9"),
        redis_echo.si("Done", redis_key="Done"),
    )
    run(c).get(timeout=TIMEOUT)
    assert recorded("Done") == ["Done"]
    assert sorted(recorded("echo_chamber")) == [str(i) for i in range(1, 10)]


@pytest.mark.parametrize("group_last_task", [False, True])
def test_chaining_upgraded_chords_mixed_canvas_protocol_2(path, group_last_task):
    done = redis_echo.si("Done", redis_key="Done")
    c = chain(
        group(_echoes("1", "2")),
        group(_echoes("3", "4", "5")),
        group(_echoes("6", "7", "8", "9")),
        group(done) if group_last_task else done,
    )
    run(c).get(timeout=TIMEOUT)
    assert recorded("Done") == ["Done"]
    assert sorted(recorded("echo_chamber")) == [str(i) for i in range(1, 10)]


def test_group_in_center_of_chain(path):
    t1 = chain(tsum.s(), group(add.s(8), add.s(16)), tsum.s() | add.s(32))
    t2 = chord([tsum.s(), tsum.s()], t1)
    t3 = chord([add.s(0, 1)], t2)
    assert run(t3).get(timeout=TIMEOUT) == 60


def test_upgrade_to_chord_inside_chains(path):
    key = "upgrade"
    group1 = group(redis_echo.si("a", key), redis_echo.si("a", key))
    group2 = group(redis_echo.si("a", key), redis_echo.si("a", key))
    chord1 = group1 | group2
    chain1 = chain(chord1, (redis_echo.si("a", key) | redis_echo.si("b", key)))
    run(chain1).get(timeout=TIMEOUT)
    assert recorded(key).count("b") == 1
