"""Traces and metrics of workflows, with an in-memory span exporter and metric reader."""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from django_cloudtasks import chord, group, runner, telemetry
from django_cloudtasks.constants import State
from django_cloudtasks.dispatch import sweep
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.telemetry import Telemetry
from django_cloudtasks.transports import get_transport
from tests.testapp.tasks import aadd, add, fail, flaky, tsum

pytestmark = pytest.mark.django_db(transaction=True)

tracer = trace.get_tracer("tests")


def runs(exporter):
    """The node attempts' spans, oldest first."""
    return [s for s in exporter.get_finished_spans() if s.name.startswith("run ")]


def by_id(exporter):
    return {s.context.span_id: s for s in exporter.get_finished_spans()}


def ancestors(span, spans_by_id):
    """The names of ``span``'s ancestors that were recorded, nearest first."""
    names = []
    while span.parent is not None and span.parent.span_id in spans_by_id:
        span = spans_by_id[span.parent.span_id]
        names.append(span.name)
    return names


def test_a_chain_is_one_trace_whose_steps_descend_from_the_request(spans, memory):
    with tracer.start_as_current_span("POST /orders/", kind=SpanKind.SERVER) as request:
        result = (add.s(1, 2) | add.s(3) | add.s(4)).delay()
    memory.drain()
    assert result.get(timeout=0) == 10
    found = by_id(spans)
    steps = runs(spans)
    assert [s.name for s in steps] == ["run add"] * 3
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {
        request.get_span_context().trace_id
    }
    assert ancestors(steps[-1], found) == ["run add", "run add", "apply_async", "POST /orders/"]


def test_the_workflow_keeps_the_traceparent_of_the_call_that_stored_it(spans, memory):
    with tracer.start_as_current_span("request") as request:
        result = add.delay(1, 1)
    workflow = Workflow.objects.get(pk=Node.objects.get(pk=result.id).workflow_id)
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert workflow.traceparent.startswith(f"00-{trace_id}-")
    assert len(workflow.traceparent) == 55
    assert memory.pending[0].traceparent == workflow.traceparent  # the apply_async span


def test_a_chord_body_descends_from_a_header_member_in_the_same_trace(spans, eager):
    with tracer.start_as_current_span("request") as request:
        result = chord([add.si(i, i) for i in range(3)], tsum.s()).delay()
    assert result.get(timeout=0) == 6
    found = by_id(spans)
    body = next(s for s in runs(spans) if s.name == "run tsum")
    assert body.context.trace_id == request.get_span_context().trace_id
    assert ancestors(body, found)[0] == "run add"
    assert ancestors(body, found)[-1] == "request"


def test_an_attempt_span_names_its_workflow_node_task_attempt_queue_and_state(spans, memory):
    result = group(add.si(1, 1), add.si(2, 2)).delay()
    memory.drain()
    node = Node.objects.filter(task_name="add").order_by("index").first()
    span = next(s for s in runs(spans) if s.attributes["cloudtasks.node.id"] == str(node.pk))
    assert span.kind == SpanKind.CONSUMER
    assert span.attributes["cloudtasks.workflow.id"] == str(node.workflow_id)
    assert span.attributes["cloudtasks.node.index"] == node.index
    assert span.attributes["cloudtasks.node.path"] == node.path
    assert span.attributes["cloudtasks.task.name"] == "add"
    assert span.attributes["cloudtasks.attempt"] == 1
    assert span.attributes["cloudtasks.queue"] == "default"
    assert span.attributes["cloudtasks.state"] == State.SUCCESS
    assert result.get(timeout=0) == [2, 4]


