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
    """Evaluate ``expr`` directly by recursion over its structure.

    Applied as a whole, a group whose only member ends in a group gives that member's
    results (Celery's ``group.apply_async`` special case).
    """
    if incoming is NOTHING and isinstance(expr, group):
        members = flatten(expr)
        if len(members) == 1 and ends_in_group(members[0]):
            return _evaluate(members[0], tasks, incoming)
    return _evaluate(expr, tasks, incoming)


def ends_in_group(expr: Expression) -> bool:
    """True when ``expr``'s result is a group's: its last step is a group of several."""
    if isinstance(expr, group):
        return True
    if isinstance(expr, chord):
        return ends_in_group(expr.body)
    if isinstance(expr, chain):
        steps = [m for m in expr.tasks if not (isinstance(m, group) and not flatten(m))]
        if len(expr.tasks) == 1:
            return ends_in_group(expr.tasks[0])
        if not steps:
            return True  # only empty groups: the chain's result is []
        last = steps[-1]
        if isinstance(last, group) and len(flatten(last)) == 1:
            return ends_in_group(flatten(last)[0])
        return ends_in_group(last)
    return False


def _evaluate(expr: Expression, tasks: Tasks, incoming: Any = NOTHING) -> Any:
    if isinstance(expr, Signature):
        args = list(expr.args)
        if incoming is not NOTHING and not expr.immutable:
            args.insert(0, incoming)
        return tasks[expr.task_name](*args, **expr.kwargs)
    if isinstance(expr, chain):
        value = incoming
        for member in expr.tasks:
            if isinstance(member, group) and len(expr.tasks) > 1:
                # Celery unrolls a group of one and skips an empty group in a chain.
                members = flatten(member)
                if not members:
                    continue
                if len(members) == 1:
                    member = members[0]
            value = _evaluate(member, tasks, value)
        return [] if value is NOTHING else value
    if isinstance(expr, group):
        return [_evaluate(member, tasks, incoming) for member in flatten(expr)]
    if isinstance(expr, chord):
        return _evaluate(expr.body, tasks, _evaluate(expr.header, tasks, incoming))
    raise TypeError(expr)


def flatten(expr: group) -> list[Expression]:
    """A group's members with directly nested groups unrolled, as Celery's group does."""
    members: list[Expression] = []
    for member in expr.tasks:
        members.extend(flatten(member) if isinstance(member, group) else [member])
    return members
