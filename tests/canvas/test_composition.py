from __future__ import annotations

import pytest

from canvas import Expression, Signature, chain, chord, group


def test_pipe_of_signatures_is_a_flat_chain(add):
    expr = add.s(1, 1) | add.s(2) | add.s(3)
    assert isinstance(expr, chain)
    assert expr.tasks == (add.s(1, 1), add.s(2), add.s(3))


def test_chains_flatten_when_composed_or_nested(add):
    left = add.s(1, 1) | add.s(2)
    right = add.s(3) | add.s(4)
    assert (left | right).tasks == (add.s(1, 1), add.s(2), add.s(3), add.s(4))
    assert chain(left, right) == left | right
    assert chain([add.s(1, 1), add.s(2)]) == add.s(1, 1) | add.s(2)


def test_a_chain_with_options_of_its_own_stays_a_unit(add):
    inner = (add.s(1, 1) | add.s(2)).set(queue="q")
    outer = chain(add.s(0, 0), inner)
    assert outer.tasks == (add.s(0, 0), inner)


def test_group_piped_into_anything_becomes_a_chord(add, tsum):
    header = group(add.s(1, 1), add.s(2, 2))
    expr = header | tsum.s()
    assert isinstance(expr, chord)
    assert expr.header == header and expr.body == tsum.s()


def test_group_piped_into_a_group_is_a_chord_whose_body_is_the_group(add, tsum):
    expr = group(add.s(1, 1)) | group(tsum.s(), tsum.s())
    assert isinstance(expr, chord)
    assert expr.body == group(tsum.s(), tsum.s())


def test_chord_piped_into_more_extends_its_body(add, tsum, identity):
    expr = chord([add.s(1, 1)], tsum.s()) | identity.s()
    assert isinstance(expr, chord)
    assert expr.body == tsum.s() | identity.s()


def test_a_chain_ending_in_a_group_then_a_task_feeds_the_group_results_to_the_task(
    add, tsum, functions
):
    from canvas import compile
    from tests.canvas.interpreter import run_graph

    expr = (add.s(1, 1) | group(add.s(1), add.s(2))) | tsum.s()
    assert isinstance(expr, chain)
    assert run_graph(compile(expr), functions) == (2 + 1) + (2 + 2)


def test_groups_accept_members_as_arguments_a_list_or_a_generator(add):
    assert group(add.s(1, 1), add.s(2, 2)) == group([add.s(1, 1), add.s(2, 2)])
    assert group(add.s(i, i) for i in range(2)) == group(add.s(0, 0), add.s(1, 1))
    assert len(group()) == 0


def test_composition_refuses_what_is_not_an_expression(add):
    with pytest.raises(TypeError, match="group\\(\\) takes"):
        group(add.s(1, 1), "add")
    with pytest.raises(TypeError, match="chain\\(\\) takes"):
        chain(42)
    with pytest.raises(TypeError):
        add.s(1, 1) | 3  # type: ignore[operator]
    with pytest.raises(ValueError, match="at least one"):
        chain()
    with pytest.raises(TypeError, match="body of a chord"):
        chord([add.s(1, 1)], "tsum")  # type: ignore[arg-type]


def test_delay_style_partial_application_reaches_the_first_tasks(add):
    assert (add.s(1) | add.s(2)).partial((5,)).tasks[0] == add.s(5, 1)
    assert group(add.s(1), add.s(2)).partial((5,)) == group(add.s(5, 1), add.s(5, 2))
    assert chord([add.s(1)], add.s(2)).partial((5,)).header == group(add.s(5, 1))


def test_nested_expressions_round_trip_through_dicts(add, tsum, identity):
    expr = chain(
        add.s(1, 1),
        chord([group(add.s(1), identity.s()), add.s(2) | add.s(3)], tsum.s()),
        group(identity.si(1)).set(queue="q"),
    ).on_error(identity.si("failed"))
    assert Expression.from_dict(expr.to_dict()) == expr
    assert hash(Expression.from_dict(expr.to_dict())) == hash(expr)


def test_set_on_compositions_returns_new_values(add):
    g = group(add.s(1, 1))
    assert g.set(queue="q").options == {"queue": "q"}
    assert g.options == {}


def test_signature_is_not_equal_to_a_chain_of_it(add):
    assert add.s(1, 1) != chain(add.s(1, 1))
    assert isinstance(chain(add.s(1, 1)), chain)
    assert Signature("add") != group(Signature("add"))
