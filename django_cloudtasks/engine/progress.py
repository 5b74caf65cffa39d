"""What a running task reports about itself: ``self.update_state(state, meta)``."""

from __future__ import annotations

from typing import Any

from canvas.values import check_json
from django_cloudtasks.constants import NodeId, State
from django_cloudtasks.models import Node

#: The key under which a running node keeps its custom state in its result column.
PROGRESS_KEY = "__progress__"


def record_progress(node_id: NodeId | str, state: str, meta: Any) -> None:
    """Keep ``state`` and ``meta`` on a running node, for ``AsyncResult.state``/``.info``.

    The node's result column holds them while it runs (success overwrites them);
    nothing happens once the node is no longer STARTED.

    Raises:
        TypeError: when ``meta`` is not JSON data (NaN and the infinities included).
    """
    check_json(meta, "meta", " of update_state()")
    Node.objects.filter(pk=node_id, state=State.STARTED).update(
        result={PROGRESS_KEY: {"state": state, "meta": meta}}
    )


def progress_of(result: Any) -> tuple[str, Any] | None:
    """The ``(state, meta)`` a running node's result column holds, if any."""
    if isinstance(result, dict) and set(result) == {PROGRESS_KEY}:
        value = result[PROGRESS_KEY]
        return str(value.get("state")), value.get("meta")
    return None
