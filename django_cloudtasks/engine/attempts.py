"""A node's attempt history: one entry per finished attempt, in ``Node.attempt_log``.

The entry is written by the statement that records the attempt's outcome (success,
retry, failure, replacement, revocation by its own run), never by a statement of its
own. An attempt whose run died unanswered (its lease expired and another delivery took
the node over) writes none. The log is computed from the node the delivery claimed:
that statement applies only while this attempt still holds the node, so nothing else
wrote the log since.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django_cloudtasks.models import Node

#: How many attempts a node keeps (the oldest go first).
MAX_ATTEMPTS_KEPT = 50
#: How much of an error message an entry keeps (the node's error column has it whole).
MAX_MESSAGE_CHARS = 1000
#: The outcome of an attempt that replaced its node by a canvas (``self.replace()``).
REPLACED = "REPLACED"


def attempt_entry(
    node: Node,
    outcome: str,
    now: datetime,
    error: Mapping[str, Any] | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """The log entry of ``node``'s current attempt, which ended at ``now`` with ``outcome``.

    ``outcome`` is SUCCESS, RETRY, FAILURE, REVOKED or :data:`REPLACED`; ``error`` is
    the error record of a retry or failure (its type and the start of its message are
    kept).
    """
    entry: dict[str, Any] = {
        "attempt": node.attempts,
        "retry": node.retries,
        "started_at": node.started_at.isoformat() if node.started_at else None,
        "finished_at": now.isoformat(),
        "outcome": outcome,
    }
    if error:
        entry["error_type"] = str(error.get("type") or "")[:200]
        entry["error_message"] = str(error.get("message") or "")[:MAX_MESSAGE_CHARS]
    if detail:
        entry["detail"] = detail
    return entry


def with_attempt(
    node: Node,
    outcome: str,
    now: datetime,
    error: Mapping[str, Any] | None = None,
    detail: str = "",
) -> list[dict[str, Any]]:
    """``node``'s attempt log with this attempt appended, kept to :data:`MAX_ATTEMPTS_KEPT`."""
    kept = list(node.attempt_log or ())[-(MAX_ATTEMPTS_KEPT - 1) :]
    return [*kept, attempt_entry(node, outcome, now, error, detail)]
