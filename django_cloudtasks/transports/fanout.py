"""A large fan-out: spread over the shards of a queue, sent by spawner tasks, paced.

**Shards.** ``CLOUDTASKS["QUEUES"]["q"]["shards"] = 4`` makes the queue ``q`` four
Cloud Tasks queues, ``q``, ``q-1``, ``q-2`` and ``q-3`` (``cloudtasks_queues`` creates
them all with the same settings). Each delivery of a node on ``q`` goes to the shard
its node id hashes to, always the same one, so a repeated enqueue still answers
ALREADY_EXISTS. A queue dispatches at most 500 tasks a second; four shards, 2,000.

**Spawners.** A send of more than :data:`DIRECT_LIMIT` dispatches does not create
them all from the request that made them ready: it creates one spawner task per
:data:`SPAWN_BATCH` dispatches of a shard, and each spawner's request
(``POST /cloudtasks/spawn/``) creates its batch (a fan-out of fan-outs).

**Pacing.** Cloud Tasks asks for at most 500 new tasks a second on a queue to start
with, ramping up by no more than 50% every 5 minutes above that. The spawners of one
fan-out are scheduled so that its tasks are created on each shard at that pace:
the batch starting at the ``n``-th task of a shard is due at :func:`creation_offset`
of ``n``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django_cloudtasks.conf import conf
from django_cloudtasks.transports.base import Dispatch

#: The most dispatches one send creates itself; a larger fan-out goes through spawners.
DIRECT_LIMIT = 500
#: How many tasks one spawner creates.
SPAWN_BATCH = 100
#: Cloud Tasks' guidance: new tasks a second on a queue to start with...
START_RATE = 500.0
#: ...growing by at most this factor...
RAMP = 1.5
#: ...every this many seconds.
RAMP_SECONDS = 300.0


def shard_count(queue: str) -> int:
    """How many Cloud Tasks queues the queue ``queue`` spreads over (its ``shards``)."""
    settings = (conf.QUEUES or {}).get(queue or str(conf.QUEUE))
    if not isinstance(settings, Mapping):
        return 1
    return max(1, int(settings.get("shards") or 1))


def shard_ids(queue: str, count: int) -> list[str]:
    """The ids of the ``count`` shards of ``queue``: ``q``, ``q-1``, ``q-2``..."""
    return [queue] + [f"{queue}-{i}" for i in range(1, count)]


def shard_of(dispatch: Dispatch) -> str:
    """The Cloud Tasks queue id that ``dispatch`` goes to ("" for the default queue)."""
    count = shard_count(dispatch.queue)
    if count == 1:
        return dispatch.queue
    digest = hashlib.blake2b(dispatch.node_id.encode(), digest_size=4).digest()
    position = int.from_bytes(digest, "big") % count
    return shard_ids(dispatch.queue or str(conf.QUEUE), count)[position]


def creation_offset(n: int, rate: float = START_RATE) -> float:
    """Seconds after a fan-out starts when its ``n``-th task on a queue may be created.

    ``rate`` tasks a second for the first :data:`RAMP_SECONDS`, then :data:`RAMP` times
    more in each such period.
    """
    offset, remaining = 0.0, float(n)
    while remaining > rate * RAMP_SECONDS:
        remaining -= rate * RAMP_SECONDS
        offset += RAMP_SECONDS
        rate *= RAMP
    return offset + remaining / rate


@dataclass(frozen=True)
class Spawn:
    """One spawner: a batch of dispatches of one shard, to create ``offset`` s from now."""

    queue: str
    offset: float
    dispatches: Sequence[Dispatch]

    @property
    def task_id(self) -> str:
        """A name derived from the batch: sending the same fan-out again repeats it."""
        digest = hashlib.blake2b(digest_size=16)
        for d in self.dispatches:
            digest.update(d.cloud_task_id.encode())
        return f"spawn-{digest.hexdigest()}"

    def body(self) -> dict[str, Any]:
        """The JSON body the spawn endpoint receives."""
        return {"spawn": [encode(d) for d in self.dispatches]}


def spawners(dispatches: Sequence[Dispatch]) -> list[Spawn]:
    """The spawners that send ``dispatches``, per shard, paced (see the module)."""
    by_shard: dict[str, list[Dispatch]] = {}
    for d in dispatches:
        by_shard.setdefault(shard_of(d), []).append(d)
    spawns = []
    for queue, batch in by_shard.items():
        for start in range(0, len(batch), SPAWN_BATCH):
            part = batch[start : start + SPAWN_BATCH]
            spawns.append(Spawn(queue, creation_offset(start), part))
    return spawns


def encode(d: Dispatch) -> dict[str, Any]:
    """``d`` as JSON."""
    return {
        "node": d.node_id,
        "workflow": d.workflow_id,
        "task": d.task_name,
        "retry": d.retries,
        "eta": None if d.eta is None else d.eta.isoformat(),
        "queue": d.queue,
        "deadline": d.dispatch_deadline,
        "takeover": d.takeover,
        "deferred": d.deferred,
        "traceparent": d.traceparent,
    }


def decode(data: Mapping[str, Any]) -> Dispatch:
    """The dispatch :func:`encode` encoded.

    Raises:
        KeyError, TypeError, ValueError: for a malformed entry.
    """
    eta = data.get("eta")
    deadline = data.get("deadline")
    return Dispatch(
        node_id=str(data["node"]),
        workflow_id=str(data["workflow"]),
        task_name=str(data["task"]),
        retries=int(data.get("retry") or 0),
        eta=None if eta is None else datetime.fromisoformat(str(eta)),
        queue=str(data.get("queue") or ""),
        dispatch_deadline=None if deadline is None else float(deadline),
        takeover=int(data.get("takeover") or 0),
        deferred=int(data.get("deferred") or 0),
        traceparent=str(data.get("traceparent") or ""),
    )
