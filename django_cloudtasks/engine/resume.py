"""Retrying a failed node by hand so that its workflow continues from where it failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from django_cloudtasks.constants import NodeId, NodeKind, State, WorkflowId, WorkflowStatus
from django_cloudtasks.dispatch import dispatch_for, enqueue_on_commit
from django_cloudtasks.engine.failure import descendants
from django_cloudtasks.engine.flow import Ledger, admit, is_limited
from django_cloudtasks.engine.join_shards import waited_on
from django_cloudtasks.exceptions import CloudTasksError, NodeNotFound
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.store import chunks
from django_cloudtasks.telemetry import get_logger, node_fields

# Named after the module this code lived in first; log configurations refer to it.
logger = get_logger("django_cloudtasks.recovery")

_CLEARED_ERROR = {
    "error_type": "",
    "error_module": "",
    "error_message": "",
    "error_traceback": "",
}


class RetryRefused(CloudTasksError, ValueError):
    """The node cannot be retried; the message says why and what to retry instead."""


@dataclass(frozen=True)
class RetryReport:
    """What :func:`retry_node` did.

    ``reset`` holds the indices of the downstream nodes put back to PENDING;
    ``resumed`` is True when the workflow is running again, False when other failed
    nodes (``blocked_by``) still keep its output from finishing.
    """

    node_id: str
    index: int
    task_name: str
    reset: list[int] = field(default_factory=list)
    resumed: bool = False
    blocked_by: list[int] = field(default_factory=list)


def retry_node(node_id: NodeId) -> RetryReport:
    """Run a failed node again and let its workflow continue from there.

    The node goes back to QUEUED with its error cleared and its attempts kept. Its
    ``retries`` count goes up by one: the delivery's Cloud Tasks name is derived from
    it, and Cloud Tasks refuses a recently used name (ALREADY_EXISTS), which would
    silently drop the new run. Downstream nodes that were marked FAILURE because this
    node failed go back to PENDING, each counting its parents that have not succeeded;
    their ``input`` is kept. A downstream node that also hangs below another failed
    node stays FAILURE until that one is retried. The workflow goes back to PENDING
    when its output node can finish again. The node is sent after commit.

    Raises:
        NodeNotFound: when no node has that id.
        RetryRefused: when the node is not FAILURE, is a group join, failed only
            because an upstream node failed, or belongs to a revoked workflow.
    """
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id).first()
        if node is None:
            raise NodeNotFound(f"no node has the id {node_id}")
        _check(node)
        downstream = sorted(descendants(node.workflow_id, node.children))
        # Lock the rows about to change before reading their parents' states, so that
        # a sibling completing concurrently either is seen as SUCCESS or decrements
        # the counters after they are rewritten, never in between.
        for chunk in chunks(downstream):
            list(
                Node.objects.select_for_update()
                .filter(workflow_id=node.workflow_id, index__in=chunk)
                .values_list("pk", flat=True)
            )
        rows = {
            index: (state, parents, kind)
            for index, state, parents, kind in Node.objects.filter(
                workflow_id=node.workflow_id
            ).values_list("index", "state", "parents", "kind")
        }
        reset = _resettable(node.index, downstream, rows)
        _reset_downstream(node.workflow_id, [i for i in reset if i != node.index], rows)
        now = timezone.now()
        Node.objects.filter(pk=node.pk, state=State.FAILURE).update(
            state=State.QUEUED,
            retries=node.retries + 1,
            ready_at=now,
            eta=None,
            countdown=0,
            parked=False,
            started_at=None,
            finished_at=None,
            lease_until=None,
            result=None,
            **_CLEARED_ERROR,
        )
        node.state, node.retries, node.ready_at = State.QUEUED, node.retries + 1, now
        node.eta, node.countdown = None, 0
        output = Workflow.objects.filter(pk=node.workflow_id).values_list(
            "output_index", flat=True
        )[0]
        resumed = output in reset
        if resumed:
            Workflow.objects.filter(pk=node.workflow_id).exclude(
                status=WorkflowStatus.REVOKED
            ).update(status=WorkflowStatus.PENDING, finished_at=None)
        if is_limited(node):
            # It gave its slot back when it failed: it takes one again, or waits.
            ledger = Ledger()
            ledger.arrive(node)
            enqueue_on_commit([dispatch_for(n) for n in admit(ledger, now)])
        else:
            enqueue_on_commit([dispatch_for(node)])
    blocked = [] if resumed else _blocking_failures(rows, reset)
    logger.info(
        "node retried by hand",
        extra={**node_fields(node), "reset": len(reset) - 1, "resumed": resumed},
    )
    return RetryReport(
        node_id=str(node.pk),
        index=node.index,
        task_name=node.task_name,
        reset=sorted(i for i in reset if i != node.index),
        resumed=resumed,
        blocked_by=blocked,
    )


def _check(node: Node) -> None:
    label = f"node #{node.index} ({node.task_name or node.get_kind_display()})"
    if node.state != State.FAILURE:
        raise RetryRefused(f"{label} is {node.state}; only a node in FAILURE can be retried")
    if node.kind == NodeKind.BARRIER:
        raise RetryRefused(
            f"{label} is a group join, which fails only when a member fails; "
            "retry the member that failed"
        )
    status = Workflow.objects.filter(pk=node.workflow_id).values_list("status", flat=True)[0]
    if status == WorkflowStatus.REVOKED:
        raise RetryRefused(f"{label} belongs to a revoked workflow")
    if node.parents:
        upstream = (
            Node.objects.filter(workflow_id=node.workflow_id, index__in=node.parents)
            .exclude(state=State.SUCCESS)
            .order_by("index")
            .values_list("index", "task_name", "state")
        )
        if upstream:
            index, task_name, state = upstream[0]
            raise RetryRefused(
                f"{label} did not run: its parent #{index} ({task_name or 'group join'}) "
                f"is {state}; retry the node that failed first"
            )


def _resettable(
    origin: int, downstream: list[int], rows: dict[int, tuple[str, list[int], str]]
) -> set[int]:
    """The retried node plus the downstream FAILURE nodes no other failure holds back.

    ``downstream`` is in index order, which is a topological order, so a node's
    parents are decided before it.
    """
    reset = {origin}
    for index in downstream:
        state, parents, _kind = rows[index]
        if state != State.FAILURE:
            continue
        if all(p in reset or rows[p][0] not in (State.FAILURE, State.REVOKED) for p in parents):
            reset.add(index)
    return reset


def _reset_downstream(
    workflow_id: WorkflowId, indices: list[int], rows: dict[int, tuple[str, list[int], str]]
) -> None:
    """Put ``indices`` back to PENDING, each waiting on its parents not yet succeeded."""
    by_count: dict[int, list[int]] = {}
    options: dict[int, dict[str, Any]] = {}
    for chunk in chunks(indices):
        options.update(
            Node.objects.filter(
                workflow_id=workflow_id, kind=NodeKind.BARRIER, index__in=chunk
            ).values_list("index", "options")
        )
    for index in indices:
        counted = waited_on(index, rows[index][1], options.get(index))
        waiting = sum(1 for p in counted if rows[p][0] != State.SUCCESS)
        by_count.setdefault(waiting, []).append(index)
    for waiting, group in by_count.items():
        for chunk in chunks(group):
            Node.objects.filter(workflow_id=workflow_id, index__in=chunk).update(
                state=State.PENDING,
                pending_parents=waiting,
                ready_at=None,
                started_at=None,
                finished_at=None,
                lease_until=None,
                result=None,
                **_CLEARED_ERROR,
            )


def _blocking_failures(rows: dict[int, tuple[str, list[int], str]], reset: set[int]) -> list[int]:
    """Failed task nodes, other than those just reset, whose parents all succeeded."""
    return sorted(
        index
        for index, (state, parents, kind) in rows.items()
        if state == State.FAILURE
        and index not in reset
        and kind == NodeKind.TASK
        and all(rows[p][0] == State.SUCCESS for p in parents)
    )
