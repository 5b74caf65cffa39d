"""The persisted DAG: one :class:`Workflow` per ``apply_async``, one :class:`Node` per step."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from canvas import InputRule
from django_cloudtasks.constants import READY_STATES, NodeId, NodeKind, State, WorkflowStatus
from django_cloudtasks.limits import REVOKED_HOLDERS, UNIQUE_KEY, UNIQUE_UNTIL, WAITING_LINE
from django_cloudtasks.limits import FlowKey as FlowKey  # Django finds the model here


class WorkflowQuerySet(models.QuerySet["Workflow"]):
    """Lookups by status."""

    def unfinished(self) -> WorkflowQuerySet:
        """Workflows still running or waiting."""
        return self.filter(status=WorkflowStatus.PENDING)

    def finished(self) -> WorkflowQuerySet:
        """Workflows that succeeded, failed or were revoked."""
        return self.exclude(status=WorkflowStatus.PENDING)

    def finished_before(self, moment: datetime) -> WorkflowQuerySet:
        """Finished workflows whose end is older than ``moment``."""
        return self.finished().filter(finished_at__lt=moment)


class Workflow(models.Model):
    """One run of a canvas expression (a single task is a one-node workflow)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=16, choices=WorkflowStatus.choices, default=WorkflowStatus.PENDING
    )
    expression = models.JSONField(default=dict, blank=True)
    graph_version = models.PositiveSmallIntegerField(default=1)
    options = models.JSONField(default=dict, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    output_index = models.PositiveIntegerField(default=0)
    size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    unique_key = models.CharField(max_length=200, null=True, blank=True)
    unique_until = models.DateTimeField(null=True, blank=True)
    #: The W3C ``traceparent`` of the ``apply_async()`` caller: each delivery continues it.
    traceparent = models.CharField(max_length=55, blank=True, default="")

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [UNIQUE_KEY]
        indexes = [
            models.Index(
                fields=["finished_at"],
                name="ct_workflow_finished",
                condition=~Q(status=WorkflowStatus.PENDING),
            ),
            UNIQUE_UNTIL,
        ]

    def __str__(self) -> str:
        return f"{self.name or 'workflow'} ({self.status})"


class NodeQuerySet(models.QuerySet["Node"]):
    """Lookups by lifecycle state."""

    def unfinished(self) -> NodeQuerySet:
        """Nodes that have not reached a final state."""
        return self.exclude(state__in=READY_STATES)

    def is_revoked(self, node_id: NodeId) -> bool:
        """True when the node ``node_id`` has been revoked."""
        return self.filter(pk=node_id, state=State.REVOKED).exists()

    def stuck(self, older_than: datetime) -> NodeQuerySet:
        """Ready task nodes that should have been delivered by ``older_than``: their
        enqueue was lost (crash, transport outage) and the sweeper sends them again."""
        return self.filter(
            state__in=(State.QUEUED, State.RETRY, State.SCHEDULED),
            parked=False,
            ready_at__lt=older_than,
        ).exclude(kind=NodeKind.BARRIER)

    def expired_leases(self, now: datetime) -> NodeQuerySet:
        """Started nodes whose runner stopped answering before finishing.

        Those with no lease at all (claimed by a release that did not set one) count
        once they started before ``now``.
        """
        return self.filter(
            Q(lease_until__lt=now) | Q(lease_until__isnull=True) & ~Q(started_at__gte=now),
            state=State.STARTED,
        )

    def parked_due(self, horizon: datetime) -> NodeQuerySet:
        """Parked far-future nodes whose ETA is now within Cloud Tasks' reach."""
        return self.filter(parked=True, state=State.SCHEDULED, eta__lt=horizon)


class Node(models.Model):
    """A step of a workflow: a task call, a group join (barrier) or an error callback.

    ``pending_parents`` counts parents that have not finished; a node becomes ready
    when it reaches zero. ``input`` holds the value its parents handed it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by the (workflow, index) constraint: every index here is written on most
    # updates of a node, so none is kept that another one covers.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="nodes", db_index=False
    )
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=NodeKind.choices, default=NodeKind.TASK)
    task_name = models.CharField(max_length=200, blank=True)
    path = models.CharField(max_length=200, blank=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    input_rule = models.CharField(max_length=8, default=InputRule.NONE)
    input = models.JSONField(null=True, blank=True)
    parents = models.JSONField(default=list, blank=True)
    children = models.JSONField(default=list, blank=True)
    pending_parents = models.IntegerField(default=0)
    is_output = models.BooleanField(default=False)
    errback_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="errbacks",
        db_index=False,
    )

    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    queue = models.CharField(max_length=100, blank=True)
    countdown = models.FloatField(default=0)
    eta = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    parked = models.BooleanField(default=False)
    retries = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    #: The node whose delivery went on to run this one inline (``INLINE_SECONDS``); a
    #: redelivery of that node takes this one over if its run died.
    inline_origin = models.UUIDField(null=True, blank=True)
    #: The key of its ``max_concurrency`` and ``rate_limit`` options ("" for neither).
    flow_key = models.CharField(max_length=255, blank=True, default="")

    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error_module = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    error_traceback = models.TextField(blank=True)
    #: One entry per finished attempt (start, end, outcome, error), oldest first.
    attempt_log = models.JSONField(default=list, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = NodeQuerySet.as_manager()

    class Meta:
        ordering = ["workflow", "index"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "index"], name="ct_node_workflow_index")
        ]
        indexes = [
            models.Index(
                fields=["ready_at"],
                name="ct_node_sweep",
                condition=Q(state__in=[State.QUEUED, State.RETRY, State.SCHEDULED]),
            ),
            models.Index(
                fields=["lease_until"], name="ct_node_lease", condition=Q(state="STARTED")
            ),
            models.Index(fields=["eta"], name="ct_node_parked", condition=Q(parked=True)),
            models.Index(fields=["workflow", "state"], name="ct_node_workflow_state"),
            models.Index(fields=["task_name"], name="ct_node_task"),
            models.Index(
                fields=["errback_of"], name="ct_node_errback", condition=Q(errback_of__isnull=False)
            ),
            WAITING_LINE,
            REVOKED_HOLDERS,
        ]

    def __str__(self) -> str:
        label = self.task_name or ("group join" if self.kind == NodeKind.BARRIER else "node")
        return f"{label} [{self.state}]"

    @property
    def cloud_task_id(self) -> str:
        """The Cloud Tasks task id of the current delivery: hashed, never reused.

        A hashed prefix spreads names across Cloud Tasks' key space; the retry number
        (and a debounce's postponements) make every retry a new task while a repeated
        enqueue of the same delivery answers ALREADY_EXISTS.
        """
        return cloud_task_id(str(self.id), self.retries, deferred=self.options.get("deferred", 0))

    @property
    def is_ready(self) -> bool:
        """True once the node is final (SUCCESS, FAILURE or REVOKED)."""
        return self.state in READY_STATES

    def due_at(self, not_before: datetime | None = None) -> datetime | None:
        """When this node should run: readiness plus countdown, its ETA, the workflow's start."""
        candidates = []
        if self.ready_at is not None and self.countdown:
            candidates.append(self.ready_at + timedelta(seconds=self.countdown))
        if self.eta is not None:
            candidates.append(self.eta)
        if not_before is not None:
            candidates.append(not_before)
        return max(candidates) if candidates else None

    def call_arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """The arguments the task is called with: its own plus the input it was handed.

        With the ``prepend`` input rule the parent's result comes first, or goes to the
        keyword named by the ``result_kwarg`` option.
        """
        args, kwargs = list(self.args), dict(self.kwargs)
        if self.input_rule == InputRule.PREPEND:
            name = self.options.get("result_kwarg")
            if name:
                kwargs[name] = self.input
            else:
                args.insert(0, self.input)
        return args, kwargs

    def error_dict(self) -> dict[str, Any]:
        """The recorded error as ``{"type", "module", "message", "traceback"}``."""
        return {
            "type": self.error_type,
            "module": self.error_module,
            "message": self.error_message,
            "traceback": self.error_traceback,
        }


def id_prefix_range(term: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The ids that start with ``term`` (the 8 characters the admin shows, or more).

    Returns the lowest and highest such UUID, a range the primary key's index answers
    on every database; None when ``term`` is not 4 to 32 hex digits (dashes allowed).
    """
    digits = term.strip().lower().replace("-", "")
    if not 4 <= len(digits) <= 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def cloud_task_id(node_id: str, retries: int, takeover: int = 0, deferred: int = 0) -> str:
    """``<8 hex of sha256>-<node id>-<retry>``: stable for a delivery, new per retry.

    A ``takeover`` (the attempt whose runner died, resent by the sweeper) adds
    ``-t<attempt>``: the first delivery's name may still be taken in Cloud Tasks long
    after Cloud Tasks gave up on it, so the resend needs a name of its own. So does
    each postponement of a debounced node (``-d<deferred>``).
    """
    key = f"{node_id}:{retries}" + (f":{takeover}" if takeover else "")
    key += f":d{deferred}" if deferred else ""
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    tail = (f"-t{takeover}" if takeover else "") + (f"-d{deferred}" if deferred else "")
    return f"{digest}-{node_id}-{retries}{tail}"


# -- the original package's tables (1.x), kept read-only ----------------------------------

#: The statuses the original package wrote, for reading its rows.
LEGACY_CHAIN_STATUSES = [
    ("PENDING", "Pending"),
    ("RUNNING", "Running"),
    ("SUCCESS", "Success"),
    ("FAILED", "Failed"),
]
LEGACY_TASK_STATUSES = [
    ("PENDING", "Pending"),
    ("SCHEDULED", "Scheduled"),
    ("SUCCESS", "Success"),
    ("FAILED", "Failed"),
    ("ERROR", "Error"),
    ("REVOKED", "Revoked"),
]


class CloudChain(models.Model):
    """A chain stored by the original ``django-gcp-cloudtasks`` 1.x (read-only history).

    Upgrading keeps the table and its rows; nothing writes to it any more. The admin
    lists them under "Chains from 1.x".
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=20, choices=LEGACY_CHAIN_STATUSES, default="PENDING")
    result = models.JSONField(null=True, blank=True, default=None)
    parent_chain = models.ForeignKey(
        "self", null=True, blank=True, related_name="children", on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "chain from 1.x"
        verbose_name_plural = "chains from 1.x"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"chain {self.id} ({self.status})"


class CloudTask(models.Model):
    """A task (or group marker) stored by the original package 1.x (read-only history)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chain = models.ForeignKey(CloudChain, related_name="tasks", on_delete=models.CASCADE)
    parent = models.ForeignKey(
        "self", null=True, blank=True, related_name="children", on_delete=models.SET_NULL
    )
    endpoint_path = models.CharField(max_length=255, blank=True, null=True)
    payload = models.JSONField(default=dict)
    delay_seconds = models.PositiveIntegerField(default=0)
    is_group = models.BooleanField(default=False)
    next_task = models.ForeignKey(
        "self", null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    status = models.CharField(max_length=20, choices=LEGACY_TASK_STATUSES, default="PENDING")
    execution_result = models.JSONField(null=True, blank=True)
    external_task_name = models.CharField(max_length=500, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "task from 1.x"
        verbose_name_plural = "tasks from 1.x"
        ordering = ["chain", "created_at"]

    def __str__(self) -> str:
        what = "group marker" if self.is_group else (self.endpoint_path or "task")
        return f"{what} [{self.status}]"


# -- schedules -------------------------------------------------------------------------


class ScheduleRunState(models.TextChoices):
    """What became of one slot of a schedule."""

    STARTED = "STARTED", "started"
    SKIPPED = "SKIPPED", "skipped (the previous run was unfinished)"
    BUFFERED = "BUFFERED", "buffered (starts when the previous run finishes)"
    MISSED = "MISSED", "missed (outside the catch-up window)"


class ScheduleRunQuerySet(models.QuerySet["ScheduleRun"]):
    """Lookups by schedule and by what became of the slot."""

    def of(self, schedule: str) -> ScheduleRunQuerySet:
        """The runs of one schedule."""
        return self.filter(schedule=schedule)

    def running(self) -> ScheduleRunQuerySet:
        """Started runs whose workflow has not finished."""
        return self.filter(state=ScheduleRunState.STARTED, workflow__status=WorkflowStatus.PENDING)

    def buffered(self) -> ScheduleRunQuerySet:
        """Runs waiting for the previous one to finish (overlap ``buffer_one``)."""
        return self.filter(state=ScheduleRunState.BUFFERED)


class ScheduleRun(models.Model):
    """One slot of a schedule: at most one row, hence at most one workflow, per slot.

    ``slot`` is the scheduled time (UTC) the run belongs to; a run started by hand
    (``run-now``) has the moment it was asked for. Its outcome is its workflow's.
    """

    schedule = models.CharField(max_length=500)
    slot = models.DateTimeField()
    state = models.CharField(max_length=16, choices=ScheduleRunState.choices)
    trigger = models.CharField(max_length=16, default="scheduler")
    workflow = models.ForeignKey(
        Workflow, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)

    objects = ScheduleRunQuerySet.as_manager()

    class Meta:
        ordering = ["-slot", "schedule"]
        verbose_name = "schedule run"
        verbose_name_plural = "schedules"  # the admin page shows the schedules and their runs
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot"], name="ct_schedule_run_slot")
        ]
        indexes = [
            models.Index(
                fields=["schedule", "state"],
                name="ct_schedule_run_open",
                condition=Q(state__in=["STARTED", "BUFFERED"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.slot:%Y-%m-%d %H:%M:%S} ({self.outcome})"

    @property
    def outcome(self) -> str:
        """The workflow's status for a started run, else the run's own state."""
        if self.state == ScheduleRunState.STARTED and self.workflow is not None:
            return self.workflow.status
        return self.state

    @property
    def finished_at(self) -> datetime | None:
        """When the run's workflow finished (None while it runs, or if none started)."""
        return self.workflow.finished_at if self.workflow is not None else None


class ScheduleState(models.Model):
    """A schedule's operational state: paused or not, and since when it is known.

    ``first_seen`` bounds the catch-up of a new schedule: slots before it were never
    due. The row is also locked to serialise the slots of one schedule.
    """

    name = models.CharField(max_length=500, primary_key=True)
    paused = models.BooleanField(default=False)
    first_seen = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({'paused' if self.paused else 'active'})"
