"""The admin: workflows with their nodes and a picture of the DAG, nodes with their data,
and the flow-control keys with their running and waiting nodes.

The models are read-only here (the engine owns every state change). What an operator
may do goes through actions and buttons on the detail pages: revoke workflows or
nodes, and retry a failed node so that its workflow continues from there. Those need
the model's *change* permission; looking needs *view*. Each revoke and retry is
recorded in the admin's history (a ``LogEntry`` naming the user) and logged on
``django_cloudtasks.admin``.
"""

from __future__ import annotations

from django_cloudtasks import admin_legacy  # noqa: F401 - registers the 1.x pages
from django_cloudtasks.admin.base import INLINE_NODES, MAX_LINKS, MAX_SHOWN_CHARS
from django_cloudtasks.admin.keys import FlowKeyAdmin
from django_cloudtasks.admin.nodes import NodeAdmin
from django_cloudtasks.admin.workflows import NodeInline, WorkflowAdmin
from django_cloudtasks.schedules import admin as schedules_admin  # noqa: F401 - the Schedules page

__all__ = [
    "INLINE_NODES",
    "MAX_LINKS",
    "MAX_SHOWN_CHARS",
    "FlowKeyAdmin",
    "NodeAdmin",
    "NodeInline",
    "WorkflowAdmin",
]
