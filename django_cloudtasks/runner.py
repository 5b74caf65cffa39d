"""One delivery: claim the node, call its function outside any transaction, settle.

Settling is one of three engine calls: :func:`~django_cloudtasks.engine.succeed`,
:func:`~django_cloudtasks.engine.schedule_retry` or
:func:`~django_cloudtasks.engine.record_failure`; the runner itself writes nothing.
Every transport ends here: the run endpoint for Cloud Tasks, and the eager and memory
transports in-process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from canvas import InputRule
from django_cloudtasks import engine, signals
from django_cloudtasks.conf import conf
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
    celery_errback_arguments,
    running,
    soft_time_limit,
)
from django_cloudtasks.exceptions import (
    Ignore,
    MaxRetriesExceededError,
    NodeNotFound,
    NotRegistered,
    Reject,
    Replace,
    Retry,
    WrongTask,
    error_record,
    rebuild_exception,
)
from django_cloudtasks.models import Node
from django_cloudtasks.policy import (
    backoff,
    check_retry,
    due_by,
    errback_arguments,
    is_expired,
    retry_limit,
)
from django_cloudtasks.registry import Task, registry
from django_cloudtasks.transports import get_transport

logger = logging.getLogger("django_cloudtasks.runner")


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

    origin: NodeId
    until: float

    def open(self) -> bool:
        return time.monotonic() < self.until


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
    return _carry_on(node, headers or {}, _inline_run(node.pk))


def _inline_run(origin: NodeId) -> _Inline | None:
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
    engine.extend_lease(node, now)
    if is_expired(node.options.get("expires"), node.ready_at or node.created_at, now):
        engine.revoke_node(node.pk, expired=True)
        return Outcome(200, State.REVOKED, "expired")
    return _run(node, headers, inline if inline is not None and inline.open() else None)


def _unclaimed(node_id: NodeId, task_name: str | None, retries: int | None) -> Outcome:
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
    node = engine.claim(stranded.pk, stranded.task_name, stranded.retries, timezone.now())
    if node is None:
        return Outcome(409, origin.state, "a successor run inline is still running; try later")
    logger.warning(
        "taking over a successor whose inline run stopped",
        extra={"workflow_id": str(origin.workflow_id), "node_id": str(node.pk)},
    )
    _carry_on(node, {}, _inline_run(origin.pk))
    return Outcome(200, origin.state, "resumed its inline successors")


def _run(node: Node, headers: Mapping[str, str], inline: _Inline | None = None) -> Outcome:
    """Run a claimed node and record its outcome.

    With ``inline``, the outcome may carry one successor, claimed in the same
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
        return _fail(node, error_record(exc, with_traceback=False), attempt)
    try:
        args, kwargs = _call_arguments(node, task)
    except TypeError as exc:
        return _fail(node, error_record(exc, with_traceback=False), attempt)
    signals.node_started.send(Node, node=node)
    request = Request.for_node(node, attempt, args, kwargs, headers, _transport_name() == "eager")
    signals.task_prerun.send(task, task_id=request.id, task=task, args=args, kwargs=kwargs)
    outcome = _call(node, task, request, args, kwargs, attempt, inline)
    if signals.task_postrun.has_listeners():
        value = node.result if outcome.state == State.SUCCESS else None
        signals.task_postrun.send(
            task,
            task_id=request.id,
            task=task,
            args=args,
            kwargs=kwargs,
            retval=value,
            state=outcome.state,
        )
    return outcome


def _call(
    node: Node,
    task: Task,
    request: Request,
    args: list[Any],
    kwargs: dict[str, Any],
    attempt: int,
    inline: _Inline | None,
) -> Outcome:
    """Call the task's function and settle the node by what it did."""
    context = TaskContext(task, request, engine.record_progress) if task.policy.bind else None
    try:
        with running(request), soft_time_limit(_soft_limit(node, task)):
            if context is not None:
                value = task.__wrapped__(context, *args, **kwargs)
            else:
                value = task.__wrapped__(*args, **kwargs)
        if context is not None and context.pending_retry is not None:
            raise context.pending_retry
        _check_result(value)
    except Retry as retry:
        return _retry_or_fail(node, task, retry, retry.exc, attempt, request)
    except Replace as replaced:
        return _replace(node, replaced, attempt)
    except Ignore:
        engine.revoke_node(node.pk)
        signals.node_finished.send(Node, node=node, state=State.REVOKED)
        return Outcome(200, State.REVOKED, "ignored")
    except Reject as exc:
        return _fail(node, error_record(exc), attempt)
    except Exception as exc:
        if isinstance(exc, TypeError) and _is_json_error(exc):
            return _fail(node, error_record(exc), attempt)
        if _autoretries(task, exc):
            return _retry_or_fail(node, task, _autoretry(task), exc, attempt, request)
        return _fail(node, error_record(exc, expected=isinstance(exc, task.policy.throws)), attempt)
    if task.policy.ignore_result and not node.children:
        value = None
    follow = engine.succeed(node, value, attempt, inline.origin if inline is not None else None)
    node.result = value
    signals.node_finished.send(Node, node=node, state=State.SUCCESS)
    signals.task_success.send(task, result=value)
    return Outcome(200, State.SUCCESS, follow=follow)


