"""The statements of retention: deleting finished workflows with everything they own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection

from django_cloudtasks.constants import WorkflowId, WorkflowStatus
from django_cloudtasks.models import Node, ScheduleRun, Workflow


@dataclass(frozen=True)
class Deleted:
    """Rows one :meth:`RetentionStatements.delete_finished` removed."""

    workflows: int = 0
    nodes: int = 0
    schedule_runs: int = 0


class RetentionStatements:
    """Deletes in three statements what the ORM's ``delete()`` would first read back.

    ``Workflow.objects.filter(...).delete()`` collects every node into memory (a node
    can own error callbacks, so nodes cannot be fast-deleted), which for workflows of
    10,000 nodes means millions of objects; these statements delete by workflow id.
    Django's ``pre_delete``/``post_delete`` signals are not sent for these rows.
    """

    def delete_finished(self, ids: Sequence[WorkflowId]) -> Deleted:
        """Delete the workflows ``ids`` that are still finished, their nodes and schedule runs.

        A workflow re-opened since it was chosen (a failed node retried by hand) is
        left alone with all its rows. Call inside a transaction; at most
        :data:`~django_cloudtasks.store.base.CHUNK_SIZE` ids.
        """
        if not ids:
            return Deleted()
        qn = connection.ops.quote_name
        pk = Workflow._meta.pk
        assert pk is not None
        params = [pk.get_db_prep_value(i, connection) for i in ids]
        marks = ", ".join(["%s"] * len(params))
        workflows, nodes, runs = (qn(m._meta.db_table) for m in (Workflow, Node, ScheduleRun))
        # Re-filtered on the status in each statement: the selection ran before the lock.
        finished = (
            f"SELECT id FROM {workflows} WHERE id IN ({marks}) "
            f"AND status <> '{WorkflowStatus.PENDING.value}'"
        )
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {runs} WHERE workflow_id IN ({finished})", params)
            deleted_runs = cursor.rowcount
            cursor.execute(f"DELETE FROM {nodes} WHERE workflow_id IN ({finished})", params)
            deleted_nodes = cursor.rowcount
            cursor.execute(
                f"DELETE FROM {workflows} WHERE id IN ({marks}) "
                f"AND status <> '{WorkflowStatus.PENDING.value}'",
                params,
            )
            deleted_workflows = cursor.rowcount
        return Deleted(deleted_workflows, deleted_nodes, deleted_runs)
