"""How far a workflow has got: its nodes counted by state, in one query.

The count is answered by the ``(workflow, state)`` index (``ct_node_workflow_state``)
with one ``GROUP BY state``: it reads one index entry per node and no node row, so it
costs the same whether the nodes carry large arguments and results or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count

from django_cloudtasks.constants import READY_STATES, State, WorkflowId
from django_cloudtasks.models import Node

#: The states a node is running in: claimed by a delivery, or waiting for its own retry.
RUNNING_STATES = frozenset({State.STARTED, State.RETRY})


@dataclass(frozen=True)
class Progress:
    """A workflow's nodes counted by state.

    ``total`` counts every node of the graph, group joins and error callbacks
    included; ``done`` those that reached a final state (SUCCESS, FAILURE, REVOKED).
    """

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many nodes the workflow has."""
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """How many nodes reached a final state."""
        return sum(n for state, n in self.counts.items() if state in READY_STATES)

    @property
    def running(self) -> int:
        """How many nodes are running or waiting for their own retry."""
        return sum(n for state, n in self.counts.items() if state in RUNNING_STATES)

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 for a workflow with no nodes)."""
        return self.done / self.total if self.total else 1.0

    def as_json(self) -> dict[str, Any]:
        """``{"done", "total", "running", "fraction", "counts"}``, every state present."""
        return {
            "done": self.done,
            "total": self.total,
            "running": self.running,
            "fraction": round(self.fraction, 4),
            "counts": {state: self.counts.get(state, 0) for state in State.values},
        }


def workflow_progress(workflow_id: WorkflowId) -> Progress:
    """The progress of workflow ``workflow_id``, in one query (no nodes for an unknown id)."""
    return Progress(counts_by_state(Node.objects.filter(workflow_id=workflow_id)))


def counts_by_state(nodes: Any) -> dict[str, int]:
    """``{state: count}`` of a node queryset, grouped in the database (``COUNT(*)``)."""
    rows = nodes.order_by().values_list("state").annotate(n=Count("*")).values_list("state", "n")
    return {str(state): n for state, n in rows}
