"""A node that fails: a retry by its task's policy, or failure for good and its errbacks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from canvas import Expression, InputRule, Signature
from django_cloudtasks import signals
from django_cloudtasks.constants import (
    READY_STATES,
    SLOT_STATES,
    WAITING_STATES,
    NodeKind,
    State,
    WorkflowId,
    WorkflowStatus,
)
from django_cloudtasks.dispatch import dispatch_for, enqueue_on_commit
from django_cloudtasks.engine.advance import finish_workflow
from django_cloudtasks.engine.attempts import with_attempt
from django_cloudtasks.engine.flow import (
    Ledger,
    admit,
    end_revoked_run,
    holds_slot,
    send_after_commit,
)
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry, task_queue
from django_cloudtasks.store import chunks
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports import Dispatch

logger = get_logger("django_cloudtasks.engine")


def schedule_retry(
    node: Node,
    countdown: float,
    error: Mapping[str, Any],
    attempt: int,
    changes: Mapping[str, Any] | None = None,
) -> None:
    """Put a running node back to RETRY, to be delivered again in ``countdown`` seconds.

    Applies only if ``attempt`` still holds the node; the new delivery is sent after
    commit. ``node`` is updated in place (``retries`` counts the new retry).
    ``changes`` (from ``self.retry(args=, kwargs=, queue=)``) may set ``args``,
    ``kwargs`` and ``queue`` for the next attempts. An ``expires`` in seconds becomes
    the moment it stands for, so that retries do not push it back.
    """
    now = timezone.now()
    fields: dict[str, Any] = dict(changes or {})
    if "args" in fields or "kwargs" in fields:
        # The arguments given replace the whole call, the parent's input included.
        fields.setdefault("args", [])
        fields.setdefault("kwargs", {})
        fields["input_rule"] = InputRule.NONE
    expires = node.options.get("expires")
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        deadline = (node.ready_at or node.created_at) + timedelta(seconds=expires)
        fields["options"] = {**node.options, "expires": deadline.isoformat()}
    fields["attempt_log"] = with_attempt(node, State.RETRY, now, error)
    with transaction.atomic():
        moved = Node.objects.filter(pk=node.pk, state=State.STARTED, attempts=attempt).update(
            state=State.RETRY,
            retries=node.retries + 1,
            ready_at=now,
            eta=now + timedelta(seconds=countdown),
            countdown=0,
            lease_until=None,
            result=None,
            error_type=error["type"],
            error_module=error["module"],
            error_message=error["message"],
            error_traceback=error["traceback"],
            **fields,
        )
        if moved:
            node.retries += 1
            node.state, node.ready_at, node.countdown = State.RETRY, now, 0
            node.eta = now + timedelta(seconds=countdown)
            for name, value in fields.items():
                setattr(node, name, value)
            enqueue_on_commit([dispatch_for(node)])
        else:
            send_after_commit(admit(end_revoked_run(node)))


def record_failure(node: Node, error: Mapping[str, str], attempt: int | None) -> None:
    """:func:`fail` in its own transaction, sending the error callbacks after commit."""
    with transaction.atomic():
        dispatches = fail(node, error, attempt)
        enqueue_on_commit(dispatches)


def fail(node: Node, error: Mapping[str, Any], attempt: int | None) -> list[Dispatch]:
    """Record that ``node`` failed for good; fail everything downstream; run errbacks.

    Must run inside a transaction. Only the call that moves the node to FAILURE
    propagates and creates the error callbacks, so they run exactly once. Each
    downstream node this call fails runs its own error callbacks too, with a
    ``ChordError`` naming ``node``, unless the same callback already runs for this
    failure (a chain's ``on_error`` runs once).
    """
    now = timezone.now()
    fields = {
        "error_type": error.get("type", "")[:200],
        "error_module": error.get("module", "")[:200],
        "error_message": error.get("message", ""),
        "error_traceback": error.get("traceback", ""),
        # The exception's arguments, when they are JSON data, so get() rebuilds it.
        "result": error.get("args"),
    }
    claimed = Node.objects.filter(pk=node.pk)
    own: dict[str, Any] = {}
    if attempt is not None:
        claimed = claimed.filter(attempts=attempt)
        own["attempt_log"] = with_attempt(node, State.FAILURE, now, error)
    done = claimed.exclude(state__in=READY_STATES).update(
        state=State.FAILURE, finished_at=now, lease_until=None, **fields, **own
    )
    if not done:
        return [dispatch_for(n) for n in admit(end_revoked_run(node))]
    failed: list[Node] = []
    downstream = descendants(node.workflow_id, node.children)
    for chunk in chunks(sorted(downstream)):
        waiting = Node.objects.filter(
            workflow_id=node.workflow_id, index__in=chunk, state__in=WAITING_STATES
        )
        # Locked in index order, as revoke locks them, before they are failed.
        locked = list(waiting.select_for_update().order_by("index"))
        if locked:
            Node.objects.filter(pk__in=[n.pk for n in locked]).update(
                state=State.FAILURE, finished_at=now, **fields
            )
        failed += locked
    finish_workflow(node.workflow_id, WorkflowStatus.FAILURE, now)
    signals.node_failed.send(Node, node=node, error=error)
    seen: set[str] = set()
    failures = [(node, error)]
    upstream = f"Dependency {node.pk} ({node.task_name}) raised {error.get('type', 'Error')}"
    chord_error = {
        "type": "ChordError",
        "module": "django_cloudtasks.exceptions",
        "message": f"{upstream}: {error.get('message', '')}",
        "traceback": "",
    }
    failures += [(n, chord_error) for n in failed if n.options.get("link_error")]
    callbacks = []
    for failed_node, failure in failures:
        fresh = []
        for data in failed_node.options.get("link_error") or ():
            key = json.dumps(data, sort_keys=True)
            if key not in seen:
                seen.add(key)
                fresh.append(data)
        if fresh:
            callbacks.append((failed_node, failure, fresh))
    dispatches = _create_errbacks(node.workflow_id, callbacks, now)
    if holds_slot(node) and node.state in SLOT_STATES:
        # Its slot goes back last: the key's row is locked after every node row.
        ledger = Ledger()
        ledger.release(node)
        dispatches += [dispatch_for(n) for n in admit(ledger, now)]
    return dispatches


def _create_errbacks(
    workflow_id: WorkflowId,
    callbacks: list[tuple[Node, Mapping[str, Any], list[Any]]],
    now: datetime,
) -> list[Dispatch]:
    if not callbacks:
        return []
    workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
    rows: list[Node] = []
    for node, error, signatures in callbacks:
        info = _errback_info(node, error)
        for data in signatures:
            sig = Expression.from_dict(data)
            if not isinstance(sig, Signature):
                logger.warning("ignoring an error callback that is not a signature: %r", sig)
                continue
            rows.append(
                Node(
                    id=uuid.uuid4(),
                    workflow_id=workflow_id,
                    index=workflow.size + len(rows),
                    kind=NodeKind.ERRBACK,
                    task_name=sig.task_name,
                    path=f"errback of {node.path or node.index}"[:200],
                    args=list(sig.args),
                    kwargs=dict(sig.kwargs),
                    options=dict(sig.options),
                    input_rule=InputRule.NONE if sig.immutable else InputRule.ERRBACK,
                    input=info,
                    errback_of=node,
                    state=State.QUEUED,
                    queue=sig.options.get("queue") or task_queue(sig.task_name),
                    ready_at=now,
                    created_at=now,
                )
            )
    if rows:
        Workflow.objects.filter(pk=workflow.pk).update(size=workflow.size + len(rows))
        Node.objects.bulk_create(rows)
    return [dispatch_for(row) for row in rows]


def _errback_info(node: Node, error: Mapping[str, Any]) -> dict[str, Any]:
    """What an error callback is told about the failure of ``node`` (JSON data)."""
    args, kwargs = node.call_arguments()
    payload = dict(kwargs)
    if node.task_name in registry:
        try:
            signature = registry.get(node.task_name).call_signature()
            payload = dict(signature.bind_partial(*args, **kwargs).arguments)
        except TypeError:
            pass
    return {
        "original_task_id": str(node.pk),
        "original_task_name": node.task_name,
        "error": f"{error.get('type', 'Error')}: {error.get('message', '')}",
        "payload": payload,
        "request": {
            "id": str(node.pk),
            "workflow_id": str(node.workflow_id),
            "task_name": node.task_name,
            "args": list(args),
            "kwargs": dict(kwargs),
            "retries": node.retries,
        },
        "exc": {
            "type": error.get("type", "Error"),
            "module": error.get("module", ""),
            "message": error.get("message", ""),
            "args": error.get("args"),
        },
        "traceback": error.get("traceback", ""),
    }


def descendants(workflow_id: WorkflowId, children: Sequence[int]) -> set[int]:
    """Indices of every node reachable from ``children`` (inclusive)."""
    if not children:
        return set()
    edges = dict(
        Node.objects.filter(workflow_id=workflow_id)
        .exclude(kind=NodeKind.ERRBACK)
        .values_list("index", "children")
    )
    seen: set[int] = set()
    stack = list(children)
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        stack.extend(edges.get(index) or ())
    return seen
