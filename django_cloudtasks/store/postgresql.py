"""The PostgreSQL store: JSON parameters unpacked with ``jsonb`` functions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models

from django_cloudtasks.models import Node
from django_cloudtasks.store.base import (
    SQL_QUEUED,
    SQL_SCHEDULED,
    SQL_STARTED,
    SQL_SUCCESS,
    SQL_TASK,
    Done,
    Statement,
    Store,
    column,
)
from django_cloudtasks.store.insert import Columns, run_logged


class PostgresStore(Store):
    """Records a node's success in the statement that advances its children."""

    vendor = "postgresql"
    records_in_advance = True

    #: The key's statement also takes the waiters it hands slots to out of line.
    promotes_with_slots = True
    #: A pace also writes the paced nodes' ETAs.
    paces_nodes = True

    def _pace_nodes_sql(
        self, sql: str, count: int, step: float, now: datetime, node_ids: Sequence[Any]
    ) -> tuple[str, list[Any]]:
        """The pace's upsert, then each node's start as its ETA (SCHEDULED when later)."""
        table = connection.ops.quote_name(Node._meta.db_table)
        start = f"to_timestamp(k.next_start - ({int(count)} - o.pos + 1) * {float(step)!r})"
        now_db = Node._meta.get_field("eta").get_db_prep_value(now, connection)
        paced = (
            f"UPDATE {table} AS n SET eta = GREATEST(n.eta, {start}), state = CASE WHEN "
            f"n.state IN ({SQL_QUEUED}, {SQL_SCHEDULED}) THEN {SQL_SCHEDULED} ELSE n.state END "
            "FROM k, (SELECT CAST(e.value AS uuid) AS id, e.pos FROM "
            "jsonb_array_elements_text(CAST(%s AS jsonb)) WITH ORDINALITY AS e(value, pos)) o "
            f"WHERE n.id = o.id AND {start} > %s RETURNING 1"
        )
        return (
            f"WITH k AS ({sql}), paced AS ({paced}) SELECT next_start FROM k",
            [json.dumps([str(i) for i in node_ids]), now_db],
        )

    def least(self) -> str:
        """``LEAST``."""
        return "LEAST"

    def greatest(self) -> str:
        """``GREATEST``."""
        return "GREATEST"

    def skip_locked(self) -> str:
        """``FOR UPDATE SKIP LOCKED``: a node being revoked is passed over, not waited for."""
        return " FOR UPDATE SKIP LOCKED"

    def ids(self) -> str:
        """``jsonb_array_elements_text`` of the parameter, as integers."""
        return "(SELECT CAST(jsonb_array_elements_text(CAST(%s AS jsonb)) AS integer))"

    def among(self, column: str) -> str:
        """``column = ANY(CAST(%s AS integer[]))``: an index condition, whatever the plan.

        (``IN (SELECT ...)`` beside an ``OR`` is a filter, and with a subquery the planner
        cannot tell how many rows it yields: the advance statement could read every node
        of the workflow for each finished member.)
        """
        return f"{column} = ANY(CAST(%s AS integer[]))"

    def id_list(self, values: Iterable[int]) -> Any:
        """A PostgreSQL array literal of ``values``."""
        return "{" + ",".join(str(int(v)) for v in values) + "}"

    def json_value(self) -> str:
        """The parameter cast to ``jsonb``."""
        return "CAST(%s AS jsonb)"

    def add_member_results(
        self, st: Statement, table: str, index: str, wf_db: Any, members: Sequence[int]
    ) -> None:
        """``jsonb_agg`` of the members' results, in index order (``[]`` for none).

        The members are found by the (workflow, index) key (``= ANY`` of an array), not
        by ``IN (SELECT ...)``, which let a new table's plan read the whole workflow.
        """
        st.add(
            "(SELECT COALESCE(jsonb_agg(p.result ORDER BY p."
            f"{index}), CAST('[]' AS jsonb)) FROM {table} p "
            f"WHERE p.workflow_id = %s AND {self.among('p.' + index)})",
            wf_db,
            self.id_list(members),
        )

    def add_done(self, st: Statement, table: str, now_db: Any, done: Done) -> None:
        """A ``WITH done AS (UPDATE ... RETURNING id)`` that records the success."""
        st.add(
            f"WITH done AS (UPDATE {table} SET state = {SQL_SUCCESS}, result = CAST(%s AS jsonb), "
            "finished_at = %s, lease_until = NULL, attempt_log = CAST(%s AS jsonb) "
            f"WHERE id = %s AND state = {SQL_STARTED} AND attempts = %s RETURNING id) ",
            json.dumps(done.result),
            now_db,
            json.dumps(done.attempt_log),
            Node._meta.pk.get_db_prep_value(done.node_id, connection),  # type: ignore[union-attr]
            done.attempt,
        )

    def plain_children_sql(self, table: str) -> str:
        """True when no child of the claimed node is a join, an errback or limited.

        Each child is looked up on its own by the (workflow, index) key, a scalar subquery
        per child, so the lookup is a unique-index probe whatever the planner's statistics
        say. (With ``IN (SELECT ...)`` or ``= ANY(ARRAY(...))`` over the children, a new
        table with no statistics yet had it read every node of the workflow for each
        claim, and a group's claims grew with its size.) The ``ORDER BY ... LIMIT 1``
        of a lookup that finds one row at most is for the planner: only the key gives
        that order, so a small table without statistics no longer ties it with the
        ``(workflow, state)`` index, read by its workflow alone.
        """
        qn = connection.ops.quote_name
        return (
            f"NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text({table}.children) AS e(v) "
            f"WHERE (SELECT c.kind <> {SQL_TASK} OR c.flow_key <> '' FROM {table} c "
            f"WHERE c.workflow_id = {table}.workflow_id "
            f"AND c.{qn('index')} = CAST(e.v AS integer) ORDER BY c.{qn('index')} LIMIT 1))"
        )

    def due_sql(self) -> str:
        """``ready_at`` plus ``countdown`` seconds as an interval."""
        return "ready_at + countdown * INTERVAL '1 second' <= %s"

    def insert(self, model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> None:
        """Stream ``rows`` to the database with one ``COPY ... FROM STDIN``.

        psycopg sends them as they are written, a buffer at a time, so what is held is
        one buffer, whatever the number of rows. Under psycopg2 (no ``cursor.copy``),
        they go in JSON batches (:meth:`~.base.Store.insert_batches`).
        """
        columns = Columns(model)
        qn = connection.ops.quote_name
        table = qn(model._meta.db_table)
        sql = f"COPY {table} ({', '.join(qn(name) for name in columns.names)}) FROM STDIN"
        with connection.cursor() as cursor:
            raw = cursor.cursor
            if not hasattr(raw, "copy"):
                self.insert_batches(model, rows)
                return

            def copy() -> None:
                with raw.copy(sql) as stream:
                    write = stream.write_row
                    for row in columns.rows(rows):
                        write(row)

            run_logged(sql, cursor, copy)

    def insert_sql(self, table: str, fields: Sequence[models.Field[Any, Any]]) -> str:
        """``INSERT ... SELECT ... FROM jsonb_to_recordset(...)``."""
        qn = connection.ops.quote_name
        columns = ", ".join(qn(column(f)) for f in fields)
        typed = ", ".join(f"{qn(column(f))} {_pg_type(f)}" for f in fields)
        values = ", ".join(
            f"CAST(x.{qn(column(f))} AS jsonb)"
            if isinstance(f, models.JSONField)
            else f"x.{qn(column(f))}"
            for f in fields
        )
        return (
            f"INSERT INTO {table} ({columns}) SELECT {values} "
            f"FROM jsonb_to_recordset(CAST(%s AS jsonb)) AS x({typed})"
        )


def _pg_type(field: models.Field[Any, Any]) -> str:
    if isinstance(field, models.JSONField):
        return "text"
    if isinstance(field, models.ForeignKey):
        return str(field.target_field.rel_db_type(connection))
    return str(field.db_type(connection))
