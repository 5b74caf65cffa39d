"""Deliveries: claim a node, run its function outside any transaction, record the outcome.

Every transport ends here: the run endpoint for Cloud Tasks, and the eager and memory
transports in-process.
"""

from __future__ import annotations

import json
import logging
import random
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from django_cloudtasks import engine, signals
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import CLAIMABLE_STATES, READY_STATES, State
from django_cloudtasks.context import Request, TaskContext
from django_cloudtasks.dispatch import dispatch_for, enqueue_on_commit
from django_cloudtasks.exceptions import NodeNotFound, NotRegistered, Retry, WrongTask
from django_cloudtasks.models import Node
from django_cloudtasks.registry import Task, registry
from django_cloudtasks.transports.base import Dispatch

logger = logging.getLogger("django_cloudtasks.runner")

ERRBACK_PARAMETERS = ("original_task_id", "original_task_name", "error", "payload")


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended, as the run endpoint answers it."""

    status: int
    state: str
    detail: str = ""
    follow: Node | None = None  # a successor claimed to run next in the same request

    def as_json(self) -> dict[str, Any]:
        """The endpoint's JSON body."""
        data = {"state": self.state}
        if self.detail:
            data["detail"] = self.detail
        return data


@dataclass(frozen=True)
class _Inline:
    """An inline run: the delivered node it started from, and when it stops taking steps."""

    origin: Any
    until: float

    def open(self) -> bool:
        return time.monotonic() < self.until


