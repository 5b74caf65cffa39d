"""The shared state of flow-control keys: one :class:`FlowKey` row per key.

Kept apart from :mod:`django_cloudtasks.models`, which re-exports it, with the
indexes and the constraint flow control adds to nodes and workflows.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone


class FlowKeyQuerySet(models.QuerySet["FlowKey"]):
    """Lookups of concurrency and rate-limit keys."""

    def busy(self) -> FlowKeyQuerySet:
        """Keys with nodes holding slots or waiting for one."""
        return self.filter(Q(running__gt=0) | Q(waiting__gt=0))

    def busy_or_paced(self, now: datetime) -> FlowKeyQuerySet:
        """Busy keys, and keys whose rate limit holds back a start after ``now``."""
        return self.filter(Q(running__gt=0) | Q(waiting__gt=0) | Q(next_start__gt=now.timestamp()))


class FlowKey(models.Model):
    """The state of one concurrency or rate-limit key, shared by every server.

    ``running`` counts the nodes holding one of its slots (sent, running or waiting
    for a retry) and ``waiting`` those in line for one (state WAITING); ``capacity``
    is the ``max_concurrency`` last applied. ``next_start`` (seconds since the epoch)
    is the earliest time its rate limit lets the next node start. The row is also the
    lock that serialises the key: every change to its slots updates it first.
    """

    key = models.CharField(max_length=255, primary_key=True)
    running = models.IntegerField(default=0)
    waiting = models.IntegerField(default=0)
    capacity = models.IntegerField(null=True, blank=True)
    #: Starts per second last applied, and the earliest next start it allows.
    rate = models.FloatField(null=True, blank=True)
    next_start = models.FloatField(null=True, blank=True)
    #: Slots the last statement on this row gave to newcomers and to waiters in line
    #: (read back by that statement).
    granted = models.IntegerField(default=0)
    handed = models.IntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = FlowKeyQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        verbose_name = "flow-control key"

    def __str__(self) -> str:
        return f"{self.key} ({self.running} running, {self.waiting} waiting)"


#: No two unfinished workflows share a ``unique_key`` (``apply_async(unique_key=...)``).
UNIQUE_KEY = models.UniqueConstraint(
    fields=["unique_key"],
    name="ct_workflow_unique_key",
    condition=Q(status="PENDING", unique_key__isnull=False),
)
#: Finished workflows that keep their key for a while (``unique_for``).
UNIQUE_UNTIL = models.Index(
    fields=["unique_key", "unique_until"],
    name="ct_workflow_unique_until",
    condition=Q(unique_until__isnull=False),
)
#: Each key's line of waiting nodes, in the order they are served.
WAITING_LINE = models.Index(
    fields=["flow_key", "ready_at", "index"], name="ct_node_waiting", condition=Q(state="WAITING")
)
#: Nodes revoked while they ran, still holding their slot (the sweeper frees abandoned ones).
REVOKED_HOLDERS = models.Index(
    fields=["lease_until"],
    name="ct_node_revoked_lease",
    condition=Q(state="REVOKED", lease_until__isnull=False),
)
