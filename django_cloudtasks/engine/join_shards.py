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
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from canvas import InputRule
from django_cloudtasks.constants import NodeKind
from django_cloudtasks.models import Node

#: The most members one row of a join counts; a larger join is sharded.
JOIN_SHARD_SIZE = 1_000

#: The option of a sharded join listing its shards' indices.
SHARDS = "join_shards"
#: The option of a shard naming the join it counts for.
SHARD_OF = "join_shard_of"


def shard_joins(rows: list[Node], now: datetime, size: int | None = None) -> None:
    """Append shard rows to ``rows`` for every join of more than ``size`` members.

    ``rows`` are the unsaved rows of one canvas, with consecutive indices; each
    member of a sharded join has the join replaced by its shard among its children.
    """
    size = JOIN_SHARD_SIZE if size is None else size
    if not rows:
        return
    by_index = {row.index: row for row in rows}
    next_index = rows[-1].index + 1
    for join in [r for r in rows if r.kind == NodeKind.BARRIER and len(r.parents) > size]:
        shards = []
        count = -(-len(join.parents) // size)
        for position in range(count):
            # Round-robin: members run about in order, so neighbours count on
            # different rows instead of all waiting for the same one.
            members = join.parents[position::count]
            shard = Node(
                id=uuid.uuid4(),
                workflow_id=join.workflow_id,
                index=next_index,
                kind=NodeKind.BARRIER,
                path=join.path,
                input_rule=InputRule.NONE,
                parents=list(members),
                children=[join.index],
                pending_parents=len(members),
                queue=join.queue,
                options={SHARD_OF: join.index},
                created_at=now,
            )
            next_index += 1
            for member in members:
                row = by_index[member]
                row.children = [shard.index if c == join.index else c for c in row.children]
            shards.append(shard)
        join.pending_parents = len(shards)
        join.options = {**join.options, SHARDS: [s.index for s in shards]}
        rows.extend(shards)


def waited_on(
    index: int, parents: Sequence[int], options: Mapping[str, Any] | None
) -> Sequence[int]:
    """The nodes node ``index``'s counter counts: its shards for a sharded join."""
    if options and SHARDS in options:
        return list(options[SHARDS])
    return parents
