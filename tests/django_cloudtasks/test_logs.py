"""The Cloud Logging JSON formatter (the ``logs`` extra), its lines parsed back."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from opentelemetry import trace

from django_cloudtasks import telemetry
from django_cloudtasks.models import Node
from django_cloudtasks.telemetry import Telemetry
from django_cloudtasks.telemetry.logs import CloudLoggingFormatter
from tests.testapp.tasks import fail

pytestmark = pytest.mark.django_db(transaction=True)

tracer = trace.get_tracer("tests")


def test_a_line_logged_in_a_delivery_carries_its_trace_and_node_labels(spans, memory):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    logger = logging.getLogger("django_cloudtasks")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with tracer.start_as_current_span("request"):
            fail.delay(7)
        memory.drain()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    (failed,) = [r for r in records if r["message"].startswith("node failed")]
    node = Node.objects.get(task_name="fail")
    (run,) = [s for s in spans.get_finished_spans() if s.name == "run fail"]
    assert failed["severity"] == "INFO"
    assert failed["message"] == "node failed: ValueError: failing on purpose with [7]"
    assert failed["logging.googleapis.com/labels"] == {
        "workflow_id": str(node.workflow_id),
        "node_id": str(node.pk),
        "node_index": str(node.index),
        "task_name": "fail",
    }
    trace_id = f"{run.context.trace_id:032x}"
    assert failed["logging.googleapis.com/trace"] == f"projects/test-project/traces/{trace_id}"
    assert failed["logging.googleapis.com/spanId"] == f"{run.context.span_id:016x}"
    assert failed["logging.googleapis.com/trace_sampled"] is True
    assert failed["logging.googleapis.com/sourceLocation"]["function"] == "fail"
    assert "time" in failed
    assert "workflow_id" not in failed  # moved into the labels


def test_a_line_outside_any_delivery_or_trace_has_neither_labels_nor_trace():
    stream = io.StringIO()
    record = logging.LogRecord("app", logging.WARNING, __file__, 1, "disk %s full", ("/tmp",), None)
    stream.write(CloudLoggingFormatter().format(record))
    line = json.loads(stream.getvalue())
    assert line["severity"] == "WARNING"
    assert line["message"] == "disk /tmp full"
    assert "logging.googleapis.com/labels" not in line
    assert "logging.googleapis.com/trace" not in line


def test_an_exception_goes_to_stack_trace_and_extra_fields_stay(monkeypatch):
    monkeypatch.setattr(telemetry, "hooks", Telemetry())  # no OpenTelemetry
    try:
        raise KeyError("missing")
    except KeyError:
        record = logging.LogRecord(
            "app", logging.ERROR, __file__, 1, "lookup failed", (), exc_info=sys.exc_info()
        )
    record.order = 12
    line = json.loads(CloudLoggingFormatter(project="p").format(record))
    assert line["severity"] == "ERROR"
    assert "KeyError: 'missing'" in line["stack_trace"]
    assert line["order"] == 12
    assert "logging.googleapis.com/trace" not in line
