"""States of nodes and workflows, with Celery's names."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TypeAlias

from django.db import models

#: A node's id, as a UUID or its string form.
NodeId: TypeAlias = uuid.UUID | str
#: A workflow's id, as a UUID or its string form.
WorkflowId: TypeAlias = uuid.UUID | str


class State(models.TextChoices):
    """What ``AsyncResult.state`` reports for a node."""

    PENDING = "PENDING", "Pending"  # waiting on parents, or ready but not yet sent
    WAITING = "WAITING", "Waiting"  # ready, waiting for a slot of its concurrency key
    SCHEDULED = "SCHEDULED", "Scheduled"  # ready, ETA later
    QUEUED = "QUEUED", "Queued"  # sent to Cloud Tasks
    STARTED = "STARTED", "Started"
    RETRY = "RETRY", "Retry"  # waiting for its own retry
    SUCCESS = "SUCCESS", "Success"
    FAILURE = "FAILURE", "Failure"
    REVOKED = "REVOKED", "Revoked"


#: States in which a node will not change any more (its result is final).
READY_STATES = frozenset({State.SUCCESS, State.FAILURE, State.REVOKED})
#: States in which a node is waiting to be delivered.
WAITING_STATES = frozenset(
    {State.PENDING, State.WAITING, State.SCHEDULED, State.QUEUED, State.RETRY}
)
#: The state Celery would report for each node state (a queued or scheduled task is
#: PENDING in Celery's vocabulary); the others are the same.
CELERY_STATES: dict[str, str] = {
    State.SCHEDULED: State.PENDING,
    State.QUEUED: State.PENDING,
    State.WAITING: State.PENDING,
}
#: States in which a node with a concurrency key holds one of its key's slots (a
#: REVOKED node still running holds it until its run ends or its lease expires).
SLOT_STATES = frozenset({State.QUEUED, State.SCHEDULED, State.RETRY, State.STARTED})
#: States from which a delivery may claim a node.
CLAIMABLE_STATES = frozenset({State.SCHEDULED, State.QUEUED, State.RETRY})


class WorkflowStatus(models.TextChoices):
    """The state of a whole workflow."""

    PENDING = "PENDING", "Pending"  # not finished (see WorkflowResult.state for STARTED)
    SUCCESS = "SUCCESS", "Success"
    FAILURE = "FAILURE", "Failure"
    REVOKED = "REVOKED", "Revoked"


class NodeKind(models.TextChoices):
    """A node runs a task, joins a group, or is an error callback."""

    TASK = "task", "Task"
    BARRIER = "barrier", "Group join"
    ERRBACK = "errback", "Error callback"


#: How far ahead Cloud Tasks accepts a schedule time.
MAX_SCHEDULE_AHEAD_SECONDS = 30 * 24 * 3600
#: How far back the schedules' tick looks for missed slots; retention keeps a schedule
#: run (and its workflow) at least this long, so a purged slot never looks missed.
SCHEDULE_LOOKBACK = timedelta(days=7)

#: The key of a node's options holding where it sits in its canvas (Celery's request
#: ``parent_id``, ``group``, ``group_index`` and ``chord``), written when it is stored.
LINEAGE = "lineage"
#: The key of a node's options marking a node replaced by a canvas
#: (``self.replace()``): its next delivery passes that canvas's result on, without
#: calling its function again.
REPLACED = "replaced"
