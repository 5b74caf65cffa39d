"""Retention: deleting finished workflows once they are older than ``RESULT_EXPIRES``.

The sweeper calls :func:`purge_expired` (a few bounded batches per sweep) and
``manage.py cloudtasks_purge`` calls :func:`purge` (every batch, with its progress).
Each batch is one short transaction: it picks the oldest expired workflows, at most
:data:`BATCH_SIZE` of them and about :data:`BATCH_NODES` nodes, and deletes them
with their nodes and schedule runs in three statements.

A finished workflow is kept, whatever its age, while any of its nodes may still run
or holds a concurrency slot (a sibling of a failed node still running, a revoked node
whose run has not given its slot back), while it holds its ``unique_key``
(``unique_for``), and while it is the run of a schedule's slot the schedules' tick
still looks at (:data:`~django_cloudtasks.constants.SCHEDULE_LOOKBACK`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from django_cloudtasks.conf import conf
from django_cloudtasks.constants import SCHEDULE_LOOKBACK, SLOT_STATES, WAITING_STATES, State
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.models import Node, ScheduleRun, Workflow, WorkflowQuerySet
from django_cloudtasks.store import CHUNK_SIZE, get_store
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.engine")

#: Workflows deleted per transaction unless told otherwise.
BATCH_SIZE = 500
#: A batch stops adding workflows once they hold this many nodes (by their size); a
#: single larger workflow is still deleted alone.
BATCH_NODES = 50_000
#: Batches one sweep runs at most; what is left waits for the next sweep.
SWEEP_BATCHES = 10

#: States of a node that may still be sent, run or hold a concurrency slot.
LIVE_STATES = frozenset(WAITING_STATES - {State.PENDING} | SLOT_STATES)


def result_expires(value: Any = None) -> timedelta | None:
    """``RESULT_EXPIRES`` (or ``value``) as a timedelta; None when retention is off.

    A number is days (fractions allowed); a :class:`~datetime.timedelta` is taken as
    it is; None disables retention.

    Raises:
        ConfigurationError: for anything else, zero or a negative age.
    """
    value = conf.RESULT_EXPIRES if value is None else value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise ConfigurationError(
            f"CLOUDTASKS['RESULT_EXPIRES'] must be a number of days, a timedelta or None, "
            f"not {value!r}"
        )
    expires = value if isinstance(value, timedelta) else timedelta(days=value)
    if expires <= timedelta(0):
        raise ConfigurationError(
            f"CLOUDTASKS['RESULT_EXPIRES'] must be above zero (None disables retention), "
            f"not {value!r}"
        )
    return expires


def expired(cutoff: datetime, now: datetime | None = None) -> WorkflowQuerySet:
    """Finished workflows that ended before ``cutoff`` and that retention may delete."""
    now = now or timezone.now()
    live = Node.objects.filter(workflow=OuterRef("pk")).filter(
        Q(state__in=LIVE_STATES) | Q(state=State.REVOKED, lease_until__isnull=False)
    )
    looked_at = ScheduleRun.objects.filter(
        workflow=OuterRef("pk"), slot__gte=now - SCHEDULE_LOOKBACK
    )
    return (
        Workflow.objects.finished_before(cutoff)
        .exclude(unique_until__gt=now)
        .filter(~Exists(live), ~Exists(looked_at))
    )


@dataclass
class Purged:
    """What a purge deleted; ``complete`` is False when it stopped at its batch limit."""

    workflows: int = 0
    nodes: int = 0
    schedule_runs: int = 0
    batches: int = 0
    complete: bool = True


def purge_batch(cutoff: datetime, size: int = BATCH_SIZE, now: datetime | None = None) -> Purged:
    """Delete one batch of the oldest workflows :func:`expired` before ``cutoff``.

    One transaction of four statements (one when nothing is left): the selection,
    locking the rows it picks (skipping rows another purge holds), then the deletes
    of :meth:`~django_cloudtasks.store.Store.delete_finished`.
    """
    size = max(1, min(size, CHUNK_SIZE))
    with transaction.atomic():
        picked = list(
            expired(cutoff, now)
            .select_for_update(skip_locked=True)
            .order_by("finished_at")
            .values_list("pk", "size")[:size]
        )
        ids: list[Any] = []
        nodes = 0
        for pk, workflow_size in picked:
            if ids and nodes + workflow_size > BATCH_NODES:
                break
            ids.append(pk)
            nodes += workflow_size
        deleted = get_store().delete_finished(ids)
    return Purged(deleted.workflows, deleted.nodes, deleted.schedule_runs, int(bool(ids)))


def purge(
    cutoff: datetime,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
    on_batch: Callable[[Purged], None] | None = None,
    now: datetime | None = None,
) -> Purged:
    """Delete, batch after batch, every workflow :func:`expired` before ``cutoff``.

    Stops when a batch finds nothing, or after ``max_batches`` (``complete`` is then
    False). ``on_batch`` receives the running total after each batch that deleted
    something.
    """
    total = Purged()
    while max_batches is None or total.batches < max_batches:
        batch = purge_batch(cutoff, batch_size, now)
        if not batch.batches:
            return total
        total.workflows += batch.workflows
        total.nodes += batch.nodes
        total.schedule_runs += batch.schedule_runs
        total.batches += 1
        if on_batch is not None:
            on_batch(total)
    total.complete = False
    return total


def purge_expired(now: datetime | None = None, max_batches: int = SWEEP_BATCHES) -> Purged:
    """The sweeper's part: delete up to ``max_batches`` batches of expired workflows.

    Does nothing (and asks the database nothing) when ``RESULT_EXPIRES`` is None. An
    invalid ``RESULT_EXPIRES`` is logged as an error and deletes nothing, so it never
    stops the rest of a sweep (the system check ``django_cloudtasks.E030`` reports it).
    """
    try:
        expires = result_expires()
    except ConfigurationError as exc:
        logger.error("retention is off: %s", exc)
        return Purged(complete=False)
    if expires is None:
        return Purged()
    now = now or timezone.now()
    return purge(now - expires, BATCH_SIZE, max_batches=max_batches, now=now)
