"""How a delivery ends: the outcome, and settling a node by what its function did.

Settling is one of three engine calls: :func:`~django_cloudtasks.engine.succeed`,
:func:`~django_cloudtasks.engine.schedule_retry` or
:func:`~django_cloudtasks.engine.record_failure`; nothing here writes otherwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from django_cloudtasks import engine, signals
from django_cloudtasks.constants import NodeId, State
from django_cloudtasks.context import (
    Request,
    TaskContext,
    is_async,
)
from django_cloudtasks.exceptions import (
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    Replace,
    Retry,
    error_record,
    rebuild_exception,
)
from django_cloudtasks.models import Node
from django_cloudtasks.policy import (
    backoff,
    check_retry,
    retry_limit,
)
from django_cloudtasks.registry import Task, registry
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.runner")


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended, as the run endpoint answers it."""

    status: int
    state: str
    detail: str = ""
    follow: Node | None = None  # a successor claimed to run next in the same request
    waiting: int | None = None  # a group join the node counted on that still waits
    stolen: Node | None = None  # a queued node stolen to run next (after ``follow``)
    looked: bool = False  # whether settling tried to steal one

    def as_json(self) -> dict[str, Any]:
        """The endpoint's JSON body."""
        data = {"state": self.state}
        if self.detail:
            data["detail"] = self.detail
        return data


@dataclass
class Inline:
    """An inline run: the delivered node it started from, and when it stops taking steps.

    ``queue`` is the delivered node's queue, ``below`` the index of the last node the
    run stole (see ``runner._steal_next``).
    """

    origin: NodeId
    until: float
    queue: str = ""
    below: int | None = None

    def open(self) -> bool:
        return time.monotonic() < self.until


@dataclass(frozen=True)
class Call:
    """A claimed node's call, prepared: what the function gets and what settling needs."""

    node: Node
    task: Task
    request: Request
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    inline: Inline | None
    context: TaskContext | None

    @property
    def is_async(self) -> bool:
        """True when the task is an ``async def`` function."""
        return is_async(self.task.__wrapped__)

    def function_arguments(self) -> tuple[Any, ...]:
        """The positional arguments of the function: a bound task's context first."""
        return (self.context, *self.args) if self.context is not None else tuple(self.args)


def finish(call: Call, value: Any, error: Exception | None) -> Outcome:
    """Settle the node by what its function did, then send ``task_postrun``."""
    outcome = _settle(call, value, error)
    if signals.task_postrun.has_listeners():
        retval = call.node.result if outcome.state == State.SUCCESS else None
        signals.task_postrun.send(
            call.task,
            task_id=call.request.id,
            task=call.task,
            args=call.args,
            kwargs=call.kwargs,
            retval=retval,
            state=outcome.state,
        )
    return outcome


def _settle(call: Call, value: Any, error: Exception | None) -> Outcome:
    """Record a success, a retry or a failure: the engine call the function's outcome asks for."""
    node, task, attempt, inline = call.node, call.task, call.attempt, call.inline
    if error is None:
        try:
            if call.context is not None and call.context.pending_retry is not None:
                raise call.context.pending_retry
            _check_result(value)
        except Exception as exc:
            error = exc
    if error is not None:
        return _settle_error(call, error)
    if task.policy.ignore_result and not node.children:
        value = None
    # The budget is checked once the step has run: a slow step takes no successor.
    origin = inline.origin if inline is not None and inline.open() else None
    steals = inline is not None and origin is not None and node.queue == inline.queue
    below = inline.below if inline is not None else None
    succeeded = engine.succeed(node, value, attempt, origin, steals=steals, below=below)
    if inline is not None and succeeded.stolen is not None:
        inline.below = succeeded.stolen.index
    node.result = value
    signals.node_finished.send(Node, node=node, state=State.SUCCESS)
    signals.task_success.send(task, result=value)
    return Outcome(
        200,
        State.SUCCESS,
        follow=succeeded.follow,
        waiting=succeeded.waiting,
        stolen=succeeded.stolen,
        looked=succeeded.looked,
    )


def _settle_error(call: Call, exc: Exception) -> Outcome:
    """Settle a node whose function raised ``exc``."""
    node, task, attempt, request = call.node, call.task, call.attempt, call.request
    if isinstance(exc, Retry):
        return _retry_or_fail(node, task, exc, exc.exc, attempt, request)
    if isinstance(exc, Replace):
        return _replace(node, exc, attempt)
    if isinstance(exc, Ignore):
        engine.revoke_node(node.pk, by_its_run=True)
        signals.node_finished.send(Node, node=node, state=State.REVOKED)
        return Outcome(200, State.REVOKED, "ignored")
    if isinstance(exc, Reject) or (isinstance(exc, TypeError) and _is_json_error(exc)):
        return fail(node, error_record(exc), attempt)
    if _autoretries(task, exc):
        return _retry_or_fail(node, task, _autoretry(task), exc, attempt, request)
    return fail(node, error_record(exc, expected=isinstance(exc, task.policy.throws)), attempt)


def _replace(node: Node, replaced: Replace, attempt: int) -> Outcome:
    """Store the canvas ``self.replace()`` named; a canvas that cannot run fails the node."""
    try:
        engine.replace(node, replaced.expression, attempt)
    except (NotRegistered, TypeError, ValueError) as exc:
        return fail(node, error_record(exc, with_traceback=False), attempt)
    return Outcome(200, State.PENDING, "replaced")


def soft_limit(node: Node, task: Task) -> float | None:
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


def _is_json_error(exc: TypeError) -> bool:
    return "JSON serializable" in str(exc)


def _check_result(value: Any) -> None:
    """Refuse a return value the database cannot store: not JSON, NaN or an infinity."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:  # NaN, an infinity, a reference cycle
        raise TypeError(f"the return value is not JSON serializable: {exc}") from None


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
        return fail(node, error_record(exc), attempt)
    countdown = retry.countdown if retry is not None and retry.countdown is not None else None
    if countdown is None:
        countdown = backoff(node.retries, task, options)
    try:
        check_retry(
            node.task_name, countdown, *((retry.call_args, retry.call_kwargs) if retry else ())
        )
    except (TypeError, ValueError) as problem:
        return fail(node, error_record(problem, with_traceback=False), attempt)
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


def fail(node: Node, error: dict[str, Any], attempt: int) -> Outcome:
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
