"""Random canvas expressions compile to graphs that compute what direct evaluation does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from canvas import Expression, Signature, chain, chord, compile, group
from tests.canvas.interpreter import evaluate, run_graph

TASKS = {
    "inc": lambda x=0: [x, 1] if isinstance(x, list) else x + 1,
    "double": lambda x=0: [x, 2] if isinstance(x, list) else x * 2,
    "const": lambda c, *rest: c,
    "pack": lambda *xs: list(xs),
}

leaves = st.one_of(
    st.builds(lambda: Signature("inc")),
    st.builds(lambda: Signature("double")),
    st.builds(lambda c: Signature("const", (c,)), st.integers(-5, 5)),
    st.builds(lambda c: Signature("const", (c,), immutable=True), st.integers(-5, 5)),
    st.builds(lambda: Signature("pack")),
)


def _extend(children: st.SearchStrategy[Expression]) -> st.SearchStrategy[Expression]:
    members = st.lists(children, min_size=1, max_size=4)
    return st.one_of(
        members.map(lambda m: chain(*m)),
        st.lists(children, min_size=0, max_size=4).map(lambda m: group(m)),
        st.tuples(st.lists(children, max_size=4), children).map(lambda hb: chord(*hb)),
        st.tuples(children, children).map(lambda ab: ab[0] | ab[1]),
    )


expressions = st.recursive(leaves, _extend, max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(expressions)
def test_compiled_graph_evaluates_like_the_expression(expr):
    graph = compile(expr)
    assert run_graph(graph, TASKS) == evaluate(expr, TASKS)


@settings(max_examples=100, deadline=None)
@given(expressions)
def test_expressions_and_graphs_survive_serialisation(expr):
    assert Expression.from_dict(expr.to_dict()) == expr
    graph = compile(expr)
    assert type(graph).from_json(graph.to_json()) == graph
    assert all(p < node.id for node in graph for p in node.parents)
