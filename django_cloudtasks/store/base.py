"""What every database's store does; :mod:`.postgresql` and :mod:`.sqlite` fill in SQL.

A store builds and runs the statements the ORM cannot express in one round trip:
claiming a node (and reading it back), advancing a node's children (and closing a
group join, and on PostgreSQL recording the parent's result in the same statement),
and inserting a whole canvas (see :mod:`.insert`). The engine decides what to change; the
store only says it in the database's dialect.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import connection, models

from canvas import InputRule
from django_cloudtasks.constants import CLAIMABLE_STATES, NodeId, NodeKind, State, WorkflowId
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.store.flow import FlowStatements
from django_cloudtasks.store.insert import BATCH_SIZE, Columns, batches, json_rows
from django_cloudtasks.store.retention import RetentionStatements
from django_cloudtasks.store.rows import (
    ADVANCE_COLUMNS,
    NODE_FIELDS,
    WHEN_READY,
    decode_row,
    node_columns,
    returned_node,
)
from django_cloudtasks.store.steal import Steal, StealStatements

T = TypeVar("T")

#: The most ids one statement lists in ``IN (...)`` (SQLite allows 32,766 parameters).
CHUNK_SIZE = 10_000


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most :data:`CHUNK_SIZE`, for ``IN (...)`` lists."""
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def sql_literal(value: State | NodeKind | InputRule) -> str:
    """A state, kind or input rule as an SQL string literal (``'SUCCESS'``)."""
    return f"'{value.value}'"


#: State, kind and input-rule literals the statements compare with.
SQL_SUCCESS, SQL_STARTED, SQL_PENDING, SQL_FAILURE = (
    sql_literal(s) for s in (State.SUCCESS, State.STARTED, State.PENDING, State.FAILURE)
)
SQL_SCHEDULED, SQL_QUEUED = sql_literal(State.SCHEDULED), sql_literal(State.QUEUED)
SQL_TASK, SQL_PREPEND = sql_literal(NodeKind.TASK), sql_literal(InputRule.PREPEND)


@dataclass(frozen=True)
class Take:
    """Claim one successor in the statement that advances it, to run it inline.

    ``index`` is the candidate child; it is taken only if it becomes ready, is due now
    and is on ``queue``. It is claimed as a delivery would claim it, under a lease of
    ``lease_seconds``, and marked with ``origin``, the node whose delivery runs it.
    """

    index: int
    queue: str
    lease_seconds: float
    origin: NodeId


@dataclass(frozen=True)
class Done:
    """Record the success of node ``node_id`` (attempt ``attempt``) with ``result``.

    ``attempt_log`` is the node's attempt history with this attempt's entry, written
    in the same statement.
    """

    node_id: NodeId
    attempt: int
    result: Any
    attempt_log: Sequence[Mapping[str, Any]] = ()


