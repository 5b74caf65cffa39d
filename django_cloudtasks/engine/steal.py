"""Stealing: an inline run claims queued nodes of its workflow (see :func:`steal`).

A request that finished a member of a group whose join still waits may go on with the
group's other queued members instead of leaving each to its own Cloud Tasks delivery.
On PostgreSQL the statement that records a member usually steals the next
(:class:`~django_cloudtasks.store.Steal`, see :func:`~.advance.succeed`); this module
is the steal on its own, and the spawners' filter of the members taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.utils import timezone

from django_cloudtasks.conf import conf
from django_cloudtasks.constants import CLAIMABLE_STATES, NodeId, WorkflowId
from django_cloudtasks.models import Node
from django_cloudtasks.policy import lease_seconds
from django_cloudtasks.store import STEAL_WINDOW, get_store
from django_cloudtasks.transports import Dispatch

#: How many windows one :func:`steal` looks in, each halfway down to the last.
STEAL_PROBES = 8


def steal(
    origin: NodeId,
    workflow_id: WorkflowId,
    queue: str,
    below: int,
    floor: int = 0,
    *,
    looked: bool = False,
) -> Node | None:
    """Claim a queued node of the workflow for the inline run that started at ``origin``.

    A delivery whose node counted on a group join that still waits may go on with
    other members of the workflow instead of leaving each to its own Cloud Tasks
    delivery: it takes the queued node of highest index under ``below`` (and at most
    :data:`~django_cloudtasks.store.steal.STEAL_WINDOW` under it) that is due now, a
    plain task and on ``queue``. The node keeps its Cloud Task, if it has one: that
    delivery finds it taken (409 while the lease lives, then "already finished").
    If this process dies while it runs, the redelivery of ``origin`` takes it over,
    as it does an inline successor, and the sweeper resends it if that never comes.
    A spawner that has not yet created the node's Cloud Task leaves it out
    (:func:`unsent`).

    The queued members of a group lie between those other requests took from its end
    and those Cloud Tasks delivers from its start, which ``floor`` (the index of the
    node this request was delivered for) marks. When the window has none, the window
    halfway down to ``floor`` is tried, and so on, :data:`STEAL_PROBES` in all, so that
    a request arriving after others took much of the group finds the queued ones in
    a few statements. ``looked`` tells that the first window was read already (by the
    statement that recorded the last node, see :func:`succeed`): the probes start at
    the next. Returns None when none of them has any.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds(float(conf.DISPATCH_DEADLINE)))
    store = get_store()
    for probe in range(STEAL_PROBES):
        if probe or not looked:
            stolen = store.steal(workflow_id, queue, below, now, lease, origin)
            if stolen is not None:
                return stolen
        if below - STEAL_WINDOW <= floor:
            return None
        # halfway down to the floor, but no window under the floor
        below = max((below + floor) // 2, floor + STEAL_WINDOW)
    return None


def unsent(dispatches: Sequence[Dispatch]) -> list[Dispatch]:
    """The ``dispatches`` whose node may still be claimed (one query).

    A spawner's batch leaves out the nodes an inline run took (or that finished, or
    were revoked) before the spawner ran: they need no Cloud Task.
    """
    if not dispatches:
        return []
    claimable = {
        str(pk)
        for pk in Node.objects.filter(
            pk__in=[d.node_id for d in dispatches], state__in=CLAIMABLE_STATES
        ).values_list("pk", flat=True)
    }
    return [d for d in dispatches if d.node_id in claimable]
