"""The library's instruments, with the OpenTelemetry metrics API (the ``otel`` extra).

Their names and attributes are documented in ``docs/observability.md``; keep both in
step. The meter follows the meter provider the application sets.
"""

from __future__ import annotations

from datetime import datetime

from opentelemetry import metrics

from django_cloudtasks.constants import State

TASK = "cloudtasks.task.name"
QUEUE = "cloudtasks.queue"
STATE = "cloudtasks.state"

#: Counter name per final state of an attempt.
_ENDED: dict[str, str] = {
    State.SUCCESS: "cloudtasks.task.succeeded",
    State.FAILURE: "cloudtasks.task.failed",
    State.RETRY: "cloudtasks.task.retried",
}


class Instruments:
    """The counters and histograms of task attempts and workflows."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("django_cloudtasks")
        self.started = meter.create_counter(
            "cloudtasks.task.started", unit="{attempt}", description="Task attempts started."
        )
        self.ended: dict[str, metrics.Counter] = {
            state: meter.create_counter(
                name, unit="{attempt}", description=f"Task attempts that ended {state}."
            )
            for state, name in _ENDED.items()
        }
        self.duration = meter.create_histogram(
            "cloudtasks.task.duration",
            unit="s",
            description="How long an attempt ran: its function and settling its node.",
        )
        self.latency = meter.create_histogram(
            "cloudtasks.task.queue_latency",
            unit="s",
            description="From when a node was due to when its attempt started.",
        )
        self.workflows = meter.create_counter(
            "cloudtasks.workflow.finished",
            unit="{workflow}",
            description="Workflows that reached SUCCESS, FAILURE or REVOKED.",
        )

    def attempt_started(self, task: str, queue: str, latency: float | None) -> None:
        """Count a started attempt and how long its node waited to start."""
        attributes = {TASK: task, QUEUE: queue}
        self.started.add(1, attributes)
        if latency is not None:
            self.latency.record(max(latency, 0.0), attributes)

    def attempt_ended(self, task: str, queue: str, state: str, seconds: float) -> None:
        """Count an attempt that ended in ``state`` and record how long it ran."""
        attributes = {TASK: task, QUEUE: queue}
        counter = self.ended.get(state)
        if counter is not None:
            counter.add(1, attributes)
        self.duration.record(seconds, {**attributes, STATE: state or "UNKNOWN"})

    def workflow_finished(self, status: str) -> None:
        """Count a workflow that reached ``status``."""
        self.workflows.add(1, {STATE: status})


def waited(started_at: datetime | None, due: datetime | None) -> float | None:
    """Seconds from ``due`` to ``started_at`` (None when either is unknown)."""
    if started_at is None or due is None:
        return None
    return (started_at - due).total_seconds()
