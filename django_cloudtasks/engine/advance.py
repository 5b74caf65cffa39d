"""Claiming a node for a delivery, recording its success and advancing its children.

Every transition is a conditional update, so concurrent and repeated deliveries
settle on one outcome. Advancing a finished node is one atomic statement that
decrements its children's counters, hands them its result and marks those that
reached zero as ready; it never looks at siblings, so a group join costs the same
whatever the size of the group.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from django_cloudtasks import signals
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import (
    NodeId,
    NodeKind,
    State,
    WorkflowId,
    WorkflowStatus,
)
from django_cloudtasks.dispatch import dispatch_for, enqueue_on_commit
from django_cloudtasks.engine.attempts import with_attempt
from django_cloudtasks.engine.flow import Ledger, admit, end_revoked_run, holds_slot, is_limited
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.policy import due_by, lease_seconds
from django_cloudtasks.store import (
    Done,
    Steal,
    Take,
    get_store,
    has_plain_children,
)
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports import Dispatch

logger = get_logger("django_cloudtasks.engine")


# -- claim -----------------------------------------------------------------------------


def claim(
    node_id: NodeId,
    task_name: str | None,
    retries: int | None,
    now: datetime,
    deadline: float | None = None,
    inline_origin: NodeId | None = None,
    *,
    early: bool = False,
) -> Node | None:
    """Take the node for this delivery in one statement that also reads it back.

    Only a ready node whose time has come (its countdown, ETA or retry backoff, give
    or take :data:`~django_cloudtasks.policy.CLOCK_SKEW_SECONDS`), or a STARTED one
    whose lease has expired or is missing, can be taken; the statement refuses a
    delivery for another task or for an earlier retry. ``early`` lifts the time
    condition (the in-process transports do not wait for ETAs). The lease lasts
    :func:`~django_cloudtasks.policy.lease_seconds` of ``deadline`` (default
    ``DISPATCH_DEADLINE``). ``inline_origin`` marks a node taken to run inline in the
    request that delivered that node; without it the mark is cleared (the node's own
    delivery took it over). Returns None when nothing was taken.
    """
    lease = now + timedelta(seconds=lease_seconds(float(deadline or conf.DISPATCH_DEADLINE)))
    return get_store().claim(
        node_id,
        task_name,
        retries,
        now,
        lease,
        inline_origin,
        due_by=None if early else due_by(now),
    )


def extend_lease(node: Node, now: datetime) -> None:
    """Fit a claimed node's lease to its own ``dispatch_deadline`` option, if it has one."""
    custom = node.options.get("dispatch_deadline")
    if custom and node.lease_until is not None:
        lease = now + timedelta(seconds=lease_seconds(float(custom)))
        if lease != node.lease_until:
            Node.objects.filter(pk=node.pk, attempts=node.attempts).update(lease_until=lease)


def claim_reported(node: Node) -> Node | None:
    """Claim a node whose outcome is reported from elsewhere (the tracker endpoint).

    A node STARTED under a live lease is returned as it is: the report settles that
    attempt. Otherwise the node is claimed as a delivery claims it, under a lease,
    whatever its ETA (the work has run), so that if recording the report fails the
    node is taken over once the lease expires, by a redelivery or by the sweeper.
    Returns the claimed node, or None when it is not ready to be claimed.
    """
    now = timezone.now()
    if node.state == State.STARTED and node.lease_until is not None and node.lease_until >= now:
        return node
    return claim(node.pk, None, None, now, early=True)


# -- success ---------------------------------------------------------------------------


@dataclass
class Advanced:
    """What advancing did: dispatches to send, the successor taken inline, if any.

    ``waiting`` is the highest index of a group join it counted on that still waits
    for other members (None when there is none); ``stolen``, a queued node the
    statement stole for the inline run (see :class:`~django_cloudtasks.store.Steal`),
    and ``looked``, whether it tried (a join it counted on waits, nothing was taken).
    """

    dispatches: list[Dispatch] = field(default_factory=list)
    taken: Node | None = None
    done: bool = True
    waiting: int | None = None
    stolen: Node | None = None
    looked: bool = False


@dataclass(frozen=True)
class Succeeded:
    """What :func:`succeed` did, for an inline run: the successor it claimed to run next,
    and the index of a group join the node counted on that still waits, if any (the
    join's other members may be stolen, see :func:`~.steal.steal`). ``stolen`` is a member
    stolen in the statement that recorded the node; ``looked`` tells that the statement
    tried, so that a :func:`~.steal.steal` after it starts under the window it read."""

    follow: Node | None = None
    waiting: int | None = None
    stolen: Node | None = None
    looked: bool = False


