"""The compiled form of an expression: a plain DAG of nodes, versioned for storage.

Node ids are positions in ``Graph.nodes`` and every parent comes before its
children, so the node list is a topological order.

Input rules say what a node receives from its parents:

* ``"none"``: nothing (a root, or an immutable signature);
* ``"prepend"``: its single parent's result, as the first positional argument;
* ``"list"``: the results of all its parents, in order, as one list (group barriers).

A ``"barrier"`` node runs no task: it stands for the end of a group and its result is
the list of its parents' results (``[]`` for an empty group, whose input is
``"none"``). Barriers keep group-after-group at N+M edges instead of N*M.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from canvas.errors import GraphFormatError

GRAPH_VERSION = 1
TASK = "task"
BARRIER = "barrier"


class InputRule(StrEnum):
    """What a node receives from its parents (see the module docstring)."""

    NONE = "none"
    PREPEND = "prepend"
    LIST = "list"
    #: An error callback's: the failure's details, as keyword arguments. Such nodes
    #: are added when a node fails, never compiled.
    ERRBACK = "errback"


#: The input rules a compiled graph may hold.
INPUT_RULES = (InputRule.NONE, InputRule.PREPEND, InputRule.LIST)


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a compiled graph (see the module docstring for the fields)."""

    id: int
    kind: str = TASK
    task_name: str = ""
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    parents: tuple[int, ...] = ()
    input: str = InputRule.NONE
    path: str = ""

    @property
    def is_barrier(self) -> bool:
        """True for a group barrier, which runs no task."""
        return self.kind == BARRIER

    def to_dict(self) -> dict[str, Any]:
        """This node as JSON data; empty fields are left out."""
        data: dict[str, Any] = {"id": self.id, "kind": self.kind}
        if self.task_name:
            data["task"] = self.task_name
        if self.args:
            data["args"] = list(self.args)
        if self.kwargs:
            data["kwargs"] = dict(self.kwargs)
        if self.options:
            data["options"] = dict(self.options)
        if self.parents:
            data["parents"] = list(self.parents)
        if self.input != InputRule.NONE:
            data["input"] = self.input
        if self.path:
            data["path"] = self.path
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        """Decode a node, with defaults for missing fields and unknown fields ignored."""
        try:
            node = cls(
                id=int(data["id"]),
                kind=str(data.get("kind", TASK)),
                task_name=str(data.get("task", "")),
                args=tuple(data.get("args", ())),
                kwargs=dict(data.get("kwargs") or {}),
                options=dict(data.get("options") or {}),
                parents=tuple(int(p) for p in data.get("parents", ())),
                input=str(data.get("input", InputRule.NONE)),
                path=str(data.get("path", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphFormatError(f"bad graph node {data!r}: {exc}") from None
        if node.kind not in (TASK, BARRIER) or node.input not in INPUT_RULES:
            raise GraphFormatError(f"bad graph node {data!r}: unknown kind or input rule")
        if node.kind == TASK and not node.task_name:
            raise GraphFormatError(f"bad graph node {data!r}: a task node needs a task name")
        return node


@dataclass(frozen=True, slots=True)
class Graph:
    """A compiled expression: ``nodes`` in topological order and the ``output`` node."""

    nodes: tuple[Node, ...]
    output: int
    version: int = GRAPH_VERSION

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def edges(self) -> list[tuple[int, int]]:
        """Every ``(parent, child)`` pair."""
        return [(p, node.id) for node in self.nodes for p in node.parents]

    def children(self) -> list[list[int]]:
        """For each node id, the ids of its children in ascending order."""
        result: list[list[int]] = [[] for _ in self.nodes]
        for node in self.nodes:
            for p in node.parents:
                result[p].append(node.id)
        return result

    def roots(self) -> list[int]:
        """Ids of the nodes with no parents: the ones ready at the start."""
        return [node.id for node in self.nodes if not node.parents]

    def to_dict(self) -> dict[str, Any]:
        """The graph as JSON data, carrying its format version."""
        return {
            "version": self.version,
            "output": self.output,
            "nodes": [node.to_dict() for node in self.nodes],
        }

    def to_json(self) -> str:
        """The graph as a compact JSON string."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Graph:
        """Decode a graph written by this or another version of the library.

        Raises:
            GraphFormatError: when the data is not a well-formed graph.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), list):
            raise GraphFormatError("a graph is a JSON object with a list of nodes")
        nodes = tuple(Node.from_dict(n) for n in data["nodes"])
        for position, node in enumerate(nodes):
            if node.id != position or any(not 0 <= p < position for p in node.parents):
                raise GraphFormatError(f"graph node {position} is out of topological order")
        output = int(data.get("output", len(nodes) - 1))
        if not 0 <= output < max(len(nodes), 1):
            raise GraphFormatError(f"graph output {output} is not a node")
        return cls(nodes=nodes, output=output, version=int(data.get("version", GRAPH_VERSION)))

    @classmethod
    def from_json(cls, text: str | bytes) -> Graph:
        """Decode :meth:`to_json` output (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise GraphFormatError(f"a graph must be JSON: {exc}") from None
        return cls.from_dict(data)
