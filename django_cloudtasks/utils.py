"""The original package's ``django_cloudtasks.utils`` names, kept for code written for it.

Only ``revoke_task`` and ``revoke_chain`` were meant for users; both revoke through the
engine, as ``AsyncResult.revoke()`` and ``WorkflowResult.revoke()`` do.
"""

from __future__ import annotations

import uuid
from typing import Any

from django_cloudtasks import engine
from django_cloudtasks.models import Node, Workflow

__all__ = ["revoke_chain", "revoke_task"]


def revoke_task(task_id: Any) -> bool:
    """Revoke the node ``task_id`` and everything downstream of it.

    ``task_id`` is a node id (``AsyncResult.id``, ``chain_mgr.last_task.id``). Returns
    True when the node exists (even if it had already finished), False otherwise, as
    the original did.
    """
    pk = _uuid(task_id)
    if pk is None or not Node.objects.filter(pk=pk).exists():
        return False
    engine.revoke_node(pk)
    return True


def revoke_chain(chain_id: Any) -> bool:
    """Revoke every unfinished node of the workflow ``chain_id``.

    ``chain_id`` is a workflow id (``chain_mgr.chain.id``, ``AsyncResult.workflow_id``).
    Returns True when the workflow exists, False otherwise, as the original did.
    """
    pk = _uuid(chain_id)
    if pk is None or not Workflow.objects.filter(pk=pk).exists():
        return False
    engine.revoke_workflow(pk)
    return True


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
