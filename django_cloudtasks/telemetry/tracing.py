"""Spans and trace context with the OpenTelemetry API (the ``otel`` extra).

The trace context travels as a W3C ``traceparent``: stored on the workflow, sent as
a header of every Cloud Task, handed to each in-process delivery. A node attempt is a
span whose parent is the span that made the node ready (the request that called
``apply_async()``, or the attempt of its parent node), so one workflow is one trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from django_cloudtasks.conf import conf
from django_cloudtasks.constants import State

if TYPE_CHECKING:
    from django_cloudtasks.models import Node

#: The library's tracer; it follows the tracer provider the application sets.
tracer = trace.get_tracer("django_cloudtasks")
_propagator = TraceContextTextMapPropagator()
#: The context of the attempt that claimed a successor to run inline, for that one.
_inline: ContextVar[tuple[Any, otel_context.Context] | None] = ContextVar(
    "django_cloudtasks_inline_parent", default=None
)

WORKFLOW_ID = "cloudtasks.workflow.id"
WORKFLOW_NAME = "cloudtasks.workflow.name"
NODE_ID = "cloudtasks.node.id"
NODE_INDEX = "cloudtasks.node.index"
NODE_PATH = "cloudtasks.node.path"
TASK_NAME = "cloudtasks.task.name"
ATTEMPT = "cloudtasks.attempt"
QUEUE = "cloudtasks.queue"
STATE = "cloudtasks.state"
ERROR_TYPE = "error.type"


def traceparent() -> str:
    """The ``traceparent`` of the current span, "" when there is no valid one."""
    if not trace.get_current_span().get_span_context().is_valid:
        return ""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def trace_ids() -> tuple[str, str, bool] | None:
    """The current span's ``(trace id, span id, sampled)`` in hex, or None."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return f"{found.trace_id:032x}", f"{found.span_id:016x}", found.trace_flags.sampled


def extract(value: str) -> otel_context.Context:
    """The context a ``traceparent`` header names (an empty one when it is malformed)."""
    return _propagator.extract({"traceparent": value}, context=otel_context.Context())


@contextlib.contextmanager
def continuing(value: str) -> Iterator[None]:
    """Run the block in the trace context ``value`` names."""
    token = otel_context.attach(extract(value))
    try:
        yield
    finally:
        otel_context.detach(token)


def header(headers: Mapping[str, str]) -> str:
    """The ``traceparent`` of a delivery's headers (Django title-cases their names)."""
    return headers.get("traceparent") or headers.get("Traceparent") or ""


def parent_of(node: Node, headers: Mapping[str, str]) -> otel_context.Context | None:
    """The context an attempt of ``node`` continues; None for the current one.

    A successor run inline continues the attempt that claimed it; a delivery in a
    live trace (an in-process transport, or a request span of the Django
    instrumentation) continues that; any other continues its ``traceparent`` header.
    """
    inline = _inline.get()
    if inline is not None and inline[0] == node.pk:
        return inline[1]
    if trace.get_current_span().get_span_context().is_valid:
        return None
    value = header(headers)
    return extract(value) if value else None


def start_attempt(node: Node, headers: Mapping[str, str]) -> tuple[trace.Span, object]:
    """Start the span of an attempt of ``node`` and make it current: ``(span, token)``."""
    parent = parent_of(node, headers)
    span = tracer.start_span(
        f"run {node.task_name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            WORKFLOW_ID: str(node.workflow_id),
            NODE_ID: str(node.pk),
            NODE_INDEX: node.index,
            NODE_PATH: node.path,
            TASK_NAME: node.task_name,
            ATTEMPT: node.attempts,
            QUEUE: node.queue or str(conf.QUEUE),
        },
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_attempt(
    span: trace.Span,
    token: object,
    state: str,
    error_type: str,
    follow: Node | None,
    exc: BaseException | None,
) -> None:
    """Record how the attempt ended on ``span``, end it and restore the context."""
    if state:
        span.set_attribute(STATE, state)
    if exc is not None:
        span.record_exception(exc)
        error_type = error_type or type(exc).__qualname__
    if error_type:
        span.set_attribute(ERROR_TYPE, error_type)
    if exc is not None or state == State.FAILURE:
        span.set_status(Status(StatusCode.ERROR, error_type or None))
    if follow is not None:
        _inline.set((follow.pk, trace.set_span_in_context(span)))
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]