def test_a_failed_attempt_is_an_error_span_with_its_error_type(spans, memory):
    fail.delay(1)
    memory.drain()
    (span,) = runs(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes["cloudtasks.state"] == State.FAILURE


def test_each_retry_is_a_span_of_its_own_naming_the_error_that_retried_it(spans, memory):
    result = flaky.delay(2)
    memory.drain()
    assert result.get(timeout=0) == 2
    states = [
        (s.attributes["cloudtasks.state"], s.attributes.get("error.type")) for s in runs(spans)
    ]
    assert states == [
        (State.RETRY, "RuntimeError"),
        (State.RETRY, "RuntimeError"),
        (State.SUCCESS, None),
    ]
    assert [s.attributes["cloudtasks.attempt"] for s in runs(spans)] == [1, 2, 3]


def test_a_successor_run_inline_continues_the_attempt_that_ran_it(spans, memory, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": 5}  # a new transport
    with tracer.start_as_current_span("request"):
        (add.s(1, 1) | add.s(1) | add.s(1)).delay()
    assert get_transport().drain(limit=1) == 1
    first, second, third = runs(spans)
    assert second.parent.span_id == first.context.span_id
    assert third.parent.span_id == second.context.span_id


def test_database_statements_of_an_attempt_are_its_child_spans(spans, memory):
    add.delay(2, 3)
    raw = connection.connection
    instrumented = _instrument(raw)
    try:
        memory.drain()
    finally:
        _uninstrument(instrumented, raw)
    (run,) = runs(spans)
    children = [s for s in spans.get_finished_spans() if s.parent and s.parent == run.context]
    statements = [s.attributes.get("db.statement", "") for s in children]
    assert any(statement.startswith("UPDATE") for statement in statements)


def _instrument(raw):
    if connection.vendor == "postgresql":
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        return PsycopgInstrumentor.instrument_connection(raw)
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    connection.connection = SQLite3Instrumentor.instrument_connection(raw)
    return connection.connection


def _uninstrument(instrumented, raw):
    if connection.vendor == "postgresql":
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        PsycopgInstrumentor.uninstrument_connection(instrumented)
    else:
        connection.connection = raw


def test_with_the_django_instrumentation_an_attempt_is_a_child_of_its_run_request(
    spans, memory, client
):
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    with tracer.start_as_current_span("POST /orders/") as request:
        result = add.delay(2, 2)
    dispatch = memory.take()
    instrumentor = DjangoInstrumentor()
    instrumentor.instrument()
    try:
        response = client.post(
            f"/cloudtasks/run/{dispatch.task_name}/",
            data=json.dumps(dispatch.body()),
            content_type="application/json",
            headers={"Authorization": "Bearer test-token", "traceparent": dispatch.traceparent},
        )
    finally:
        instrumentor.uninstrument()
    assert response.status_code == 200
    assert result.get(timeout=0) == 4
    (run,) = runs(spans)
    server = by_id(spans)[run.parent.span_id]
    assert server.kind == SpanKind.SERVER
    assert server.attributes["http.route"] == "cloudtasks/run/<str:task_name>/"
    assert ancestors(run, by_id(spans))[1:] == ["apply_async", "POST /orders/"]
    assert run.context.trace_id == request.get_span_context().trace_id


def test_a_node_the_sweeper_resends_continues_its_workflows_trace(spans, memory):
    with tracer.start_as_current_span("request") as request:
        result = add.delay(2, 3)
    memory.clear()  # the dispatch never reached Cloud Tasks
    report = sweep(now=timezone.now() + timedelta(hours=1))
    assert report.resent == 1
    workflow = Workflow.objects.get()
    assert memory.pending[0].traceparent == workflow.traceparent
    memory.drain()
    assert result.get(timeout=0) == 5
    (run,) = runs(spans)
    assert run.context.trace_id == request.get_span_context().trace_id
    assert ancestors(run, by_id(spans)) == ["apply_async", "request"]


def test_an_async_task_delivered_to_the_async_endpoint_continues_its_traceparent(spans, memory):
    with tracer.start_as_current_span("request") as request:
        result = aadd.delay(1, 2)
    dispatch = memory.take()
    headers = {"Traceparent": dispatch.traceparent}  # as Django spells the header
    outcome = async_to_sync(runner.adeliver)(dispatch.node_id, "aadd", 0, headers)
    assert outcome.state == State.SUCCESS
    assert result.get(timeout=0) == 3
    (run,) = runs(spans)
    assert run.name == "run aadd"
    assert run.context.trace_id == request.get_span_context().trace_id
    assert ancestors(run, by_id(spans)) == ["apply_async", "request"]


def test_metrics_count_attempts_by_task_and_outcome(metrics, memory):
    flaky.delay(1)
    fail.delay(1)
    add.delay(1, 1)
    memory.drain()
    name = "cloudtasks.task.name"
    assert metrics.delta("cloudtasks.task.started", **{name: "flaky"}) == 2
    assert metrics.delta("cloudtasks.task.retried", **{name: "flaky"}) == 1
    assert metrics.delta("cloudtasks.task.succeeded", **{name: "flaky"}) == 1
    assert metrics.delta("cloudtasks.task.failed", **{name: "fail"}) == 1
    assert metrics.delta("cloudtasks.task.succeeded", **{name: "add"}) == 1
    assert metrics.delta("cloudtasks.task.duration", **{name: "add"}) == 1
    assert metrics.delta("cloudtasks.task.queue_latency", **{name: "add"}) == 1
    assert metrics.delta("cloudtasks.workflow.finished", **{"cloudtasks.state": "SUCCESS"}) == 2
    assert metrics.delta("cloudtasks.workflow.finished", **{"cloudtasks.state": "FAILURE"}) == 1


def test_without_the_otel_extra_workflows_run_and_record_no_trace(spans, memory, monkeypatch):
    for name in [n for n in sys.modules if n.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now fails
    for name in [n for n in sys.modules if n.startswith("django_cloudtasks.telemetry.")]:
        if name.rpartition(".")[2] in ("otel", "tracing", "metrics"):
            monkeypatch.delitem(sys.modules, name)
    hooks = telemetry.load()
    assert type(hooks) is Telemetry
    monkeypatch.setattr(telemetry, "hooks", hooks)
    with tracer.start_as_current_span("request"):
        result = (add.s(1, 2) | add.s(3)).delay()
    memory.drain()
    assert result.get(timeout=0) == 6
    assert Workflow.objects.get().traceparent == ""
    assert [d.traceparent for d in memory.sent] == ["", ""]
    assert runs(spans) == []


def test_library_log_lines_in_a_delivery_name_its_workflow_node_and_task(memory, caplog):
    fail.delay(1)
    with caplog.at_level(logging.INFO, logger="django_cloudtasks"):
        memory.drain()
    node = Node.objects.get(task_name="fail")
    (line,) = [r for r in caplog.records if r.getMessage().startswith("node failed")]
    assert line.workflow_id == str(node.workflow_id)
    assert line.node_index == node.index
    assert line.task_name == "fail"
    assert line.node_id == str(node.pk)


@pytest.mark.e2e
def test_over_cloud_tasks_a_chord_is_one_trace_from_the_request_to_its_body(spans, live_emulator):
    with tracer.start_as_current_span("POST /orders/", kind=SpanKind.SERVER) as request:
        result = chord([add.si(i, i) for i in range(3)], tsum.s()).delay()
    assert result.get(timeout=30) == 6
    assert live_emulator.wait_until_idle(timeout=10)  # every answer (and span) is done
    trace_id = request.get_span_context().trace_id
    delivered = [r for r in live_emulator.history if r.succeeded]
    assert len(delivered) == 3  # the body ran inline, in the request that closed the group
    assert all(r.headers["traceparent"].startswith(f"00-{trace_id:032x}-") for r in delivered)
    found = by_id(spans)
    body = next(s for s in runs(spans) if s.name == "run tsum")
    assert body.context.trace_id == trace_id
    assert ancestors(body, found) == ["run add", "apply_async", "POST /orders/"]
    assert {s.context.trace_id for s in runs(spans)} == {trace_id}
    assert len(runs(spans)) == 4
