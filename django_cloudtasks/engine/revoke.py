"""Revoking a node and what depends on it, or a whole workflow."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Case, F, JSONField, Value, When
from django.utils import timezone

from django_cloudtasks import signals
from django_cloudtasks.constants import NodeId, NodeKind, State, WorkflowId, WorkflowStatus
from django_cloudtasks.dispatch import cancel_on_commit, dispatch_for
from django_cloudtasks.engine.advance import finish_workflow
from django_cloudtasks.engine.attempts import with_attempt
from django_cloudtasks.engine.failure import descendants
from django_cloudtasks.engine.flow import Ledger, admit, holds_slot, send_after_commit
from django_cloudtasks.exceptions import NodeNotFound, WorkflowNotFound
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry
from django_cloudtasks.store import chunks


def revoke_node(node_id: NodeId, expired: bool = False, *, by_its_run: bool = False) -> list[str]:
    """Revoke a node and everything downstream of it; returns the revoked node ids.

    A node already running is marked REVOKED too: its result is kept when it ends,
    but nothing downstream starts; a concurrency slot it holds goes back when its run
    ends (or its lease expires). ``by_its_run`` says the node's own run revokes it
    (it expired, or raised ``Ignore``), which ends that run: its slot goes back now.
    Waiting Cloud Tasks are deleted after commit. ``expired`` is passed on to the
    ``task_revoked`` signal.

    Raises:
        NodeNotFound: when no node has that id.
    """
    with transaction.atomic():
        try:
            node = Node.objects.select_for_update().get(pk=node_id)
        except Node.DoesNotExist:
            raise NodeNotFound(f"no node has the id {node_id}") from None
        indices = {node.index}
        if node.kind != NodeKind.ERRBACK:
            indices |= descendants(node.workflow_id, node.children)
        return _revoke(node.workflow_id, indices, expired, node if by_its_run else None)


def revoke_workflow(workflow_id: WorkflowId) -> list[str]:
    """Revoke every unfinished node of a workflow; returns the revoked node ids.

    Raises:
        WorkflowNotFound: when no workflow has that id.
    """
    with transaction.atomic():
        try:
            Workflow.objects.select_for_update().get(pk=workflow_id)
        except Workflow.DoesNotExist:
            raise WorkflowNotFound(f"no workflow has the id {workflow_id}") from None
        return _revoke(workflow_id, None)


def _revoke(
    workflow_id: WorkflowId,
    indices: set[int] | None,
    expired: bool = False,
    run: Node | None = None,
) -> list[str]:
    now = timezone.now()
    ended = run.pk if run is not None else None
    nodes = Node.objects.filter(workflow_id=workflow_id).unfinished()
    if indices is not None:
        nodes = nodes.filter(index__in=sorted(indices))
    # Lock in index order, the order in which completions lock a node and then its
    # successors: taking the rows in any other order can deadlock with a completion
    # that holds a group's join and waits for the join's successor.
    victims = list(
        nodes.order_by("index")
        .select_for_update()
        .only(
            "id",
            "workflow_id",
            "task_name",
            "retries",
            "queue",
            "state",
            "is_output",
            "flow_key",
            "options",
        )
    )
    if not victims:
        return []
    ids = [v.pk for v in victims]
    ledger = Ledger()
    # A limited node still running keeps its lease, the mark of the slot it holds
    # until its run ends.
    running = [
        v.pk for v in victims if v.state == State.STARTED and holds_slot(v) and v.pk != ended
    ]
    for victim in victims:
        if victim.state == State.WAITING:
            ledger.leave_line(victim)
        elif holds_slot(victim) and victim.pk not in running:
            ledger.release(victim)
    logged: dict[str, Any] = {}
    if run is not None and run.state == State.STARTED:
        # The run that revokes its own node ends its attempt: it goes in the log.
        log = with_attempt(run, State.REVOKED, now, detail="expired" if expired else "ignored")
        logged["attempt_log"] = Case(
            When(pk=ended, then=Value(log, JSONField())), default=F("attempt_log")
        )
    for chunk in chunks(ids):
        Node.objects.filter(pk__in=chunk).unfinished().update(
            state=State.REVOKED,
            finished_at=now,
            lease_until=Case(When(pk__in=running, then=F("lease_until")), default=None)
            if running
            else None,
            **logged,
        )
    if indices is None or any(v.is_output for v in victims):
        finish_workflow(workflow_id, WorkflowStatus.REVOKED, now)
    send_after_commit(admit(ledger, now))
    cancel_on_commit(
        [
            dispatch_for(v)
            for v in victims
            if v.state in (State.QUEUED, State.SCHEDULED, State.RETRY) and v.task_name
        ]
    )
    signals.nodes_revoked.send(Node, workflow_id=workflow_id, node_ids=[str(i) for i in ids])
    if signals.task_revoked.has_listeners():
        for victim in victims:
            name = victim.task_name
            signals.task_revoked.send(
                registry.get(name) if name in registry else name or None,
                request=None,
                task_id=str(victim.pk),
                terminated=False,
                signum=None,
                expired=expired,
            )
    return [str(i) for i in ids]
