from __future__ import annotations

import json

import pytest

import canvas
import canvas.graph
from canvas import (
    CanvasError,
    Graph,
    GraphFormatError,
    GraphNode,
    chain,
    chord,
    compile,
    group,
)
from tests.canvas.interpreter import evaluate, run_graph


def run(expr, functions):
    graph = compile(expr)
    assert Graph.from_json(graph.to_json()) == graph
    result = run_graph(graph, functions)
    assert result == evaluate(expr, functions)
    return result


def test_a_chain_passes_each_result_on(add, functions):
    assert run(add.s(4, 4) | add.s(8) | add.s(16), functions) == 32


def test_a_group_after_a_task_gets_its_result_in_every_member(add, functions):
    expr = add.s(5, 6) | group(add.s(1) | add.s(2), add.s(3))
    assert run(expr, functions) == [14, 14]


def test_a_chord_body_receives_the_header_results_in_member_order(identity, functions):
    expr = chord([identity.si(i) for i in range(10)], identity.s())
    assert run(expr, functions) == list(range(10))


def test_a_nested_group_contributes_its_list_as_one_element(identity, functions):
    expr = group(
        identity.si(1),
        identity.si(2),
        chain(identity.si(5), group(identity.si(3), identity.si(4))),
    )
    assert run(expr, functions) == [1, 2, [3, 4]]


def test_group_into_group_into_task(add, tsum, functions):
    expr = add.si(1, 0) | group(add.s(1), add.s(1)) | group(tsum.s(), tsum.s()) | tsum.s()
    assert run(expr, functions) == 8


def test_a_one_member_group_gives_a_one_element_list(identity, functions):
    assert run(group(identity.si(7)), functions) == [7]


def test_an_empty_group_gives_an_empty_list(functions):
    assert run(group(), functions) == []


def test_an_empty_group_in_the_middle_of_a_chain_is_skipped(add, functions):
    # Celery's chain skips it: add(1, 1) feeds add(1) directly.
    assert run(add.s(1, 1) | group() | add.s(1), functions) == 3
    assert run(chain(add.s(1, 1), group(), add.s(1)), functions) == 3


def test_a_group_of_one_in_a_chain_runs_as_its_single_task(add, functions):
    assert run(chain(add.s(2, 2), group(add.s(1)), add.s(1)), functions) == 6
    assert run(add.s(2, 2) | group(add.s(1)) | add.s(1), functions) == 6
    # At the end of a chain too: the result is not wrapped in a list.
    assert run(add.s(2, 2) | group(add.s(1)), functions) == 5


def test_a_group_of_one_on_its_own_or_as_a_chord_header_still_gives_a_list(add, tsum, functions):
    assert run(group(add.si(1, 1)), functions) == [2]
    assert run(group(add.si(1, 1)) | tsum.s(), functions) == 2
    assert run(chord([add.si(1, 1)], tsum.s()), functions) == 2


def test_nested_groups_unroll_into_one_flat_list(identity, functions):
    expr = group(identity.si("a"), group(identity.si("b"), group(identity.si("c"))))
    assert run(expr, functions) == ["a", "b", "c"]


def test_a_chord_header_with_a_nested_group_passes_the_flat_list(identity, functions):
    expr = chord([identity.si(1), group(identity.si(2), identity.si(3))], identity.s())
    assert run(expr, functions) == [1, 2, 3]


def test_a_nested_group_keeps_its_options_for_its_own_members(add):
    inner = group(add.si(1, 1), add.si(2, 2)).set(queue="inner")
    graph = compile(group(add.si(0, 0), inner).set(countdown=5))
    tasks = [node for node in graph if not node.is_barrier]
    assert [node.options.get("queue") for node in tasks] == [None, "inner", "inner"]
    assert {node.options["countdown"] for node in tasks} == {5}
    assert sum(node.is_barrier for node in graph) == 1


def test_a_chain_of_only_empty_groups_gives_an_empty_list(functions):
    assert run(chain(group(), group()), functions) == []


def test_a_chord_without_a_body_cannot_be_compiled(add):
    with pytest.raises(CanvasError, match=r"chord\(header\)\(body\)"):
        compile(chord([add.si(1, 1)]))


def test_a_chord_with_an_empty_header_gives_the_body_an_empty_list(tsum, functions):
    assert run(chord([], tsum.s()), functions) == 0


def test_an_immutable_signature_ignores_its_parent_result(add, functions):
    assert run(add.s(1, 1) | add.si(10, 10), functions) == 20


