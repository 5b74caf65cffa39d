"""One delivery: claim the node, call its function outside any transaction, settle.

Settling (:mod:`django_cloudtasks.runner.settle`) is one of three engine calls:
:func:`~django_cloudtasks.engine.succeed`, :func:`~django_cloudtasks.engine.schedule_retry`
or :func:`~django_cloudtasks.engine.record_failure`; the runner itself writes nothing.
Every transport ends here: the run endpoint for Cloud Tasks, and the eager and memory
transports in-process. :func:`adeliver` is the same delivery in an event loop, for the
async run endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from canvas import InputRule
from django_cloudtasks import engine, signals, telemetry
from django_cloudtasks.constants import (
    CLAIMABLE_STATES,
    READY_STATES,
    REPLACED,
    NodeId,
    State,
)
from django_cloudtasks.context import (
    Request,
    TaskContext,
    acall_function,
    call_function,
    celery_errback_arguments,
)
from django_cloudtasks.exceptions import (
    NodeNotFound,
    NotRegistered,
    WrongTask,
    error_record,
)
from django_cloudtasks.models import Node
from django_cloudtasks.policy import (
    due_by,
    errback_arguments,
    inline_seconds,
    is_expired,
)
from django_cloudtasks.registry import Task, registry
from django_cloudtasks.runner.settle import Call, Inline, Outcome, fail, finish, soft_limit
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports import get_transport

logger = get_logger("django_cloudtasks.runner")


def deliver(
    node_id: NodeId,
    task_name: str | None = None,
    retries: int | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    early: bool = False,
) -> Outcome:
    """Run one delivery of node ``node_id``.

    Answers 200 when the delivery is settled (success, retry scheduled, failure
    recorded, or a duplicate of a finished node) and 409 when another delivery holds
    the node under a live lease or its time (countdown, ETA, retry backoff) has not
    come, so that Cloud Tasks tries again later. ``early`` runs a node before its time
    (the in-process transports, which do not wait for ETAs).

    Raises:
        NodeNotFound: when no node has that id.
        WrongTask: when ``task_name`` is not the node's task.
    """
    node = engine.claim(node_id, task_name, retries, timezone.now(), early=early)
    if node is None:
        return _unclaimed(node_id, task_name, retries)
    return _carry_on(node, headers or {}, _inline_run(node))


async def adeliver(
    node_id: NodeId,
    task_name: str | None = None,
    retries: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Outcome:
    """:func:`deliver` in an event loop (the async run endpoint under ASGI).

    The database work (claim, settle, each engine call) runs in a thread through
    ``sync_to_async``, as Django's async views must; an ``async def`` task is awaited
    in this loop between them, holding no thread, and a plain function runs in that
    thread too. Answers and raises as :func:`deliver` does.
    """
    node = await sync_to_async(engine.claim)(node_id, task_name, retries, timezone.now())
    if node is None:
        return await sync_to_async(_unclaimed)(node_id, task_name, retries)
    inline = _inline_run(node)
    outcome = last = await _astart(node, headers or {}, inline)
    trace = _trace_headers(headers or {})
    while True:
        while last.follow is not None:
            last = await _astart(last.follow, {}, inline)
        stolen = last.stolen or await sync_to_async(_steal_next)(node, inline, last)
        if stolen is None:
            return outcome
        last = await _astart(stolen, trace, inline)


@telemetry.attempt_async
async def _astart(node: Node, headers: Mapping[str, str], inline: Inline | None) -> Outcome:
    """:func:`_start` in an event loop."""
    call = await sync_to_async(_prepare)(node, headers, inline)
    if isinstance(call, Outcome):
        return call
    if call.is_async:
        value, error = await _ainvoke(call)
    else:
        value, error = await sync_to_async(_invoke)(call)
    return await sync_to_async(finish)(call, value, error)


def _inline_run(origin: Node) -> Inline | None:
    """The inline run a delivery of ``origin`` may make (see :func:`policy.inline_seconds`)."""
    budget = inline_seconds(
        origin.queue,
        origin.options.get("dispatch_deadline"),
        get_transport().delivers_in_process,
    )
    if budget <= 0:
        return None
    return Inline(origin.pk, time.monotonic() + budget, origin.queue)


def _carry_on(node: Node, headers: Mapping[str, str], inline: Inline | None) -> Outcome:
    """Run a claimed node, then each successor it claimed to run inline, then, while
    the budget lasts and a group join it counted on waits, queued members it steals."""
    outcome = last = _start(node, headers, inline)
    trace = _trace_headers(headers)
    while True:
        while last.follow is not None:
            last = _start(last.follow, {}, inline)
        stolen = last.stolen or _steal_next(node, inline, last)
        if stolen is None:
            return outcome
        last = _start(stolen, trace, inline)


def _trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace context of a delivery's ``headers``, for the members it steals: each
    continues the trace its own delivery would (a sibling of the stealing attempt)."""
    return {k: v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")}


def _steal_next(node: Node, inline: Inline | None, last: Outcome) -> Node | None:
    """The queued node of ``node``'s workflow the inline run takes next, if any.

    Only while the budget lasts and the last node settled counted on a group join that
    still waits: it looks under the last node stolen, first under that join (its
    members come before it), and not under ``node``, the one delivered (Cloud Tasks
    delivers a group's members from its start). Settling the last node may have tried
    the first window already (see :func:`engine.succeed`); the look goes on under it.
    """
    if inline is None or last.waiting is None or not inline.open():
        return None
    below = last.waiting if inline.below is None else min(inline.below, last.waiting)
    stolen = engine.steal(
        inline.origin, node.workflow_id, node.queue, below, node.index, looked=last.looked
    )
    if stolen is not None:
        inline.below = stolen.index
    return stolen


@telemetry.attempt
def _start(node: Node, headers: Mapping[str, str], inline: Inline | None) -> Outcome:
    """Run a claimed node: prepare its call, call its function, settle by what it did."""
    call = _prepare(node, headers, inline)
    if isinstance(call, Outcome):
        return call
    value, error = _invoke(call)
    return finish(call, value, error)


def _prepare(node: Node, headers: Mapping[str, str], inline: Inline | None) -> Outcome | Call:
    """Extend the node's lease and check its expiry, then prepare its call (or settle)."""
    now = node.started_at or timezone.now()
    engine.extend_lease(node, now)
    if is_expired(node.options.get("expires"), node.ready_at or node.created_at, now):
        engine.revoke_node(node.pk, expired=True, by_its_run=True)
        return Outcome(200, State.REVOKED, "expired")
    return _run(node, headers, inline)


def _unclaimed(node_id: NodeId, task_name: str | None, retries: int | None) -> Outcome:
    """Explain why a delivery could not take its node (off the hot path)."""
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        raise NodeNotFound(f"no node has the id {node_id}")
    if task_name is not None and task_name != node.task_name:
        raise WrongTask(f"node {node_id} runs {node.task_name!r}, not {task_name!r}")
    # A node run inline (a successor, or stolen) started no inline run of its own: what
    # its request ran is marked with that request's origin, so there is nothing to resume.
    if node.state == State.SUCCESS and node.children and node.inline_origin is None:
        return _resume(node)
    if node.state in READY_STATES:
        return Outcome(200, node.state, "already finished")
    if retries is not None and retries < node.retries:
        return Outcome(200, node.state, f"stale delivery of retry {retries}")
    due = node.due_at()
    if node.state in CLAIMABLE_STATES and due is not None and due > due_by(timezone.now()):
        return Outcome(409, node.state, f"not due until {due.isoformat()}; try later")
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
    node = engine.claim(
        stranded.pk, stranded.task_name, stranded.retries, timezone.now(), inline_origin=origin.pk
    )
    if node is None:
        return Outcome(409, origin.state, "a successor run inline is still running; try later")
    logger.warning(
        "taking over a successor whose inline run stopped",
        extra=telemetry.node_fields(node),
    )
    _carry_on(node, {}, _inline_run(origin))
    return Outcome(200, origin.state, "resumed its inline successors")


def _run(node: Node, headers: Mapping[str, str], inline: Inline | None = None) -> Outcome | Call:
    """Prepare a claimed node's call: its task, its arguments, the request it sees.

    A node whose task or arguments are wrong fails here, with the outcome returned.
    With ``inline``, the settled outcome may carry one successor, claimed in the same
    transaction, to run next in this request (see :func:`engine.succeed`).
    """
    attempt = node.attempts
    if node.options.get(REPLACED):
        engine.pass_on(node, attempt)
        signals.node_finished.send(Node, node=node, state=State.SUCCESS)
        return Outcome(200, State.SUCCESS, "the result of its replacement")
    try:
        task = registry.get(node.task_name)
    except NotRegistered as exc:
        return fail(node, error_record(exc, with_traceback=False), attempt)
    try:
        args, kwargs = _call_arguments(node, task)
    except TypeError as exc:
        return fail(node, error_record(exc, with_traceback=False), attempt)
    signals.node_started.send(Node, node=node)
    request = Request.for_node(node, attempt, args, kwargs, headers, _transport_name() == "eager")
    signals.task_prerun.send(task, task_id=request.id, task=task, args=args, kwargs=kwargs)
    context = TaskContext(task, request, engine.record_progress) if task.policy.bind else None
    return Call(node, task, request, args, kwargs, attempt, inline, context)


def _invoke(call: Call) -> tuple[Any, Exception | None]:
    """Call the task's function, outside any transaction: its value or its exception.

    An ``async def`` task is awaited (see :func:`context.call_function`).
    """
    try:
        value = call_function(
            call.task.__wrapped__,
            call.request,
            call.function_arguments(),
            call.kwargs,
            soft_limit(call.node, call.task),
        )
    except Exception as exc:
        return None, exc
    return value, None


async def _ainvoke(call: Call) -> tuple[Any, Exception | None]:
    """:func:`_invoke` of an ``async def`` task, awaited in this event loop."""
    try:
        value = await acall_function(
            call.task.__wrapped__,
            call.request,
            call.function_arguments(),
            call.kwargs,
            soft_limit(call.node, call.task),
        )
    except Exception as exc:
        return None, exc
    return value, None


def _transport_name() -> str:
    return get_transport().name


def _call_arguments(node: Node, task: Task) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs = node.call_arguments()
    if node.input_rule == InputRule.ERRBACK and isinstance(node.input, dict):
        args, kwargs = errback_arguments(
            task.call_signature(), args, kwargs, node.input, celery_errback_arguments(node.input)
        )
    try:
        task.call_signature().bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"wrong arguments for task {node.task_name!r}: {exc}") from None
    return args, kwargs


def report(node_id: NodeId, status: str, value: Any, error: Mapping[str, Any]) -> Outcome:
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
    claimed = engine.claim_reported(node)
    if claimed is None:
        return Outcome(409, node.state, "the node is not ready")
    node = claimed
    if status == "success":
        engine.succeed(node, value, node.attempts)
        return Outcome(200, State.SUCCESS)
    failure = {
        "type": str(error.get("type") or "Error"),
        "module": str(error.get("module") or ""),
        "message": str(error.get("message") or ""),
        "traceback": str(error.get("traceback") or ""),
    }
    return fail(node, failure, node.attempts)
