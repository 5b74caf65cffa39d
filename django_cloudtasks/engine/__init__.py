"""The engine: the only writer of node and workflow state.

Everything that moves a node or a workflow from one state to another is a function
here: :func:`persist` a canvas, :func:`claim` a node for a delivery (and
:func:`extend_lease`), :func:`succeed` (record and advance), :func:`schedule_retry`,
:func:`record_failure` (with its error callbacks), :func:`revoke_node` and
:func:`revoke_workflow`, :func:`replace` (``self.replace()``) and :func:`pass_on`,
:func:`retry_node`, the retry by hand that resumes a failed workflow, and
:func:`sweep_flow`, the sweeper's part of flow control, and :func:`purge` and
:func:`purge_expired`, retention's deletes of old finished workflows. The SQL they
run comes from :mod:`django_cloudtasks.store`.
"""

from __future__ import annotations

from django_cloudtasks.engine.advance import (
    Advanced,
    Succeeded,
    advance,
    claim,
    claim_reported,
    complete,
    extend_lease,
    finish_workflow,
    settle,
    succeed,
)
from django_cloudtasks.engine.failure import descendants, fail, record_failure, schedule_retry
from django_cloudtasks.engine.flow import FlowSweep, sweep_flow
from django_cloudtasks.engine.persist import Persisted, persist
from django_cloudtasks.engine.progress import progress_of, record_progress
from django_cloudtasks.engine.replace import pass_on, replace
from django_cloudtasks.engine.resume import RetryRefused, RetryReport, retry_node
from django_cloudtasks.engine.retention import Purged, purge, purge_expired, result_expires
from django_cloudtasks.engine.revoke import revoke_node, revoke_workflow
from django_cloudtasks.engine.steal import steal, unsent
from django_cloudtasks.store import Take

__all__ = [
    "Advanced",
    "FlowSweep",
    "Persisted",
    "Purged",
    "RetryRefused",
    "RetryReport",
    "Succeeded",
    "Take",
    "advance",
    "claim",
    "claim_reported",
    "complete",
    "descendants",
    "extend_lease",
    "fail",
    "finish_workflow",
    "pass_on",
    "persist",
    "progress_of",
    "purge",
    "purge_expired",
    "record_failure",
    "record_progress",
    "replace",
    "result_expires",
    "retry_node",
    "revoke_node",
    "revoke_workflow",
    "schedule_retry",
    "settle",
    "steal",
    "succeed",
    "sweep_flow",
    "unsent",
]