def deliver(
    node_id: Any,
    task_name: str | None = None,
    retries: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Outcome:
    """Run one delivery of node ``node_id``.

    Answers 200 when the delivery is settled (success, retry scheduled, failure
    recorded, or a duplicate of a finished node) and 409 when another delivery holds
    the node under a live lease, so that Cloud Tasks tries again later.

    Raises:
        NodeNotFound: when no node has that id.
        WrongTask: when ``task_name`` is not the node's task.
    """
    node = _claim(node_id, task_name, retries, timezone.now())
    if node is None:
        return _unclaimed(node_id, task_name, retries)
    return _carry_on(node, headers or {}, _inline_run(node.pk))


def _inline_run(origin: Any) -> _Inline | None:
    budget = float(conf.INLINE_SECONDS or 0)
    return _Inline(origin, time.monotonic() + budget) if budget > 0 else None


def _carry_on(node: Node, headers: Mapping[str, str], inline: _Inline | None) -> Outcome:
    """Run a claimed node, then each successor it claimed to run inline."""
    outcome = _start(node, headers, inline)
    follow = outcome.follow
    while follow is not None:
        follow = _start(follow, {}, inline).follow
    return outcome


def _start(node: Node, headers: Mapping[str, str], inline: _Inline | None) -> Outcome:
    now = node.started_at or timezone.now()
    custom = node.options.get("dispatch_deadline")
    if custom and node.lease_until is not None:
        lease = now + timedelta(seconds=lease_seconds(float(custom)))
        if lease != node.lease_until:
            Node.objects.filter(pk=node.pk, attempts=node.attempts).update(lease_until=lease)
    if _expired(node, now):
        engine.revoke_node(node.pk)
        return Outcome(200, State.REVOKED, "expired")
    return _run(node, headers, inline if inline is not None and inline.open() else None)


def _claim(
    node_id: Any,
    task_name: str | None,
    retries: int | None,
    now: Any,
    deadline: float | None = None,
    inline_origin: Any = None,
) -> Node | None:
    """Take the node for this delivery in one statement that also reads it back.

    Only a ready node, or one whose lease has expired, can be taken; the statement
    refuses a delivery for another task or for an earlier retry. ``inline_origin``
    marks a node taken to run inline in the request that delivered that node.
    """
    ops = connection.ops
    table = ops.quote_name(Node._meta.db_table)
    moment = Node._meta.get_field("started_at")
    lease = now + timedelta(seconds=lease_seconds(float(deadline or conf.DISPATCH_DEADLINE)))
    try:
        pk = Node._meta.pk.get_db_prep_value(uuid.UUID(str(node_id)), connection)  # type: ignore[union-attr]
    except ValueError:
        return None
    now_db = moment.get_db_prep_value(now, connection)
    sql = (
        f"UPDATE {table} SET state = %s, attempts = attempts + 1, started_at = %s, lease_until = %s"
    )
    params: list[Any] = [State.STARTED, now_db, moment.get_db_prep_value(lease, connection)]
    if inline_origin is not None:
        sql += ", inline_origin = %s"
        params.append(Node._meta.pk.get_db_prep_value(inline_origin, connection))  # type: ignore[union-attr]
    sql += (
        " WHERE id = %s AND pending_parents <= 0 "
        "AND (state IN (%s, %s, %s) OR (state = %s AND lease_until < %s))"
    )
    params += [pk, *sorted(CLAIMABLE_STATES), State.STARTED, now_db]
    if task_name is not None:
        sql += " AND task_name = %s"
        params.append(task_name)
    if retries is not None:
        sql += " AND retries <= %s"
        params.append(retries)
    sql += " RETURNING " + ", ".join(ops.quote_name(str(f.column)) for f in engine.NODE_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else engine.node_from_db(row)


def _unclaimed(node_id: Any, task_name: str | None, retries: int | None) -> Outcome:
    """Explain why a delivery could not take its node (off the hot path)."""
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        raise NodeNotFound(f"no node has the id {node_id}")
    if task_name is not None and task_name != node.task_name:
        raise WrongTask(f"node {node_id} runs {node.task_name!r}, not {task_name!r}")
    if node.state == State.SUCCESS and node.children:
        return _resume(node)
    if node.state in READY_STATES:
        return Outcome(200, node.state, "already finished")
    if retries is not None and retries < node.retries:
        return Outcome(200, node.state, f"stale delivery of retry {retries}")
    return Outcome(409, node.state, "the node is running or not ready; try later")


def _resume(origin: Node) -> Outcome:
    """A finished node delivered again: take over a successor its request ran inline.

    Cloud Tasks delivers a node again when the request that ran it died. If that
    request had gone on to run a successor inline, the successor is still STARTED
    under that request's lease: answer 409 while the lease lives (Cloud Tasks keeps
    retrying), then take it over and carry on from there.
    """
    stranded = (
        Node.objects.filter(
            workflow_id=origin.workflow_id, state=State.STARTED, inline_origin=origin.pk
        )
        .only("id", "task_name", "retries")
        .first()
    )
    if stranded is None:
        return Outcome(200, origin.state, "already finished")
    node = _claim(stranded.pk, stranded.task_name, stranded.retries, timezone.now())
    if node is None:
        return Outcome(409, origin.state, "a successor run inline is still running; try later")
    logger.warning(
        "taking over a successor whose inline run stopped",
        extra={"workflow_id": str(origin.workflow_id), "node_id": str(node.pk)},
    )
    _carry_on(node, {}, _inline_run(origin.pk))
    return Outcome(200, origin.state, "resumed its inline successors")


def lease_seconds(deadline: float) -> float:
    """How long a claimed node is protected from other deliveries.

    Cloud Tasks gives up on an attempt after its dispatch deadline and may deliver
    again; the lease outlasts the deadline a little, so a slow run is not started
    twice, while a run whose process died is taken over soon after.
    """
    return deadline + min(30.0, deadline)


def _expired(node: Node, now: Any) -> bool:
    expires = node.options.get("expires")
    if expires is None:
        return False
    if isinstance(expires, int | float):
        start = node.ready_at or node.created_at
        return bool(now > start + timedelta(seconds=expires))
    return bool(now > engine._parse_moment(expires))


def _run(node: Node, headers: Mapping[str, str], inline: _Inline | None = None) -> Outcome:
    """Run a claimed node and record its outcome.

    With ``inline``, the outcome may carry one successor, claimed in the same
    transaction, to run next in this request (see :func:`_take_inline`).
    """
    attempt = node.attempts
    try:
        task = registry.get(node.task_name)
    except NotRegistered as exc:
        return _fail(node, _error_from(exc, with_traceback=False), attempt)
    try:
        args, kwargs = _call_arguments(node, task)
    except TypeError as exc:
        return _fail(node, _error_from(exc, with_traceback=False), attempt)
    signals.node_started.send(Node, node=node)
    try:
        if task.policy.bind:
            context = TaskContext(
                task,
                Request(
                    id=str(node.pk),
                    workflow_id=str(node.workflow_id),
                    task_name=node.task_name,
                    retries=node.retries,
                    attempt=attempt,
                    headers=dict(headers),
                ),
            )
            value = task.__wrapped__(context, *args, **kwargs)
        else:
            value = task.__wrapped__(*args, **kwargs)
        _check_result(value)
    except Retry as retry:
        return _retry_or_fail(node, task, retry, retry.exc or retry, attempt, explicit=True)
    except Exception as exc:
        if isinstance(exc, TypeError) and _is_json_error(exc):
            return _fail(node, _error_from(exc), attempt)
        if task.policy.autoretry_for and isinstance(exc, task.policy.autoretry_for):
            return _retry_or_fail(node, task, None, exc, attempt, explicit=False)
        return _fail(node, _error_from(exc), attempt)
    with transaction.atomic():
        take = None
        if inline is not None and node.children:
            take = engine.Take(
                index=node.children[0],
                queue=node.queue,
                lease_seconds=lease_seconds(float(conf.DISPATCH_DEADLINE)),
                origin=inline.origin,
            )
        advanced = engine.settle(node, value, attempt, take)
        dispatches, follow = advanced.dispatches, advanced.taken
        if inline is not None and follow is None:
            dispatches, follow = _take_inline(dispatches, node, inline)
        enqueue_on_commit(dispatches)
    signals.node_finished.send(Node, node=node, state=State.SUCCESS)
    return Outcome(200, State.SUCCESS, follow=follow)


def _take_inline(
    dispatches: list[Dispatch], node: Node, inline: _Inline
) -> tuple[list[Dispatch], Node | None]:
    """Claim a successor to run next in this request, saving a Cloud Tasks round trip.

    Only a successor due now, on the same queue, qualifies. It is claimed in the
    transaction that records its parent, so there is no moment when it is ready but
    neither sent nor claimed, and it gets no Cloud Task: if this process dies while it
    runs, the redelivery of ``inline.origin`` takes it over once its lease expires
    (see :func:`_resume`), and the sweeper resends it if that redelivery never comes.

    The node's first child is usually claimed by the statement that advances it
    (:class:`engine.Take`); this is for a successor further away, such as the body of
    a chord whose join this node closed.
    """
    now = timezone.now()
    for position, dispatch in enumerate(dispatches):
        if (dispatch.eta is None or dispatch.eta <= now) and dispatch.queue == node.queue:
            deadline = float(dispatch.dispatch_deadline or conf.DISPATCH_DEADLINE)
            follow = _claim(
                dispatch.node_id,
                dispatch.task_name,
                dispatch.retries,
                now,
                deadline=deadline,
                inline_origin=inline.origin,
            )
            if follow is None:
                return dispatches, None
            return [*dispatches[:position], *dispatches[position + 1 :]], follow
    return dispatches, None


def _is_json_error(exc: TypeError) -> bool:
    return "JSON serializable" in str(exc)


def _check_result(value: Any) -> None:
    """Refuse a return value the database cannot store: not JSON, NaN or an infinity."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:  # NaN, an infinity, a reference cycle
        raise TypeError(f"the return value is not JSON serializable: {exc}") from None


def _call_arguments(node: Node, task: Task) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs = node.call_arguments()
    if node.input_rule == "errback" and isinstance(node.input, dict):
        params = task.call_signature().parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for key in ERRBACK_PARAMETERS:
            if (takes_any or key in params) and key not in kwargs:
                kwargs[key] = node.input.get(key)
    try:
        task.call_signature().bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"wrong arguments for task {node.task_name!r}: {exc}") from None
    return args, kwargs


def _retry_or_fail(
    node: Node,
    task: Task,
    retry: Retry | None,
    exc: BaseException,
    attempt: int,
    explicit: bool,
) -> Outcome:
    options = node.options
    limit = getattr(retry, "max_retries", None)
    if limit is None:
        limit = options.get("max_retries", task.policy.max_retries)
    if limit is not None and node.retries >= limit:
        return _fail(node, _error_from(exc), attempt)
    countdown = retry.countdown if retry is not None and retry.countdown is not None else None
    if countdown is None:
        countdown = backoff(node.retries, task, options)
    now = timezone.now()
    error = _error_from(exc)
    with transaction.atomic():
        moved = Node.objects.filter(pk=node.pk, state=State.STARTED, attempts=attempt).update(
            state=State.RETRY,
            retries=node.retries + 1,
            ready_at=now,
            eta=now + timedelta(seconds=countdown),
            countdown=0,
            lease_until=None,
            error_type=error["type"],
            error_module=error["module"],
            error_message=error["message"],
            error_traceback=error["traceback"],
        )
        if moved:
            node.retries += 1
            node.state, node.ready_at, node.countdown = State.RETRY, now, 0
            node.eta = now + timedelta(seconds=countdown)
            enqueue_on_commit([dispatch_for(node)])
    signals.node_finished.send(Node, node=node, state=State.RETRY)
    return Outcome(200, State.RETRY, f"retry {node.retries} in {countdown:.3g}s")


def backoff(retries: int, task: Task, options: Mapping[str, Any]) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    With ``retry_backoff`` the delay is ``base * 2**retries`` capped at
    ``retry_backoff_max``, and with ``retry_jitter`` a random value between 0 and that
    delay; without it, ``default_retry_delay``.
    """
    policy = task.policy
    base = options.get("retry_backoff", policy.retry_backoff)
    if not base:
        return float(policy.default_retry_delay)
    base = 1.0 if base is True else float(base)
    cap = float(options.get("retry_backoff_max", policy.retry_backoff_max))
    delay = min(base * (2**retries), cap)
    if options.get("retry_jitter", policy.retry_jitter):
        delay = random.uniform(0, delay)
    return float(delay)


def _fail(node: Node, error: dict[str, str], attempt: int) -> Outcome:
    with transaction.atomic():
        dispatches = engine.fail(node, error, attempt)
        enqueue_on_commit(dispatches)
    signals.node_finished.send(Node, node=node, state=State.FAILURE)
    logger.info(
        "node failed: %s: %s",
        error["type"],
        error["message"],
        extra={"workflow_id": str(node.workflow_id), "node_id": str(node.pk)},
    )
    return Outcome(200, State.FAILURE, f"{error['type']}: {error['message']}")


def _error_from(exc: BaseException, with_traceback: bool = True) -> dict[str, str]:
    cls = type(exc)
    return {
        "type": cls.__name__,
        "module": "" if cls.__module__ == "builtins" else cls.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)) if with_traceback else "",
    }


def report(node_id: Any, status: str, value: Any, error: Mapping[str, Any]) -> Outcome:
    """Record the outcome of a node that ran elsewhere (the tracker endpoint).

    Goes through the same engine code as an in-process run; a report for a node that
    is already final changes nothing.

    Raises:
        NodeNotFound: when no node has that id.
    """
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        raise NodeNotFound(f"no node has the id {node_id}")
    if node.state in READY_STATES:
        return Outcome(200, node.state, "already finished")
    if node.state != State.STARTED:
        now = timezone.now()
        claimed = Node.objects.filter(
            pk=node.pk, state__in=CLAIMABLE_STATES, pending_parents__lte=0
        ).update(state=State.STARTED, attempts=node.attempts + 1, started_at=now)
        if not claimed:
            return Outcome(409, node.state, "the node is not ready")
        node.attempts += 1
    if status == "success":
        with transaction.atomic():
            enqueue_on_commit(engine.complete(node, value, node.attempts))
        return Outcome(200, State.SUCCESS)
    failure = {
        "type": str(error.get("type") or "Error"),
        "module": str(error.get("module") or ""),
        "message": str(error.get("message") or ""),
        "traceback": str(error.get("traceback") or ""),
    }
    return _fail(node, failure, node.attempts)
