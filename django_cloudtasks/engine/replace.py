"""Replacing a running node by a canvas (Celery's ``Task.replace``)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

import canvas
from canvas import Expression, InputRule
from django_cloudtasks.constants import REPLACED, State
from django_cloudtasks.dispatch import enqueue_on_commit
from django_cloudtasks.engine.advance import settle
from django_cloudtasks.engine.attempts import REPLACED as REPLACED_OUTCOME
from django_cloudtasks.engine.attempts import with_attempt
from django_cloudtasks.engine.flow import Ledger, holds_slot
from django_cloudtasks.engine.persist import admit_roots, build_rows, check_graph, insert_and_send
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.engine")


def replace(node: Node, expression: Expression, attempt: int) -> bool:
    """Store ``expression`` in ``node``'s workflow; its result becomes ``node``'s.

    The node waits for the replacement's output as a child waits for its parent; the
    replacement's roots are sent after commit. What followed the node still follows
    it, and a failure inside the replacement fails the node and everything after it
    (their error callbacks run with a ``ChordError``). The replacement's tasks inherit
    the node's queue when they name none. A concurrency slot the node holds goes back
    while it waits; the replacement's tasks have their own limits. Applies only if
    ``attempt`` still holds the node; returns whether it did.

    Raises:
        NotRegistered: for a task name no ``@task`` registered.
        TypeError: when a node's arguments cannot bind to its function.
    """
    graph = canvas.compile(expression)
    check_graph(graph, {})
    now = timezone.now()
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=node.workflow_id)
        base = workflow.size
        output = base + graph.output
        moved = Node.objects.filter(pk=node.pk, state=State.STARTED, attempts=attempt).update(
            state=State.PENDING,
            pending_parents=1,
            parents=[output],
            input_rule=InputRule.PREPEND,
            input=None,
            lease_until=None,
            # Its next delivery is a new Cloud Task, not a repeat of the one that ran.
            retries=node.retries + 1,
            options={**node.options, REPLACED: True},
            attempt_log=with_attempt(node, REPLACED_OUTCOME, now),
        )
        if not moved:
            return False
        defaults = {"queue": node.queue} if node.queue else {}
        rows = build_rows(graph, workflow, defaults, now, None, base=base)
        rows.output.children = [*rows.output.children, node.index]
        Workflow.objects.filter(pk=workflow.pk).update(size=base + rows.count)
        ledger = Ledger()
        if holds_slot(node):
            # It waits for its replacement now; it takes a slot again once that is done.
            ledger.release(node)
        ready = admit_roots(rows.ready, now, ledger)
        insert_and_send(workflow, rows, ready, now)
    logger.info(
        "node replaced",
        extra={"workflow_id": str(node.workflow_id), "node_id": str(node.pk), "nodes": rows.count},
    )
    return True


def pass_on(node: Node, attempt: int) -> None:
    """Settle a replaced node with the result its replacement handed it."""
    with transaction.atomic():
        enqueue_on_commit(settle(node, node.input, attempt).dispatches)