def test_chord_of_chords_and_group_inside_a_chord_header(add, tsum, identity, functions):
    inner = chord([add.si(1, 1), add.si(2, 2)], tsum.s())
    expr = chord([inner, inner, group(identity.si(1), identity.si(2))], identity.s())
    # The group inside the header unrolls into it, as Celery's does.
    assert run(expr, functions) == [6, 6, 1, 2]


def test_barrier_nodes_keep_group_after_group_at_n_plus_m_edges(identity, tsum):
    n, m = 30, 40
    expr = group(identity.si(i) for i in range(n)) | group(tsum.s() for _ in range(m))
    graph = compile(expr)
    assert len(graph.edges()) == n + m + m
    barriers = [node for node in graph if node.is_barrier]
    assert [len(b.parents) for b in barriers] == [n, m]


def test_nodes_carry_their_input_rule(add, tsum):
    graph = compile(group(add.si(1, 1), add.si(2, 2)) | tsum.s() | add.s(1))
    by_rule = [(node.kind, node.input) for node in graph]
    assert by_rule == [
        ("task", "none"),
        ("task", "none"),
        ("barrier", "list"),
        ("task", "prepend"),
        ("task", "prepend"),
    ]
    assert graph.roots() == [0, 1]
    assert graph.children()[2] == [3]
    assert graph.output == 4


def test_options_on_a_composition_reach_its_tasks_under_their_own(add, identity):
    expr = group(add.s(1, 1).set(queue="fast"), add.s(2, 2)).set(queue="slow", countdown=5)
    expr = expr.on_error(identity.si("group failed"))
    nodes = [n for n in compile(expr) if not n.is_barrier]
    assert [n.options["queue"] for n in nodes] == ["fast", "slow"]
    assert all(n.options["countdown"] == 5 for n in nodes)
    assert all(len(n.options["link_error"]) == 1 for n in nodes)


def test_the_graph_json_carries_a_version_and_reads_back_with_defaults():
    graph = Graph.from_json(
        json.dumps({"nodes": [{"id": 0, "task": "t"}, {"id": 1, "task": "u", "parents": [0]}]})
    )
    assert graph.version == 1
    assert graph.output == 1
    assert graph.nodes[1].input == "none" and graph.nodes[1].args == ()
    newer = {"version": 2, "output": 0, "nodes": [{"id": 0, "task": "t", "colour": "red"}]}
    assert Graph.from_dict(newer).nodes[0].task_name == "t"


def test_a_compiled_graph_is_made_of_graph_nodes_still_importable_as_node(add):
    graph = compile(chain(add.s(1, 1), add.s(2)))
    assert all(isinstance(node, GraphNode) for node in graph.nodes)
    assert canvas.Node is canvas.graph.Node is GraphNode


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        '{"nodes": [{"kind": "task"}]}',
        '{"nodes": [{"id": 0, "kind": "task"}]}',
        '{"nodes": [{"id": 0, "task": "t", "parents": [0]}]}',
        '{"nodes": [{"id": 0, "task": "t", "input": "sideways"}]}',
        '{"nodes": [{"id": 0, "task": "t"}], "output": 3}',
    ],
)
def test_malformed_graphs_raise_a_graph_format_error(payload):
    with pytest.raises(GraphFormatError):
        Graph.from_json(payload)


def test_compile_refuses_what_is_not_an_expression():
    with pytest.raises(CanvasError):
        compile("add")  # type: ignore[arg-type]


def test_a_group_of_ten_thousand_compiles_to_one_node_per_member_and_a_barrier(identity):
    graph = compile(group(identity.si(i) for i in range(10_000)) | identity.s())
    assert len(graph) == 10_002
    assert len(graph.edges()) == 10_001


def test_unrolled_groups_are_stored_as_the_group_that_runs(add):
    nested = compile(group(add.si(1, 1), group(add.si(2, 2), add.si(3, 3))))
    assert [node.path for node in nested if not node.is_barrier] == ["0", "1", "2"]
    lone = compile(add.s(1, 1) | group(add.s(1)) | add.s(2))
    assert [node.path for node in lone] == ["0", "1", "2"]


def test_a_chords_error_callbacks_go_to_its_body_only(add, tsum, identity):
    expr = chord([add.s(1, 1).on_error(identity.si("own")), add.s(2, 2)], tsum.s())
    expr = expr.on_error(identity.si("chord failed"))
    nodes = {n.path: n for n in compile(expr) if not n.is_barrier}
    assert [len(nodes[p].options.get("link_error", ())) for p in sorted(nodes)] == [1, 1, 0]
    body = next(n for n in nodes.values() if n.task_name == "tsum")
    assert body.options["link_error"][0]["args"] == ["chord failed"]
