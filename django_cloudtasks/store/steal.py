"""Stealing: an inline run takes a queued node of its workflow (see ``engine.steal``).

The node taken is the queued one of highest index in a window under a given index, so
that a request working down a group meets the deliveries Cloud Tasks makes from its
start as late as possible. Every plan of the statement reads at most that window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from django_cloudtasks.constants import NodeId, NodeKind, State, WorkflowId
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.store.rows import NODE_FIELDS, node_columns, returned_node

#: How many indices under its start one :meth:`StealStatements.steal` looks at.
STEAL_WINDOW = 256

_QUEUED, _STARTED = f"'{State.QUEUED.value}'", f"'{State.STARTED.value}'"
_TASK, _BARRIER = f"'{NodeKind.TASK.value}'", f"'{NodeKind.BARRIER.value}'"

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


@dataclass(frozen=True)
class Steal:
    """Steal a queued node in the statement that records a node and advances it.

    Only when a group join the statement counted on still waits: the node taken is the
    one :meth:`StealStatements.steal` would take under that join, and under ``below``
    (the last node the inline run stole, if any), claimed under a lease of
    ``lease_seconds`` and marked with ``origin`` (as :class:`~.base.Take` claims).
    """

    queue: str
    below: int | None
    lease_seconds: float
    origin: NodeId


class StealStatements:
    """The steal statements; the store of each database gives the dialect."""

    # From the store it is mixed into (``FlowStatements`` and ``Store``).
    skip_locked: Callable[[], str]
    plain_children_sql: Callable[[str], str]
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
        sql, params = self.steal_sql(
            table, ("%s", [below]), workflow_id, queue, now, lease_until, origin
        )
        return self._claimed(sql, params, table)

    def steal_sql(
        self,
        table: str,
        below: tuple[str, list[Any]],
        workflow_id: WorkflowId,
        queue: str,
        now: datetime,
        lease_until: datetime,
        origin: NodeId,
    ) -> tuple[str, list[Any]]:
        """The update of :meth:`steal` up to its ``RETURNING``, ``below`` an SQL
        expression and its parameters (a parameter, or what a statement it is part of
        computed)."""
        moment = Node._meta.get_field("started_at")
        prep_pk = Node._meta.pk.get_db_prep_value  # type: ignore[union-attr]
        now_db = moment.get_db_prep_value(now, connection)
        wf_db = Workflow._meta.pk.get_db_prep_value(workflow_id, connection)  # type: ignore[union-attr]
        candidate, candidate_params = self.steal_candidate_sql(table, wf_db, queue, below, now_db)
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
        return sql, params

    def steal_candidate_sql(
        self, table: str, wf_db: Any, queue: str, below: tuple[str, list[Any]], now_db: Any
    ) -> tuple[str, list[Any]]:
        """The query of the id :meth:`steal` takes: the :data:`STEAL_WINDOW` indices
        under ``below``, read backwards by the (workflow, index) key. Where rows can be
        locked, one another request is taking is passed over."""
        index = connection.ops.quote_name("index")
        expression, params = below
        return (
            f"SELECT id FROM {table} WHERE workflow_id = %s AND {index} < {expression} "
            f"AND {index} >= {expression} - {STEAL_WINDOW} AND {STEALABLE} "
            f"ORDER BY {index} DESC LIMIT 1" + self.skip_locked(),
            [wf_db, *params, *params, queue, now_db],
        )

    def steal_after_sql(
        self, table: str, workflow_id: WorkflowId, now: datetime, steal: Steal
    ) -> tuple[str, list[Any]]:
        """The end of an advance statement that steals (see ``Store.advance``): its update,
        named ``advanced``, is closed as a ``WITH``, and the steal looks under the
        highest join among its rows that still waits (none, or a successor taken: the
        bound is NULL, and nothing is under it). Both are selected, the stolen node's
        columns (:meth:`split_stolen`) after the advance's."""
        index = connection.ops.quote_name("index")
        waiting = (
            f"LEAST(CAST(%s AS integer), (SELECT max(a.{index}) FROM advanced a "
            f"WHERE a.kind = {_BARRIER} AND a.pending_parents > 0 "
            f"AND NOT EXISTS (SELECT 1 FROM advanced t WHERE t.state = {_STARTED} "
            f"AND t.kind = {_TASK})))"
        )
        lease = now + timedelta(seconds=steal.lease_seconds)
        sql, params = self.steal_sql(
            table, (waiting, [steal.below]), workflow_id, steal.queue, now, lease, steal.origin
        )
        return (
            f"), stolen AS ({sql} RETURNING {node_columns(self.plain_children_sql(table))}) "
            "SELECT advanced.*, stolen.* FROM advanced LEFT JOIN stolen ON TRUE",
            params,
        )

    def split_stolen(
        self, raw: Sequence[Sequence[Any]], table: str
    ) -> tuple[list[Sequence[Any]], Node | None]:
        """The rows of an advance that stole, without the stolen node's columns, and
        that node (the same on every row), if one was stolen."""
        width = len(NODE_FIELDS) + (1 if self.plain_children_sql(table) else 0)
        stolen = returned_node(raw[0][-width:]) if raw and raw[0][-width] is not None else None
        return [r[:-width] for r in raw], stolen
