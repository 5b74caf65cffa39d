"""The admin: workflows with their nodes and a picture of the DAG, nodes with their data.

Both models are read-only here (the engine owns every state change). What an operator
may do goes through actions and buttons on the detail pages: revoke workflows or
nodes, and retry a failed node so that its workflow continues from there. Those need
the model's *change* permission; looking needs *view*.
"""

from __future__ import annotations

from django_cloudtasks.admin.base import INLINE_NODES, MAX_LINKS, MAX_SHOWN_CHARS
from django_cloudtasks.admin.nodes import NodeAdmin
from django_cloudtasks.admin.workflows import NodeInline, WorkflowAdmin

__all__ = [
    "INLINE_NODES",
    "MAX_LINKS",
    "MAX_SHOWN_CHARS",
    "NodeAdmin",
    "NodeInline",
    "WorkflowAdmin",
]
