"""Handing ready nodes to the transport after commit, parking far ETAs, and the sweep."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from django_cloudtasks import signals, telemetry
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import MAX_SCHEDULE_AHEAD_SECONDS, State
from django_cloudtasks.exceptions import EnqueueError
from django_cloudtasks.models import Node
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports import Dispatch, get_transport

logger = get_logger("django_cloudtasks.dispatch")

#: Leave this much margin below Cloud Tasks' 30-day horizon when parking.
_HORIZON_MARGIN = timedelta(hours=1)


def horizon(now: datetime | None = None) -> datetime:
    """The latest ETA that is sent to Cloud Tasks now; later ones are parked."""
    now = now or timezone.now()
    return now + timedelta(seconds=MAX_SCHEDULE_AHEAD_SECONDS) - _HORIZON_MARGIN


class _Immediate:
    """When on, sends happen at once instead of after commit (for test transactions)."""

    on = False


immediate = _Immediate()


def after_commit(callback: Callable[[], object]) -> None:
    """Call ``callback`` once the current transaction commits (at once when
    :data:`immediate` is on, or outside a transaction)."""
    if immediate.on:
        callback()
    else:
        transaction.on_commit(callback)


def enqueue_on_commit(dispatches: Sequence[Dispatch]) -> None:
    """Send ``dispatches`` once the current transaction commits (at once outside one).

    If sending fails the nodes stay ready in the database, where the sweeper finds
    them, and :class:`EnqueueError` propagates to the code that committed.
    """
    if dispatches:
        after_commit(partial(send_now, list(dispatches)))


def send_now(dispatches: Sequence[Dispatch], now: datetime | None = None) -> None:
    """Send ``dispatches``, parking those beyond Cloud Tasks' horizon.

    Raises:
        EnqueueError: when the transport failed; the nodes are kept for the sweeper.
    """
    limit = horizon(now)
    far = [d for d in dispatches if d.eta is not None and d.eta > limit]
    near = [d for d in dispatches if d.eta is None or d.eta <= limit]
    if far:
        Node.objects.filter(pk__in=[d.node_id for d in far]).update(parked=True)
        logger.info("parked %d nodes beyond the 30-day horizon", len(far))
    if not near:
        return
    near = telemetry.hooks.stamp(near)
    if signals.before_task_publish.has_listeners():
        _publish(signals.before_task_publish, near)
    try:
        get_transport().send(near)
    except Exception as exc:
        logger.warning(
            "enqueue of %d nodes failed; the sweeper will resend them: %s",
            len(near),
            exc,
            extra={"node_ids": [d.node_id for d in near]},
        )
        if isinstance(exc, EnqueueError):
            raise
        raise EnqueueError(
            f"could not send {len(near)} ready nodes ({exc}); they are saved and "
            "`manage.py cloudtasks_sweep` will send them"
        ) from exc
    if signals.after_task_publish.has_listeners():
        _publish(signals.after_task_publish, near)


def _publish(signal: Signal, dispatches: Sequence[Dispatch]) -> None:
    """Send Celery's ``before_task_publish`` or ``after_task_publish`` per dispatch."""
    for d in dispatches:
        body = {"id": d.node_id, "task": d.task_name, "retries": d.retries}
        body["eta"] = d.eta.isoformat() if d.eta else None
        signal.send(
            d.task_name,
            body=body,
            exchange=d.queue,
            routing_key=d.queue,
            headers={"id": d.node_id, "task": d.task_name, "root_id": d.workflow_id},
            properties={},
            declare=[],
            retry_policy=None,
        )


def cancel_on_commit(dispatches: Sequence[Dispatch]) -> None:
    """Withdraw the Cloud Tasks of ``dispatches`` after commit; failures are logged."""

    def cancel() -> None:
        try:
            get_transport().cancel(dispatches)
        except Exception:
            logger.exception("could not delete %d revoked Cloud Tasks", len(dispatches))

    if dispatches:
        after_commit(cancel)


def dispatch_for(node: Node, not_before: datetime | None = None) -> Dispatch:
    """The dispatch that delivers ``node``'s current attempt."""
    return Dispatch(
        node_id=str(node.id),
        workflow_id=str(node.workflow_id),
        task_name=node.task_name,
        retries=node.retries,
        eta=node.due_at(not_before),
        queue=node.queue,
        dispatch_deadline=node.options.get("dispatch_deadline"),
        deferred=int(node.options.get("deferred") or 0),
    )


@dataclass
class SweepReport:
    """What a sweep did."""

    resent: int = 0
    unparked: int = 0
    parked: int = 0  # stuck nodes whose ETA turned out beyond the horizon: parked, not sent
    failed: int = 0


def sweep(now: datetime | None = None, grace: float | None = None) -> SweepReport:
    """Send nodes that are ready but were never delivered, and parked nodes now due.

    A node committed as ready whose enqueue was lost (a crash between commit and
    enqueue, a transport outage) is resent; resending a delivery that did reach
    Cloud Tasks answers ALREADY_EXISTS there, so nothing runs twice. So is a node
    whose runner died and whose lease expired more than ``grace`` seconds ago (when
    Cloud Tasks gave up redelivering it); its next delivery takes the lease over.
    """
    now = now or timezone.now()
    grace = conf.SWEEP_GRACE if grace is None else grace
    report = SweepReport()
    older_than = now - timedelta(seconds=float(grace))
    stuck = Node.objects.stuck(older_than) | Node.objects.expired_leases(older_than)
    stuck = stuck.annotate(workflow_traceparent=F("workflow__traceparent"))
    report.resent, report.parked, report.failed = _resend(stuck.iterator(chunk_size=500), now)
    due = list(
        Node.objects.parked_due(horizon(now)).annotate(
            workflow_traceparent=F("workflow__traceparent")
        )
    )
    if due:
        Node.objects.filter(pk__in=[n.pk for n in due]).update(parked=False)
        sent, parked, failed = _resend(due, now)
        report.unparked, report.parked = sent, report.parked + parked
        report.failed += failed
    return report


def _resend(nodes: Iterable[Node], now: datetime) -> tuple[int, int, int]:
    """Send ``nodes`` in batches; how many were sent, parked and not sent."""
    totals = [0, 0, 0]
    batch: list[Dispatch] = []
    for node in nodes:
        dispatch = dispatch_for(node)
        if node.state == State.STARTED:  # its runner died: a new name, see cloud_task_id
            dispatch = replace(dispatch, takeover=node.attempts)
        traceparent = getattr(node, "workflow_traceparent", "")  # annotated by sweep()
        if traceparent:  # a resend continues its workflow's trace
            dispatch = replace(dispatch, traceparent=traceparent)
        batch.append(dispatch)
        if len(batch) >= 500:
            totals = [a + b for a, b in zip(totals, _send_batch(batch, now), strict=True)]
            batch = []
    if batch:
        totals = [a + b for a, b in zip(totals, _send_batch(batch, now), strict=True)]
    return totals[0], totals[1], totals[2]


def _send_batch(batch: list[Dispatch], now: datetime) -> tuple[int, int, int]:
    limit = horizon(now)
    parked = sum(1 for d in batch if d.eta is not None and d.eta > limit)  # as send_now does
    try:
        send_now(batch, now)
    except EnqueueError as exc:
        unsent = len(batch) - parked if exc.node_ids is None else len(set(exc.node_ids))
        return len(batch) - parked - unsent, parked, unsent
    return len(batch) - parked, parked, 0