def succeed(
    node: Node,
    value: Any,
    attempt: int,
    inline_origin: NodeId | None = None,
    *,
    steals: bool = False,
    below: int | None = None,
) -> Succeeded:
    """Record ``value`` as ``node``'s result, advance its children, send them after commit.

    With ``inline_origin`` (the node whose delivery runs this request's inline steps),
    one successor due now on the same queue is claimed in the same transaction and
    returned, to run next in this request instead of being sent; when none is and a
    group join the node counted on still waits, its index is returned too. With
    ``steals`` too, where the store records in the statement that advances
    (PostgreSQL), that statement also steals a queued node of the workflow under that
    join and under ``below`` (see :func:`~.steal.steal`), returned as ``stolen``.

    When recording and advancing is one statement (:func:`records_alone`), it runs
    without an explicit transaction: the statement commits on its own, saving the
    round trips of ``BEGIN`` and ``COMMIT``.
    """
    take = None
    if inline_origin is not None and node.children:
        take = Take(
            index=node.children[0],
            queue=node.queue,
            lease_seconds=lease_seconds(float(conf.DISPATCH_DEADLINE)),
            origin=inline_origin,
        )
    # Only a node with a join among its children can leave one waiting (a chain step's
    # statement stays as it is).
    steal = None
    if (
        take is not None
        and steals
        and not has_plain_children(node)
        and get_store().records_in_advance
    ):
        steal = Steal(node.queue, below, take.lease_seconds, take.origin)
    if records_alone(node) and not connection.in_atomic_block:
        # Only the first child can be taken: claiming another would be a second
        # statement, after the one that made it ready had committed.
        advanced = settle(node, value, attempt, take, steal)
        enqueue_on_commit(advanced.dispatches)  # outside a transaction: sent now
        return _succeeded(advanced.taken, advanced)
    with transaction.atomic():
        advanced = settle(node, value, attempt, take, steal)
        dispatches, follow = advanced.dispatches, advanced.taken
        if inline_origin is not None and follow is None and advanced.stolen is None:
            dispatches, follow = _take_inline(dispatches, node, inline_origin)
        enqueue_on_commit(dispatches)
    return _succeeded(follow, advanced)


def _succeeded(follow: Node | None, advanced: Advanced) -> Succeeded:
    return Succeeded(follow, advanced.waiting, advanced.stolen, advanced.looked)


def records_alone(node: Node) -> bool:
    """True when recording ``node``'s success and advancing its children is one statement.

    So it is for a node that does not finish its workflow nor hold a concurrency slot,
    when it has no children, or (where the store records in the statement that
    advances) when its claim found them all plain tasks: then no group join can close
    and no limited child needs admitting after that statement.
    """
    if node.is_output or holds_slot(node):
        return False
    if not node.children:
        return True
    return get_store().records_in_advance and has_plain_children(node)


def complete(node: Node, value: Any, attempt: int) -> list[Dispatch]:
    """Record ``value`` as ``node``'s result and advance its children.

    Must run inside a transaction; returns the dispatches to send after commit. If the
    node is no longer the one this attempt claimed (revoked while running, or taken
    over after its lease expired) the result is kept but nothing downstream starts.
    """
    return settle(node, value, attempt).dispatches


def settle(
    node: Node, value: Any, attempt: int, take: Take | None = None, steal: Steal | None = None
) -> Advanced:
    """:func:`complete`, and with ``take``, claim that successor in the same statement
    (with ``steal``, a queued node too, where the store records in that statement).

    On PostgreSQL recording the result and advancing the children is one statement
    (the advance only applies if the record did); elsewhere it is two.
    """
    now = timezone.now()
    ledger = Ledger()
    log = with_attempt(node, State.SUCCESS, now)
    if node.children and get_store().records_in_advance:
        done = Done(node.pk, attempt, value, log)
        advanced = advance(
            node.workflow_id,
            [(node.children, value)],
            now,
            done=done,
            take=take,
            steal=steal,
            ledger=ledger,
        )
        if not advanced.done:
            return _keep_result_of_revoked(node, value, now)
    else:
        recorded = Node.objects.filter(pk=node.pk, state=State.STARTED, attempts=attempt).update(
            state=State.SUCCESS, result=value, finished_at=now, lease_until=None, attempt_log=log
        )
        if not recorded:
            return _keep_result_of_revoked(node, value, now)
        advanced = Advanced()
        if node.children:
            advanced = advance(
                node.workflow_id, [(node.children, value)], now, take=take, ledger=ledger
            )
    node.state, node.result, node.attempt_log = State.SUCCESS, value, log
    if node.is_output:
        finish_workflow(node.workflow_id, WorkflowStatus.SUCCESS, now)
    if holds_slot(node):
        ledger.release(node)
    advanced.dispatches += [dispatch_for(n) for n in admit(ledger, now)]
    return advanced


def _keep_result_of_revoked(node: Node, value: Any, now: datetime) -> Advanced:
    """Keep the result of a node revoked while it ran; its run's slot goes back."""
    Node.objects.filter(pk=node.pk, state=State.REVOKED).update(
        result=value,
        attempt_log=with_attempt(node, State.REVOKED, now, detail="revoked while running"),
    )
    return Advanced(dispatches=[dispatch_for(n) for n in admit(end_revoked_run(node))])