def _replace(node: Node, replaced: Replace, attempt: int) -> Outcome:
    """Store the canvas ``self.replace()`` named; a canvas that cannot run fails the node."""
    try:
        engine.replace(node, replaced.expression, attempt)
    except (NotRegistered, TypeError, ValueError) as exc:
        return _fail(node, error_record(exc, with_traceback=False), attempt)
    return Outcome(200, State.PENDING, "replaced")


def _soft_limit(node: Node, task: Task) -> float | None:
    """The node's own ``soft_time_limit`` option, else its task's."""
    limit = node.options.get("soft_time_limit")
    return float(limit) if limit else task.policy.soft_time_limit


def _autoretry(task: Task) -> Retry | None:
    """The retry ``retry_kwargs`` asks for on an ``autoretry_for`` exception."""
    options = task.policy.retry_kwargs
    if not options:
        return None
    return Retry(countdown=options.get("countdown"), max_retries=options.get("max_retries"))


def _autoretries(task: Task, exc: Exception) -> bool:
    policy = task.policy
    if not policy.autoretry_for or not isinstance(exc, policy.autoretry_for):
        return False
    return not (policy.dont_autoretry_for and isinstance(exc, policy.dont_autoretry_for))


def _transport_name() -> str:
    return get_transport().name


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
    if node.input_rule == InputRule.ERRBACK and isinstance(node.input, dict):
        args, kwargs = errback_arguments(
            task.call_signature(), args, kwargs, node.input, celery_errback_arguments(node.input)
        )
    try:
        task.call_signature().bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"wrong arguments for task {node.task_name!r}: {exc}") from None
    return args, kwargs


def _retry_or_fail(
    node: Node,
    task: Task,
    retry: Retry | None,
    exc: BaseException | None,
    attempt: int,
    request: Request,
) -> Outcome:
    """Schedule the retry ``self.retry()`` or ``autoretry_for`` asked for, or fail.

    Out of retries, the node fails with ``exc``, or with ``MaxRetriesExceededError``
    when ``self.retry()`` gave none (as in Celery).
    """
    options = node.options
    limit = retry_limit(retry.max_retries if retry is not None else None, options, task.policy)
    if limit is not None and node.retries >= limit:
        if exc is None:
            exc = MaxRetriesExceededError(
                f"Can't retry {node.task_name}[{node.pk}] args:{list(node.args)} "
                f"kwargs:{dict(node.kwargs)}"
            )
        return _fail(node, error_record(exc), attempt)
    countdown = retry.countdown if retry is not None and retry.countdown is not None else None
    if countdown is None:
        countdown = backoff(node.retries, task, options)
    try:
        check_retry(
            node.task_name, countdown, *((retry.call_args, retry.call_kwargs) if retry else ())
        )
    except (TypeError, ValueError) as problem:
        return _fail(node, error_record(problem, with_traceback=False), attempt)
    changes: dict[str, Any] = {}
    if retry is not None:
        if retry.call_args is not None:
            changes["args"] = list(retry.call_args)
        if retry.call_kwargs is not None:
            changes["kwargs"] = dict(retry.call_kwargs)
        if retry.queue:
            changes["queue"] = retry.queue
    reason = exc if exc is not None else retry
    assert reason is not None
    error = error_record(reason)
    engine.schedule_retry(node, countdown, error, attempt, changes)
    signals.node_finished.send(Node, node=node, state=State.RETRY)
    signals.task_retry.send(task, request=request, reason=reason, einfo=error["traceback"])
    return Outcome(200, State.RETRY, f"retry {node.retries} in {countdown:.3g}s")


def _fail(node: Node, error: dict[str, Any], attempt: int) -> Outcome:
    engine.record_failure(node, error, attempt)
    signals.node_finished.send(Node, node=node, state=State.FAILURE)
    if signals.task_failure.has_listeners():
        args, kwargs = node.call_arguments()
        signals.task_failure.send(
            registry.get(node.task_name) if node.task_name in registry else node.task_name,
            task_id=str(node.pk),
            exception=rebuild_exception(error["type"], error["message"], error["module"]),
            args=args,
            kwargs=kwargs,
            traceback=error["traceback"],
            einfo=error["traceback"],
        )
    logger.info(
        "node failed: %s: %s",
        error["type"],
        error["message"],
        extra={"workflow_id": str(node.workflow_id), "node_id": str(node.pk)},
    )
    return Outcome(200, State.FAILURE, f"{error['type']}: {error['message']}")


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
    return _fail(node, failure, node.attempts)