class Statement:
    """SQL text and its parameters, built in step."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        """Append ``sql`` and the parameters its placeholders take."""
        self.sql.append(sql)
        self.params.extend(params)


class Store(FlowStatements, RetentionStatements, StealStatements):
    """The raw statements of one database; subclasses give the dialect."""

    vendor = ""
    #: Whether :meth:`advance` can record the parent's success in the same statement.
    records_in_advance = False
    #: The rows of one statement of :meth:`insert_batches`.
    batch_size = BATCH_SIZE

    # -- dialect ----------------------------------------------------------------------

    def ids(self) -> str:
        """A subquery yielding the integers of one JSON-array parameter."""
        raise NotImplementedError

    def json_value(self) -> str:
        """A placeholder for a JSON-encoded parameter, as the column type."""
        raise NotImplementedError

    def among(self, column: str) -> str:
        """True when ``column`` is one of the integers of the parameter :meth:`id_list` gives."""
        return f"{column} IN {self.ids()}"

    def id_list(self, values: Iterable[int]) -> Any:
        """The parameter of :meth:`among`: a JSON array."""
        return json.dumps(list(values))

    def add_member_results(
        self, st: Statement, table: str, index: str, wf_db: Any, members: Sequence[int]
    ) -> None:
        """The list of the results of the nodes of indices ``members``, in index order."""
        raise NotImplementedError

    def add_done(self, st: Statement, table: str, now_db: Any, done: Done) -> None:
        """The head of a statement that first records ``done`` (see :attr:`records_in_advance`)."""
        raise NotImplementedError

    def insert_sql(self, table: str, fields: Sequence[models.Field[Any, Any]]) -> str:
        """``INSERT`` of every row of one JSON-array parameter."""
        raise NotImplementedError

    def due_sql(self) -> str:
        """True when ``ready_at`` plus ``countdown`` seconds is at or before the parameter."""
        raise NotImplementedError

    # -- claim ------------------------------------------------------------------------

    def claim(
        self,
        node_id: NodeId,
        task_name: str | None,
        retries: int | None,
        now: datetime,
        lease_until: datetime,
        inline_origin: NodeId | None = None,
        due_by: datetime | None = None,
    ) -> Node | None:
        """Take the node for a delivery in one statement that also reads it back.

        Only a ready node, or a STARTED one whose lease has expired or is missing, can
        be taken; the statement refuses a delivery for another task or for an earlier
        retry. With ``due_by``, it also refuses a node whose ETA, or readiness plus
        countdown, is later than that. Returns None when it took nothing (or
        ``node_id`` is not an id).
        """
        ops = connection.ops
        table = ops.quote_name(Node._meta.db_table)
        moment = Node._meta.get_field("started_at")
        try:
            pk = Node._meta.pk.get_db_prep_value(uuid.UUID(str(node_id)), connection)  # type: ignore[union-attr]
        except ValueError:
            return None
        now_db = moment.get_db_prep_value(now, connection)
        sql = (
            f"UPDATE {table} SET state = %s, attempts = attempts + 1, started_at = %s, "
            "lease_until = %s"
        )
        params: list[Any] = [
            State.STARTED,
            now_db,
            moment.get_db_prep_value(lease_until, connection),
        ]
        # A node's own delivery (no origin) clears the mark of an inline run it takes over.
        sql += ", inline_origin = %s"
        params.append(Node._meta.pk.get_db_prep_value(inline_origin, connection))  # type: ignore[union-attr]
        sql += (
            " WHERE id = %s AND pending_parents <= 0 AND (state IN (%s, %s, %s) "
            "OR (state = %s AND (lease_until IS NULL OR lease_until < %s)))"
        )
        params += [pk, *sorted(CLAIMABLE_STATES), State.STARTED, now_db]
        if due_by is not None:
            due_db = moment.get_db_prep_value(due_by, connection)
            sql += (
                " AND (eta IS NULL OR eta <= %s) "
                f"AND (countdown <= 0 OR ready_at IS NULL OR {self.due_sql()})"
            )
            params += [due_db, due_db]
        if task_name is not None:
            sql += " AND task_name = %s"
            params.append(task_name)
        if retries is not None:
            sql += " AND retries <= %s"
            params.append(retries)
        return self._claimed(sql, params, table)

    def _claimed(self, sql: str, params: Sequence[Any], table: str) -> Node | None:
        """Run a claim, ``sql`` up to its ``WHERE``, returning the node it took, if any."""
        sql += " RETURNING " + node_columns(self.plain_children_sql(table))
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        return None if row is None else returned_node(row)

    def plain_children_sql(self, table: str) -> str:
        """An expression the claim returns: are all the node's children plain tasks?

        "" (the default) returns nothing: see :func:`~.rows.has_plain_children`.
        """
        return ""

    # -- advance ----------------------------------------------------------------------

    def advance(
        self,
        workflow_id: WorkflowId,
        children: Sequence[int],
        value: Any,
        barrier: Mapping[str, Any] | None,
        now: datetime,
        done: Done | None = None,
        take: Take | None = None,
        steal: Steal | None = None,
    ) -> list[dict[str, Any]]:
        """One statement: count a finished parent on each child and hand it its input.

        Children that reach zero become QUEUED (or SCHEDULED, with a delay). With a
        ``barrier``, the same statement also completes that group join: its result, and
        its children's input, is the list of its members' results, read in place. With
        ``done`` (only where :attr:`records_in_advance`), it first records that node's
        success and advances nothing unless that applied. With ``take``, the candidate
        child is claimed (STARTED) instead of queued, and returned whole under
        ``"taken"``. With ``steal`` (only with ``done``), a queued node is claimed too
        when a join counted on still waits, and returned whole under ``"stolen"`` in
        the first row. A child already FAILURE is left as it is. Returns the
        :data:`~.rows.ADVANCE_COLUMNS` of every row updated.
        """
        assert steal is None or done is not None, "a steal goes with the record"
        qn = connection.ops.quote_name
        table, index = qn(Node._meta.db_table), qn("index")
        now_db = Node._meta.get_field("ready_at").get_db_prep_value(now, connection)
        wf_db = Workflow._meta.pk.get_db_prep_value(workflow_id, connection)  # type: ignore[union-attr]
        st = Statement()

        if barrier is None:
            is_barrier: tuple[Any, ...] = ("1 = 0",)
        else:
            is_barrier = ("id = %s", Node._meta.pk.get_db_prep_value(barrier["id"], connection))  # type: ignore[union-attr]

        def add_value() -> None:
            if (
                barrier is not None
                and barrier["input_rule"] == InputRule.LIST
                and barrier["parents"]
            ):
                self.add_member_results(st, table, index, wf_db, list(barrier["parents"]))
            else:
                encoded = json.dumps(value if barrier is None else [])
                st.add(self.json_value(), encoded)

        prep_pk = Node._meta.pk.get_db_prep_value  # type: ignore[union-attr]
        if done is not None:
            self.add_done(st, table, now_db, done)
        if steal is not None:
            st.add(", advanced AS (")

        def add_taken() -> None:
            assert take is not None
            st.add(
                f"({index} = %s AND pending_parents = 1 AND state = {SQL_PENDING} "
                f"AND kind = {SQL_TASK} AND countdown <= 0 AND (eta IS NULL OR eta <= %s) "
                "AND queue = %s AND flow_key = '')",
                take.index,
                now_db,
                take.queue,
            )

        st.add(f"UPDATE {table} SET pending_parents = CASE WHEN ")
        st.add(*is_barrier)
        st.add(" THEN pending_parents ELSE pending_parents - 1 END, input = CASE WHEN NOT (")
        st.add(*is_barrier)
        st.add(f") AND input_rule = {SQL_PREPEND} THEN ")
        add_value()
        st.add(" ELSE input END, ")
        if barrier is not None:
            st.add("result = CASE WHEN ")
            st.add(*is_barrier)
            st.add(" THEN ")
            add_value()
            st.add(" ELSE result END, finished_at = CASE WHEN ")
            st.add(*is_barrier)
            st.add(" THEN %s ELSE finished_at END, ", now_db)
        st.add("ready_at = CASE WHEN pending_parents = 1 OR ")
        st.add(*is_barrier)
        st.add(" THEN %s ELSE ready_at END, ", now_db)
        if take is not None:
            lease = Node._meta.get_field("lease_until").get_db_prep_value(
                now + timedelta(seconds=take.lease_seconds), connection
            )
            for column, then in (
                ("attempts", ("attempts + 1",)),
                ("started_at", ("%s", now_db)),
                ("lease_until", ("%s", lease)),
                ("inline_origin", ("%s", prep_pk(take.origin, connection))),
            ):
                st.add(f"{column} = CASE WHEN ")
                add_taken()
                st.add(f" THEN {then[0]} ELSE {column} END, ", *then[1:])
        st.add("state = CASE WHEN ")
        st.add(*is_barrier)
        st.add(f" THEN {SQL_SUCCESS} ")
        if take is not None:
            st.add("WHEN ")
            add_taken()
            st.add(f" THEN {SQL_STARTED} ")
        st.add(
            f"WHEN pending_parents = 1 AND state = {SQL_PENDING} AND kind = {SQL_TASK} "
            "THEN (CASE WHEN countdown > 0 OR (eta IS NOT NULL AND eta > %s) "
            f"THEN {SQL_SCHEDULED} ELSE {SQL_QUEUED} END) ELSE state END ",
            now_db,
        )
        # Without a join to close, no ``OR``: the rows are found by the (workflow, index)
        # key, not by reading the whole workflow (docs/performance.md says when a small
        # table without statistics still reads the workflow).
        st.add(f"WHERE workflow_id = %s AND ({self.among(index)}", wf_db, self.id_list(children))
        if barrier is not None:
            st.add(" OR ")
            st.add(*is_barrier)
        # A child already failed (another parent failed first) keeps its counter and its
        # input: only a retry by hand resets it, counting its parents afresh.
        st.add(f") AND state <> {SQL_FAILURE}")
        if done is not None:
            st.add(" AND EXISTS (SELECT 1 FROM done)")
        st.add(" RETURNING " + ", ".join(_returned(qn(c)) for c in ADVANCE_COLUMNS))
        if take is not None:
            # Only the taken row is STARTED once updated: a child still counting parents
            # cannot have been claimed. (No parameters here: psycopg caches the parsing of
            # statements with at most 50.)
            for f in NODE_FIELDS:
                st.add(f", CASE WHEN state = {SQL_STARTED} THEN {qn(str(f.column))} END")
            plain = self.plain_children_sql(table)
            if plain:
                st.add(f", CASE WHEN state = {SQL_STARTED} THEN {plain} END")
        if steal is not None:
            sql, params = self.steal_after_sql(table, workflow_id, now, steal)
            st.add(sql, *params)
        with connection.cursor() as cursor:
            cursor.execute("".join(st.sql), st.params)
            raw = cursor.fetchall()
        rows = []
        width = len(ADVANCE_COLUMNS)
        stolen = None
        if steal is not None:
            raw, stolen = self.split_stolen(raw, table)
        for r in raw:
            row = decode_row(r[:width])
            if take is not None and row["index"] == take.index and row["state"] == State.STARTED:
                row["taken"] = returned_node(r[width:])
            rows.append(row)
        if stolen is not None:
            rows[0]["stolen"] = stolen
        return rows

    # -- insert -----------------------------------------------------------------------

    def insert(self, model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (field values by attname, see :mod:`.insert`) as they are read.

        A database with a way to stream rows (PostgreSQL's ``COPY``, SQLite's
        ``executemany``) takes them all in one statement; otherwise
        :meth:`insert_batches` sends them. ``bulk_create`` is not used: it builds a model
        instance per row and splits its work by the database's parameter limit (999 on
        SQLite), so its query count grows with the number of rows.
        """
        self.insert_batches(model, rows)

    def insert_batches(self, model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert ``rows`` with one statement per :attr:`batch_size` rows, each taking
        them as one JSON document that the database unpacks."""
        columns = Columns(model)
        table = connection.ops.quote_name(model._meta.db_table)
        sql = self.insert_sql(table, columns.fields)
        with connection.cursor() as cursor:
            for batch in batches(columns.rows(rows), self.batch_size):
                cursor.execute(sql, [json_rows(columns.names, batch)])


def _returned(column: str) -> str:
    bare = column.strip('"`')
    if bare in WHEN_READY:
        return f"CASE WHEN pending_parents = 0 THEN {column} END"
    return column


def column(field: models.Field[Any, Any]) -> str:
    """The column name of ``field``."""
    return str(field.column)