def _take_inline(
    dispatches: list[Dispatch], node: Node, origin: NodeId
) -> tuple[list[Dispatch], Node | None]:
    """Claim a successor to run next in this request, saving a Cloud Tasks round trip.

    Only a successor due now, of the same workflow and on the same queue, qualifies.
    It is claimed in the transaction that records its parent, so there is no moment
    when it is ready but neither sent nor claimed, and it gets no Cloud Task: if this
    process dies while it runs, the redelivery of ``origin`` takes it over once its
    lease expires (see ``runner._resume``), and the sweeper resends it if that
    redelivery never comes.

    The node's first child is usually claimed by the statement that advances it
    (:class:`~django_cloudtasks.store.Take`); this is for a successor further away,
    such as the body of a chord whose join this node closed.
    """
    now = timezone.now()
    for position, dispatch in enumerate(dispatches):
        due = dispatch.eta is None or dispatch.eta <= now
        # A node of another workflow (handed a slot of a shared key) is sent, not taken.
        if due and dispatch.queue == node.queue and dispatch.workflow_id == str(node.workflow_id):
            deadline = float(dispatch.dispatch_deadline or conf.DISPATCH_DEADLINE)
            follow = claim(
                dispatch.node_id,
                dispatch.task_name,
                dispatch.retries,
                now,
                deadline=deadline,
                inline_origin=origin,
            )
            if follow is None:
                return dispatches, None
            return [*dispatches[:position], *dispatches[position + 1 :]], follow
    return dispatches, None


def advance(
    workflow_id: WorkflowId,
    work: Iterable[tuple[Sequence[int], Any]],
    now: datetime,
    barriers: Iterable[Mapping[str, Any]] = (),
    *,
    done: Done | None = None,
    take: Take | None = None,
    steal: Steal | None = None,
    ledger: Ledger | None = None,
) -> Advanced:
    """Hand each ``(children, value)`` to those children; return the ready dispatches.

    ``barriers`` are group joins ready to close. Joins that become ready on the way
    are closed too, iteratively: one statement each, whatever the size of the group.
    ``done`` records that node's success in the first statement, which then applies
    only if it did (PostgreSQL); ``take`` claims a successor there instead of
    dispatching it, and ``steal`` a queued node (see
    :class:`~django_cloudtasks.store.Steal`). Children with limits go into ``ledger``
    for the caller to admit (without one, they are admitted here).
    """
    store = get_store()
    own = ledger is None
    ledger = Ledger() if ledger is None else ledger
    queue: deque[tuple[Sequence[int], Any, Mapping[str, Any] | None]] = deque(
        (children, value, None) for children, value in work
    )
    queue.extend((b["children"], None, b) for b in barriers)
    advanced = Advanced()
    first = True
    while queue:
        children, value, barrier = queue.popleft()
        rows = store.advance(
            workflow_id,
            children,
            value,
            barrier,
            now,
            done=done if first else None,
            take=take if first else None,
            steal=steal if first else None,
        )
        if first and done is not None and not rows:
            advanced.done = False
            return advanced
        if first and steal is not None:
            advanced.stolen = rows[0].get("stolen") if rows else None
            advanced.looked = any(
                r["kind"] == NodeKind.BARRIER and r["pending_parents"] > 0 for r in rows
            ) and not any(r["state"] == State.STARTED for r in rows)
        first = False
        for row in rows:
            if barrier is not None and row["id"] == barrier["id"]:
                if row["is_output"]:
                    finish_workflow(workflow_id, WorkflowStatus.SUCCESS, now)
            elif row["pending_parents"] != 0:
                if row["kind"] == NodeKind.BARRIER and row["pending_parents"] > 0:
                    advanced.waiting = max(advanced.waiting or 0, row["index"])
                continue
            elif row["state"] == State.STARTED and "taken" in row:
                advanced.taken = row["taken"]
            elif row["kind"] == NodeKind.TASK and row["state"] in (State.QUEUED, State.SCHEDULED):
                ready = _node_from_row(row, now)
                if is_limited(ready):
                    ledger.arrive(ready)
                else:
                    advanced.dispatches.append(dispatch_for(ready))
            elif row["kind"] == NodeKind.BARRIER and row["state"] == State.PENDING:
                queue.append((row["children"], None, row))
    if own:
        advanced.dispatches += [dispatch_for(n) for n in admit(ledger, now)]
    return advanced


def _node_from_row(row: Mapping[str, Any], now: datetime) -> Node:
    return Node(
        id=row["id"],
        workflow_id=row["workflow_id"],
        task_name=row["task_name"],
        retries=row["retries"],
        queue=row["queue"],
        countdown=row["countdown"],
        eta=row["eta"],
        ready_at=now,
        options=row["options"],
        flow_key=row["flow_key"] or "",
        state=row["state"],
    )


def finish_workflow(workflow_id: WorkflowId, status: str, now: datetime) -> None:
    """Move a running workflow to its final ``status``; sends ``workflow_finished`` once."""
    changed = Workflow.objects.filter(pk=workflow_id, status=WorkflowStatus.PENDING).update(
        status=status, finished_at=now
    )
    if changed:
        signals.workflow_finished.send(Workflow, workflow_id=workflow_id, status=status)
        logger.info("workflow %s", status.lower(), extra={"workflow_id": str(workflow_id)})
