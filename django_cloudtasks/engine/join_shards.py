"""Shards of a large group join's counter, so that no row takes every member's update.

A group join of more than :data:`JOIN_SHARD_SIZE` members is given shard nodes:
barrier nodes of their own, each joining at most :data:`JOIN_SHARD_SIZE` of its
members. A member counts itself on its shard; the member that empties a shard closes
it, which counts the shard on the join, and the member that closes the last shard
closes the join. So the join's row is updated once per shard instead of once per
member, and the member that closes everything costs one statement more than for an
unsharded join, whatever the size. Members are dealt to the shards in turn, so that
members finishing at about the same time update different rows.

The join still lists every member as a parent (its result is their results, in
member order, read in place, and failure, revocation and the results see the group
as written); its counter counts its shards, whose indices its ``options`` keep under
:data:`SHARDS`. Shards are appended after the canvas's own nodes; they receive and
return nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from canvas import Graph, InputRule
from django_cloudtasks.constants import NodeKind

#: The most members one row of a join counts; a larger join is sharded.
JOIN_SHARD_SIZE = 250

#: The option of a sharded join listing its shards' indices.
SHARDS = "join_shards"
#: The option of a shard naming the join it counts for.
SHARD_OF = "join_shard_of"


class JoinShards:
    """The shards of every join of more than ``size`` members of ``graph``.

    ``graph``'s node ``i`` is the row of index ``base + i``; shards take the indices
    after the graph's last node. The rows of the graph are made with :meth:`children`
    and :meth:`counted` so that members point at their shard and a join counts its
    shards; :meth:`rows` then makes the shards' own rows.
    """

    def __init__(self, graph: Graph, base: int = 0, size: int | None = None) -> None:
        size = JOIN_SHARD_SIZE if size is None else size
        self.base = base
        #: (member, join) graph ids -> the row index of the member's shard of that join.
        self._shard_of: dict[tuple[int, int], int] = {}
        #: join graph id -> the row indices of its shards.
        self.of_join: dict[int, list[int]] = {}
        #: (row index, join graph id, member graph ids) of each shard, in index order.
        self._shards: list[tuple[int, int, list[int]]] = []
        next_index = base + len(graph)
        for gnode in graph:
            if not (gnode.is_barrier and len(gnode.parents) > size):
                continue
            count = -(-len(gnode.parents) // size)
            indices = self.of_join[gnode.id] = []
            for position in range(count):
                # Round-robin: members run about in order, so neighbours count on
                # different rows instead of all waiting for the same one.
                members = list(gnode.parents[position::count])
                self._shards.append((next_index, gnode.id, members))
                indices.append(next_index)
                for member in members:
                    self._shard_of[(member, gnode.id)] = next_index
                next_index += 1

    def __len__(self) -> int:
        return len(self._shards)

    def children(self, node: int, children: Sequence[int]) -> list[int]:
        """The row indices graph node ``node``'s row has as children (``children`` are
        graph ids): a sharded join's member has its shard instead of the join."""
        base, shard_of = self.base, self._shard_of
        if not shard_of:
            return [base + c for c in children]
        return [shard_of.get((node, c), base + c) for c in children]

    def counted(self, node: int, options: dict[str, Any], parents: int) -> int:
        """How many nodes graph node ``node``'s counter waits on; a sharded join's
        ``options`` are given the indices of its shards."""
        shards = self.of_join.get(node)
        if shards is None:
            return parents
        options[SHARDS] = list(shards)
        return len(shards)

    def rows(
        self, workflow_id: uuid.UUID, joins: Mapping[int, tuple[str, str]], now: datetime
    ) -> Iterator[dict[str, Any]]:
        """The field values of each shard's row; ``joins`` gives each sharded join's
        ``(path, queue)`` by graph id."""
        base = self.base
        for index, join, members in self._shards:
            path, queue = joins[join]
            yield {
                "id": uuid.uuid4(),
                "workflow_id": workflow_id,
                "index": index,
                "kind": NodeKind.BARRIER,
                "path": path,
                "input_rule": InputRule.NONE,
                "parents": [base + m for m in members],
                "children": [base + join],
                "pending_parents": len(members),
                "queue": queue,
                "options": {SHARD_OF: base + join},
                "created_at": now,
            }


def waited_on(
    index: int, parents: Sequence[int], options: Mapping[str, Any] | None
) -> Sequence[int]:
    """The nodes node ``index``'s counter counts: its shards for a sharded join."""
    if options and SHARDS in options:
        return list(options[SHARDS])
    return parents
