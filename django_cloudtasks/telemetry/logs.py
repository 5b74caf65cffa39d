"""A JSON log formatter whose lines Cloud Logging reads as structured entries.

Needs the ``logs`` extra (python-json-logger). Point a handler of ``LOGGING`` at it::

    "formatters": {"cloud": {"()": "django_cloudtasks.telemetry.logs.CloudLoggingFormatter"}}

Each line is one JSON object with ``severity``, ``message``, ``time``,
``logging.googleapis.com/sourceLocation``, the current trace
(``logging.googleapis.com/trace``, ``spanId``, ``trace_sampled``) when there is one,
and ``logging.googleapis.com/labels`` naming the workflow, node and task of the
delivery the line was logged in. Other ``extra=`` fields stay top-level.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from django_cloudtasks import telemetry
from django_cloudtasks.conf import conf
from django_cloudtasks.telemetry.scope import FIELDS, current

TRACE = "logging.googleapis.com/trace"
SPAN_ID = "logging.googleapis.com/spanId"
SAMPLED = "logging.googleapis.com/trace_sampled"
LABELS = "logging.googleapis.com/labels"
SOURCE = "logging.googleapis.com/sourceLocation"


class CloudLoggingFormatter(JsonFormatter):
    """python-json-logger's ``JsonFormatter`` speaking Cloud Logging's special fields.

    ``project`` names the Google Cloud project of the trace ids (default: the
    ``PROJECT`` setting, then ``GOOGLE_CLOUD_PROJECT``); other arguments are
    ``JsonFormatter``'s.
    """

    def __init__(self, *args: Any, project: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", "time")
        super().__init__(*args, **kwargs)
        self.project = project

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """Add Cloud Logging's fields to what ``JsonFormatter`` extracts."""
        super().add_fields(log_data, record, message_dict)
        log_data["severity"] = record.levelname
        log_data.setdefault("message", record.getMessage())
        log_data.setdefault("logger", record.name)
        if "exc_info" in log_data:  # where Error Reporting looks for a stack trace
            log_data["stack_trace"] = log_data.pop("exc_info")
        log_data[SOURCE] = {
            "file": record.pathname,
            "line": str(record.lineno),
            "function": record.funcName,
        }
        labels = self._labels(log_data, record)
        if labels:
            log_data[LABELS] = labels
        ids = telemetry.hooks.trace_ids()
        if ids is not None:
            trace_id, span_id, sampled = ids
            project = self.project or conf.PROJECT or os.environ.get("GOOGLE_CLOUD_PROJECT")
            log_data[TRACE] = f"projects/{project}/traces/{trace_id}" if project else trace_id
            log_data[SPAN_ID] = span_id
            log_data[SAMPLED] = sampled

    def _labels(self, log_data: dict[str, Any], record: logging.LogRecord) -> dict[str, str]:
        """The delivery's ids, as string labels: the record's own, else the current ones."""
        delivery = current()
        labels = {}
        for name in FIELDS:
            value = log_data.pop(name, None)
            if value in (None, "") and delivery is not None:
                value = getattr(delivery, name)
            if value not in (None, ""):
                labels[name] = str(value)
        return labels
