"""Where each node of a graph sits in its canvas: Celery's request fields for ``self.request``."""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Sequence
from typing import Any

from canvas import Graph, InputRule

_NONE = -1


class Lineage:
    """Per node, Celery's ``parent_id``, ``group``, ``group_index`` and ``chord``.

    ``parent_id`` is the task whose result the node receives (through a group join,
    the join's last member, as a chord body is started by one of its header's tasks);
    ``group``/``group_index`` the group join a node feeds and its position there;
    ``chord`` the task that join feeds, when it is one (the chord body).

    Worked out for the whole graph at once, but kept as a few integers per node: the
    fields of one node are made when :meth:`of` is asked for them.
    """

    def __init__(self, graph: Graph, children: Sequence[Sequence[int]], ids: Sequence[uuid.UUID]):
        nodes = graph.nodes
        blank = array("q", [_NONE]) * len(nodes)
        self._ids = ids
        self._parent, self._group, self._chord = blank, array("q", blank), array("q", blank)
        self._position = array("q", blank)
        self._texts: dict[int, str] = {}

        def task_behind(index: int) -> int:
            while nodes[index].is_barrier:
                if not nodes[index].parents:
                    return _NONE
                index = nodes[index].parents[-1]
            return index

        for gnode in nodes:
            if gnode.is_barrier:
                if gnode.input == InputRule.LIST:
                    body = next((c for c in children[gnode.id] if not nodes[c].is_barrier), _NONE)
                    for position, member in enumerate(gnode.parents):
                        if not nodes[member].is_barrier:
                            self._group[member] = gnode.id
                            self._position[member] = position
                            if body != _NONE:
                                self._chord[member] = body
            elif gnode.parents:
                self._parent[gnode.id] = task_behind(gnode.parents[-1])

    def of(self, index: int) -> dict[str, Any]:
        """The lineage fields of node ``index`` (``{}`` for a node outside any group
        with no parent task)."""
        fields: dict[str, Any] = {}
        parent, group = self._parent[index], self._group[index]
        # In the order the fields were first written in (a join comes after its members).
        if parent != _NONE and not _NONE < group < index:
            fields["parent_id"] = self._text(parent)
        if group != _NONE:
            fields["group"] = self._text(group)
            fields["group_index"] = self._position[index]
            if self._chord[index] != _NONE:
                fields["chord"] = self._text(self._chord[index])
        if parent != _NONE and _NONE < group < index:
            fields["parent_id"] = self._text(parent)
        return fields

    def _text(self, index: int) -> str:
        """The id of node ``index`` as text, made once for a join, body or parent that
        many nodes name (a few such nodes are asked for, whatever the graph's size)."""
        text = self._texts.get(index)
        if text is None:
            if len(self._texts) > 1024:
                self._texts.clear()
            text = self._texts[index] = str(self._ids[index])
        return text
