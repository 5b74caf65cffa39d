"""Celery's calling and map helpers run through the engine: ``sig()``, map, starmap, chunks."""

from __future__ import annotations

import pytest

from django_cloudtasks import chain, group
from django_cloudtasks.exceptions import NotRegistered
from django_cloudtasks.transports import get_transport
from tests.testapp.tasks import add, bound_called_directly, identity, tsum

pytestmark = pytest.mark.django_db(transaction=True)


def run(expr, **options):
    result = expr.apply_async(**options)
    transport = get_transport()
    if transport.name == "memory":
        transport.drain()
    return result


def test_calling_a_signature_runs_the_function_now_in_this_process(memory, executions):
    assert add.s(2, 2)() == 4
    assert add.s(2)(5) == 7
    assert executions() == {"add": 2}
    assert memory.sent == []


def test_calling_a_bound_task_signature_gives_a_context_called_directly():
    assert bound_called_directly.s()() is True


def test_calling_a_signature_of_an_unknown_task_raises_not_registered():
    from canvas import Signature

    with pytest.raises(NotRegistered):
        Signature("no.such.task")()


def test_chunks_give_a_list_of_lists(transport):
    result = run(add.chunks(zip(range(10), range(10), strict=True), 3))
    assert result.get(timeout=5) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]


def test_chunks_delay_gives_a_list_of_lists(eager):
    assert add.chunks(zip(range(10), range(10), strict=True), 3).delay().get(timeout=5) == [
        [0, 2, 4],
        [6, 8, 10],
        [12, 14, 16],
        [18],
    ]


def test_map_and_starmap_run_one_node_each(transport, executions):
    assert run(identity.map([1, 2, 3])).get(timeout=5) == [1, 2, 3]
    assert run(add.starmap([(1, 1), (2, 2)])).get(timeout=5) == [2, 4]
    assert executions() == {"identity": 3, "add": 2}


def test_a_map_of_a_partial_signature_appends_each_item_first(transport):
    from canvas import xmap

    assert run(xmap(add.s(10), [1, 2])).get(timeout=5) == [11, 12]


def test_a_map_feeds_the_next_task_of_a_chain(transport):
    assert run(chain(add.starmap([(1, 1), (2, 2)]), tsum.s())).get(timeout=5) == 6


def test_nested_groups_unroll_into_a_flat_list(transport):
    expr = group(identity.si(1), group(identity.si(2), group(identity.si(3))))
    assert run(expr).get(timeout=5) == [1, 2, 3]


def test_a_group_of_one_between_chain_members_runs_as_its_task(transport):
    assert run(add.s(2, 2) | group(add.s(1)) | add.s(1)).get(timeout=5) == 6


def test_an_empty_group_between_chain_members_is_skipped(transport):
    assert run(add.s(1, 1) | group() | add.s(1)).get(timeout=5) == 3
