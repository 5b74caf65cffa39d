"""Two small evaluators the canvas tests compare: one over compiled graphs, one direct."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from canvas import Expression, Graph, Signature, chain, chord, group

Tasks = dict[str, Callable[..., Any]]
NOTHING = object()


def run_graph(graph: Graph, tasks: Tasks) -> Any:
    """Execute ``graph`` in node order, the way the engine will, and return its output."""
    results: list[Any] = []
    for node in graph:
        inputs = [results[p] for p in node.parents]
        if node.is_barrier:
            results.append(inputs if node.input == "list" else [])
            continue
        args = list(node.args)
        if node.input == "prepend":
            args.insert(0, inputs[0])
        results.append(tasks[node.task_name](*args, **node.kwargs))
    return results[graph.output]


def evaluate(expr: Expression, tasks: Tasks, incoming: Any = NOTHING) -> Any:
    """Evaluate ``expr`` directly by recursion over its structure."""
    if isinstance(expr, Signature):
        args = list(expr.args)
        if incoming is not NOTHING and not expr.immutable:
            args.insert(0, incoming)
        return tasks[expr.task_name](*args, **expr.kwargs)
    if isinstance(expr, chain):
        value = incoming
        for member in expr.tasks:
            value = evaluate(member, tasks, value)
        return value
    if isinstance(expr, group):
        return [evaluate(member, tasks, incoming) for member in expr.tasks]
    if isinstance(expr, chord):
        return evaluate(expr.body, tasks, evaluate(expr.header, tasks, incoming))
    raise TypeError(expr)
