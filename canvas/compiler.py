"""``compile``: turn an expression into a :class:`~canvas.graph.Graph`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canvas.composition import chain, chord, group
from canvas.errors import CanvasError
from canvas.expression import Expression
from canvas.graph import BARRIER, TASK, Graph, GraphNode, InputRule
from canvas.options import merge_options
from canvas.signature import Signature


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[GraphNode] = []

    def add(self, **fields: Any) -> int:
        node_id = len(self.nodes)
        self.nodes.append(GraphNode(id=node_id, **fields))
        return node_id

    def emit(
        self, expr: Expression, incoming: int | None, defaults: Mapping[str, Any], path: str
    ) -> int:
        """Add the nodes of ``expr`` fed by ``incoming``; return its output node id."""
        options = merge_options(defaults, expr.options) if expr.options else defaults
        if isinstance(expr, Signature):
            feeds = incoming is not None and not expr.immutable
            return self.add(
                kind=TASK,
                task_name=expr.task_name,
                args=expr.args,
                kwargs=expr.kwargs,
                options=options,
                parents=() if incoming is None else (incoming,),
                input=InputRule.PREPEND if feeds else InputRule.NONE,
                path=path,
            )
        if isinstance(expr, chain):
            current = incoming
            for i, member in enumerate(expr.tasks):
                current = self.emit(member, current, options, _join(path, i))
            assert current is not None
            return current
        if isinstance(expr, group):
            outputs = tuple(
                self.emit(member, incoming, options, _join(path, i))
                for i, member in enumerate(expr.tasks)
            )
            if outputs:
                return self.add(kind=BARRIER, parents=outputs, input=InputRule.LIST, path=path)
            parents = () if incoming is None else (incoming,)
            return self.add(kind=BARRIER, parents=parents, input=InputRule.NONE, path=path)
        if isinstance(expr, chord):
            header = self.emit(expr.header, incoming, options, _join(path, "header"))
            return self.emit(expr.body, header, options, _join(path, "body"))
        raise CanvasError(f"cannot compile {expr!r}: not a canvas expression")


def _join(path: str, part: int | str) -> str:
    return f"{path}.{part}" if path else str(part)


def compile(expression: Expression) -> Graph:
    """Compile ``expression`` to a graph; linear in the number of tasks.

    Options set on a chain, group or chord apply to each task inside it, under the
    task's own options; their error callbacks add to the task's.

    Raises:
        CanvasError: when ``expression`` is not a canvas expression.
    """
    if not isinstance(expression, Expression):
        raise CanvasError(f"cannot compile {expression!r}: not a canvas expression")
    builder = _Builder()
    output = builder.emit(expression, None, {}, "")
    return Graph(nodes=tuple(builder.nodes), output=output)
