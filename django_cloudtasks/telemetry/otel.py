"""The hooks of :mod:`django_cloudtasks.telemetry` with OpenTelemetry.

Importing this module fails without ``opentelemetry-api`` (the ``otel`` extra);
:func:`django_cloudtasks.telemetry.load` then falls back to the hooks that do nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from django_cloudtasks import signals
from django_cloudtasks.conf import conf
from django_cloudtasks.telemetry import tracing
from django_cloudtasks.telemetry.base import Submission, Telemetry
from django_cloudtasks.telemetry.metrics import Instruments, waited
from django_cloudtasks.telemetry.scope import Scope, current

if TYPE_CHECKING:
    from django_cloudtasks.models import Node

D = TypeVar("D")  # a transports.base.Dispatch (a layer above this package)


class _Submission(Submission):
    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def created(self, workflow_id: str, name: str) -> None:
        self.span.set_attribute(tracing.WORKFLOW_ID, workflow_id)
        self.span.set_attribute(tracing.WORKFLOW_NAME, name)


class Attempt(Scope):
    """:class:`Scope` with the attempt's span and its metrics."""

    __slots__ = ("_span", "_started", "_token_otel", "instruments")

    def __init__(self, node: Node, headers: Mapping[str, str], instruments: Instruments) -> None:
        super().__init__(node, headers)
        self.instruments = instruments

    def __enter__(self) -> Attempt:
        super().__enter__()
        node = self.delivery.node
        self._span, self._token_otel = tracing.start_attempt(node, self.headers)
        latency = waited(node.started_at, node.due_at() or node.ready_at or node.created_at)
        self.instruments.attempt_started(node.task_name, node.queue or str(conf.QUEUE), latency)
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        seconds = time.perf_counter() - self._started
        node, outcome = self.delivery.node, self.outcome
        state = outcome.state if outcome is not None else ""
        follow = outcome.follow if outcome is not None else None
        tracing.end_attempt(
            self._span, self._token_otel, state, self.delivery.error_type, follow, exc
        )
        self.instruments.attempt_ended(
            node.task_name, node.queue or str(conf.QUEUE), state, seconds
        )
        super().__exit__(exc_type, exc, tb)


class OpenTelemetry(Telemetry):
    """Spans, trace context and metrics through the OpenTelemetry API."""

    enabled = True

    def __init__(self) -> None:
        self.instruments = Instruments()

    def traceparent(self) -> str:
        return tracing.traceparent()

    def trace_ids(self) -> tuple[str, str, bool] | None:
        return tracing.trace_ids()

    def stamp(self, dispatches: list[D]) -> list[D]:
        value = tracing.traceparent()
        if not value:
            return dispatches
        sent: list[Any] = dispatches  # Dispatch values (transports, a layer above)
        return [d if d.traceparent else replace(d, traceparent=value) for d in sent]

    def continuing(self, traceparent: str) -> contextlib.AbstractContextManager[object]:
        return tracing.continuing(traceparent) if traceparent else contextlib.nullcontext()

    @contextlib.contextmanager
    def submitting(self) -> Iterator[Submission]:  # type: ignore[override]
        with tracing.tracer.start_as_current_span("apply_async", kind=SpanKind.PRODUCER) as span:
            yield _Submission(span)

    def attempt(self, node: Node, headers: Mapping[str, str]) -> Scope:
        return Attempt(node, headers, self.instruments)

    def install(self) -> None:
        signals.workflow_finished.connect(
            self._workflow_finished, dispatch_uid="django_cloudtasks.telemetry.workflows"
        )
        signals.node_failed.connect(_node_failed, dispatch_uid="django_cloudtasks.telemetry.failed")
        signals.task_retry.connect(_task_retried, dispatch_uid="django_cloudtasks.telemetry.retry")

    def _workflow_finished(self, sender: Any, status: str, **kwargs: Any) -> None:
        self.instruments.workflow_finished(status)


def _node_failed(sender: Any, node: Node, error: Mapping[str, Any], **kwargs: Any) -> None:
    delivery = current()
    if delivery is not None and delivery.node.pk == node.pk:
        delivery.error_type = str(error.get("type") or "")


def _task_retried(sender: Any, reason: Any = None, **kwargs: Any) -> None:
    delivery = current()
    if delivery is not None and reason is not None:
        delivery.error_type = type(reason).__qualname__
