"""OpenTelemetry for tests: one tracer and one meter provider for the whole run.

A process has one global provider of each, set on first use. Spans reach a test's
in-memory exporter only while that test's ``spans`` fixture is open; metrics are read
as the change since the test began (``metrics.delta(name, **attributes)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _Switch(SpanProcessor):
    """Hands finished spans to the open test's processor, if one is open."""

    target: SpanProcessor | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)


_switch = _Switch()
_reader = InMemoryMetricReader()


def _install() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_switch)
        trace.set_tracer_provider(provider)
    if not isinstance(otel_metrics.get_meter_provider(), MeterProvider):
        otel_metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test, in an in-memory exporter."""
    _install()
    exporter = InMemorySpanExporter()
    _switch.target = SimpleSpanProcessor(exporter)
    yield exporter
    _switch.target = None


class Metrics:
    """Reads the instruments' points from the in-memory reader."""

    def __init__(self) -> None:
        self._start = self._points()

    @staticmethod
    def _points() -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        found: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        data = _reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset(point.attributes.items()))
                        found[key] = point
        return found

    def delta(self, name: str, **attributes: Any) -> float:
        """How much counter ``name`` grew (or histogram ``name`` counted) since the start,
        summed over the points whose attributes include ``attributes``."""
        wanted = set(attributes.items())
        total = 0.0
        for (metric, attrs), point in self._points().items():
            if metric != name or not wanted <= set(attrs):
                continue
            before = self._start.get((metric, attrs))
            total += _value(point) - (_value(before) if before is not None else 0)
        return total

    def sums(self, name: str, **attributes: Any) -> float:
        """The sum a histogram ``name`` recorded since the start."""
        wanted = set(attributes.items())
        total = 0.0
        for (metric, attrs), point in self._points().items():
            if metric == name and wanted <= set(attrs):
                before = self._start.get((metric, attrs))
                total += point.sum - (before.sum if before is not None else 0)
        return total


def _value(point: Any) -> float:
    return float(point.value) if hasattr(point, "value") else float(point.count)


@pytest.fixture
def metrics() -> Metrics:
    """The library's metrics, read as their change since the test began."""
    _install()
    return Metrics()
