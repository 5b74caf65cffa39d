"""Stealing: an inline run takes a queued node of its workflow (see ``engine.steal``).

The node taken is the queued one of highest index in a window under a given index, so
that a request working down a group meets the deliveries Cloud Tasks makes from its
start as late as possible. Every plan of the statement reads at most that window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from django_cloudtasks.constants import NodeId, NodeKind, State, WorkflowId
from django_cloudtasks.models import Node, Workflow

#: How many indices under its start one :meth:`StealStatements.steal` looks at.
STEAL_WINDOW = 256

_QUEUED, _TASK = f"'{State.QUEUED.value}'", f"'{NodeKind.TASK.value}'"

#: True for a node :meth:`StealStatements.steal` may take; the queue, then the time,
#: are its parameters. The state is tested with ``IS TRUE`` so that no index on it
#: serves the query: the only key it can be read by is (workflow, index), which bounds
#: it to the window, where an index on (workflow, state) would read every queued node
#: of the workflow for each steal (as PostgreSQL chose with statistics older than a
#: large group).
STEALABLE = (
    f"(state = {_QUEUED}) IS TRUE AND kind = {_TASK} AND pending_parents <= 0 "
    "AND queue = %s AND flow_key = '' AND countdown <= 0 AND (eta IS NULL OR eta <= %s)"
)


class StealStatements:
    """The steal statement; the store of each database gives the dialect."""

    # From the store it is mixed into (``FlowStatements`` and ``Store``).
    skip_locked: Callable[[], str]
    _claimed: Callable[[str, Sequence[Any], str], Node | None]

    def steal(
        self,
        workflow_id: WorkflowId,
        queue: str,
        below: int,
        now: datetime,
        lease_until: datetime,
        origin: NodeId,
    ) -> Node | None:
        """Claim, for the inline run of ``origin``, a queued node of the workflow.

        The node taken is the one of highest index under ``below`` and at most
        :data:`STEAL_WINDOW` under it that is QUEUED (ready, and sent or being sent),
        due now, a plain task (no ``rate_limit`` or ``max_concurrency``) and on
        ``queue``. It is claimed as a delivery claims a node, under a lease until
        ``lease_until``, and marked with ``origin``. Returns None when that part of
        the workflow has no such node.
        """
        table = connection.ops.quote_name(Node._meta.db_table)
        moment = Node._meta.get_field("started_at")
        prep_pk = Node._meta.pk.get_db_prep_value  # type: ignore[union-attr]
        now_db = moment.get_db_prep_value(now, connection)
        wf_db = Workflow._meta.pk.get_db_prep_value(workflow_id, connection)  # type: ignore[union-attr]
        candidate, candidate_params = self.steal_candidate_sql(
            table, wf_db, queue, below, max(below - STEAL_WINDOW, 0), now_db
        )
        sql = (
            f"UPDATE {table} SET state = '{State.STARTED.value}', attempts = attempts + 1, "
            "started_at = %s, lease_until = %s, inline_origin = %s "
            f"WHERE id = ({candidate}) AND state = {_QUEUED}"
        )
        params = [
            now_db,
            moment.get_db_prep_value(lease_until, connection),
            prep_pk(origin, connection),
            *candidate_params,
        ]
        return self._claimed(sql, params, table)

    def steal_candidate_sql(
        self, table: str, wf_db: Any, queue: str, below: int, lowest: int, now_db: Any
    ) -> tuple[str, list[Any]]:
        """The query of the id :meth:`steal` takes: indices ``lowest`` to ``below - 1``,
        read backwards by the (workflow, index) key. Where rows can be locked, one
        another request is taking is passed over."""
        index = connection.ops.quote_name("index")
        return (
            f"SELECT id FROM {table} WHERE workflow_id = %s AND {index} < %s "
            f"AND {index} >= %s AND {STEALABLE} ORDER BY {index} DESC LIMIT 1" + self.skip_locked(),
            [wf_db, below, lowest, queue, now_db],
        )
