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
            return self.emit_chain(expr, incoming, options, path)
        if isinstance(expr, group):
            options = bounded(expr, options, path)
            outputs = tuple(
                self.emit(member, incoming, member_defaults, member_path)
                for member, member_defaults, member_path in _flat_members(expr, options, path)
            )
            if outputs:
                return self.add(kind=BARRIER, parents=outputs, input=InputRule.LIST, path=path)
            parents = () if incoming is None else (incoming,)
            return self.add(kind=BARRIER, parents=parents, input=InputRule.NONE, path=path)
        if isinstance(expr, chord):
            if expr.body is None:
                raise CanvasError(
                    f"{expr.describe()} cannot run: give it a body, as chord(header, body) "
                    "or chord(header)(body)"
                )
            # As in Celery, a chord's error callbacks (its own and those it inherits)
            # belong to its body, which fails once whichever members fail.
            header_options = _without_errbacks(options)
            header = self.emit(expr.header, incoming, header_options, _join(path, "header"))
            return self.emit(expr.body, header, options, _join(path, "body"))
        raise CanvasError(f"cannot compile {expr!r}: not a canvas expression")

    def emit_chain(
        self, expr: chain, incoming: int | None, options: Mapping[str, Any], path: str
    ) -> int:
        """Add a chain's members one after the other, unrolling groups as Celery does.

        Between other members, a group of one member runs as that member (its result
        is not wrapped in a list) and an empty group is skipped. A group followed by
        more members does not inherit the chain's error callbacks, as a chord's header
        does not: they run once, from the steps after it.
        """
        current = incoming
        for i, member in enumerate(expr.tasks):
            member_defaults, member_path = options, _join(path, i)
            if isinstance(member, group) and len(expr.tasks) > 1:
                inherited = merge_options(options, member.options) if member.options else options
                flat = _flat_members(member, bounded(member, inherited, member_path), member_path)
                if not flat:
                    continue
                if len(flat) == 1:
                    member, member_defaults, _ = flat[0]
                elif i < len(expr.tasks) - 1:
                    # A group followed by more is a chord's header: as a chord's, the
                    # chain's error callbacks belong to what follows (they run once).
                    member_defaults = _without_errbacks(options)
            current = self.emit(member, current, member_defaults, member_path)
        if current is None:  # a chain of empty groups, fed by nothing
            return self.add(kind=BARRIER, input=InputRule.NONE, path=path)
        return current


def _flat_members(
    expr: group, options: Mapping[str, Any], path: str
) -> list[tuple[Expression, Mapping[str, Any], str]]:
    """The members of ``expr`` with nested groups unrolled into it, as Celery does.

    ``options`` are the group's own merged over what it inherits. Each member comes
    with the options it inherits and its path: its position among the unrolled
    members, so the stored paths describe the group that runs.
    """
    members: list[tuple[Expression, Mapping[str, Any]]] = []
    stack: list[tuple[Expression, Mapping[str, Any]]] = [
        (member, options) for member in reversed(expr.tasks)
    ]
    while stack:
        member, inherited = stack.pop()
        if isinstance(member, group):
            inner = merge_options(inherited, member.options) if member.options else inherited
            inner = bounded(member, inner, _join(path, f"g{len(members)}"))
            stack.extend((m, inner) for m in reversed(member.tasks))
        else:
            members.append((member, inherited))
    return [(member, inherited, _join(path, i)) for i, (member, inherited) in enumerate(members)]


def _without_errbacks(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return {k: v for k, v in options.items() if k != "link_error"}


#: A concurrency key starting with this is local to one run (the engine prefixes it
#: with the workflow's id): a bounded group's members share such a key.
RUN_KEY_PREFIX = "@"


def bounded(expr: group, options: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """The options a group's members inherit, given the group's merged ``options``.

    A group's own ``max_concurrency`` without a ``concurrency_key`` of its own bounds
    its members: they share a key local to this run and this group, so at most that
    many of them are in flight at once.
    """
    own = expr.options
    if own.get("max_concurrency") is None or own.get("concurrency_key") is not None:
        return options
    return {**options, "concurrency_key": f"{RUN_KEY_PREFIX}group:{path or 'root'}"}


def _join(path: str, part: int | str) -> str:
    return f"{path}.{part}" if path else str(part)


def compile(expression: Expression) -> Graph:
    """Compile ``expression`` to a graph; linear in the number of tasks.

    Options set on a chain, group or chord apply to each task inside it, under the
    task's own options; their error callbacks add to the task's. As Celery's
    ``group.apply_async`` does, a group whose only member ends in a group (a chain
    ending in a group, a chord with a group body) gives that inner group's results.

    Raises:
        CanvasError: when ``expression`` is not a canvas expression.
    """
    if not isinstance(expression, Expression):
        raise CanvasError(f"cannot compile {expression!r}: not a canvas expression")
    builder = _Builder()
    if isinstance(expression, group):
        inherited = bounded(expression, merge_options({}, expression.options), "")
        flat = _flat_members(expression, inherited, "")
        if len(flat) == 1:
            # Celery's special case of group(A.s() | group(B.s(), C.s())): a group whose
            # one member ends in a group gives that group's results, not a list of them.
            member, member_defaults, member_path = flat[0]
            output = builder.emit(member, None, member_defaults, member_path)
            if builder.nodes[output].kind != BARRIER:
                output = builder.add(kind=BARRIER, parents=(output,), input=InputRule.LIST, path="")
            return Graph(nodes=tuple(builder.nodes), output=output)
    output = builder.emit(expression, None, {}, "")
    return Graph(nodes=tuple(builder.nodes), output=output)
