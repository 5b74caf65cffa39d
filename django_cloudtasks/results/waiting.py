"""Waiting for a result: polling the database, and saying what a node waits on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async

from django_cloudtasks.conf import conf
from django_cloudtasks.constants import READY_STATES, NodeKind, State, WorkflowStatus
from django_cloudtasks.context import current_request
from django_cloudtasks.dispatch import dispatch_for
from django_cloudtasks.exceptions import (
    TimeoutError,
)
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.transports import get_transport


def is_final(node: Node | None) -> bool:
    """True for a node in a final state (SUCCESS, FAILURE, REVOKED)."""
    return node is not None and node.state in READY_STATES


def has_finished(workflow: Workflow) -> bool:
    """True for a workflow that is no longer PENDING."""
    return workflow.status != WorkflowStatus.PENDING


def wait(
    fetch: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float | None,
    interval: float,
    describe: Callable[[Any], str] | None = None,
) -> Any:
    """Poll ``fetch()`` every ``interval`` seconds until ``done`` says yes; return the item.

    Raises:
        TimeoutError: after ``timeout`` seconds, saying what ``describe`` says of the item.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        item = fetch()
        if done(item):
            return item
        if deadline is not None and time.monotonic() >= deadline:
            raise _timed_out(timeout, describe(item) if describe is not None else "")
        time.sleep(interval)


async def await_final(
    fetch: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float | None,
    interval: float,
    describe: Callable[[Any], str] | None = None,
) -> Any:
    """:func:`wait` in an event loop: each read in a thread, the pauses asleep."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        item = await sync_to_async(fetch)()
        if done(item):
            return item
        if deadline is not None and time.monotonic() >= deadline:
            why = await sync_to_async(describe)(item) if describe is not None else ""
            raise _timed_out(timeout, why)
        await asyncio.sleep(interval)


def _timed_out(timeout: float | None, why: str) -> TimeoutError:
    message = f"the operation timed out after {timeout}s"
    return TimeoutError(f"{message}: {why}" if why else message)


def waiting_on(node: Node | None) -> str:
    """What a node that is not final is waiting on, in words, for a timeout's message."""
    if node is None:
        return "no node has this id yet"
    name = f"node {str(node.pk)[:8]} ({node.task_name or node.kind})"
    state = node.state
    if state == State.PENDING:
        if node.pending_parents:
            waiting = "members" if node.kind == NodeKind.BARRIER else "parents"
            return f"{name} is PENDING, waiting on {node.pending_parents} unfinished {waiting}"
        return (
            f"{name} is PENDING: ready, but its enqueue was lost (is the transport "
            "reachable?); `manage.py cloudtasks_sweep` sends it"
        )
    if state in (State.SCHEDULED, State.RETRY):
        due = node.due_at()
        when = f" until {due.isoformat(timespec='seconds')}" if due is not None else ""
        after = f" after {node.error_type}: {node.error_message[:200]}" if node.error_type else ""
        what = f"SCHEDULED{when}" if state == State.SCHEDULED else f"RETRY {node.retries}{when}"
        return f"{name} is {what}{after}"
    if state == State.STARTED:
        since = node.started_at.isoformat(timespec="seconds") if node.started_at else "?"
        return f"{name} is STARTED since {since} (attempt {node.attempts})"
    return f"{name} is QUEUED: sent, never delivered{_delivery_report(node)}"


def _delivery_report(node: Node) -> str:
    transport = get_transport()
    if transport.name == "memory":
        return "; the memory transport delivers when its drain() is called"
    report = transport.describe(dispatch_for(node))
    if report:
        return f"; {report}"
    return f"; is {conf.BASE_URL or 'BASE_URL'} reachable from Cloud Tasks (or the emulator)?"


def assert_will_not_block() -> None:
    """Refuse to wait inside a running task, but under the eager transport.

    Raises:
        RuntimeError: inside a task function (sync or async).
    """
    if current_request() is not None and get_transport().name != "eager":
        raise RuntimeError(
            "Never call result.get() within a task: it waits for a delivery that may "
            "need this very worker. Compose the work with | (a chain or a chord) instead."
        )
