"""The SQLite store: JSON parameters unpacked with ``json_each``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, models

from django_cloudtasks.store.base import Statement, Store, column
from django_cloudtasks.store.insert import Columns


class SqliteStore(Store):
    """Records a node's success in its own statement, before advancing its children."""

    vendor = "sqlite"
    records_in_advance = False

    def least(self) -> str:
        """SQLite's n-ary ``min``."""
        return "min"

    def greatest(self) -> str:
        """SQLite's n-ary ``max``."""
        return "max"

    def ids(self) -> str:
        """``json_each`` of the parameter."""
        return "(SELECT value FROM json_each(%s))"

    def json_value(self) -> str:
        """The JSON text itself (SQLite stores JSON as text)."""
        return "%s"

    def add_member_results(
        self, st: Statement, table: str, index: str, wf_db: Any, members: Sequence[int]
    ) -> None:
        """``json_group_array`` of the members' results, in index order."""
        ids = self.ids()
        st.add(
            f"(SELECT json_group_array(json(p.result)) FROM (SELECT result FROM {table} "
            f"WHERE workflow_id = %s AND {index} IN {ids} ORDER BY {index}) p)",
            wf_db,
            json.dumps(list(members)),
        )

    def due_sql(self) -> str:
        """``ready_at`` plus ``countdown`` seconds, compared as Julian days."""
        return "julianday(ready_at) + countdown / 86400.0 <= julianday(%s)"

    def insert(self, model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert ``rows`` with one ``executemany``, which reads them as it goes."""
        columns = Columns(model)
        qn = connection.ops.quote_name
        names = ", ".join(qn(name) for name in columns.names)
        marks = ", ".join(["%s"] * len(columns.names))
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {qn(model._meta.db_table)} ({names}) VALUES ({marks})",
                # Django and sqlite3 read an iterator as they go (the stubs say Sequence).
                columns.rows(rows),  # type: ignore[arg-type]
            )

    def insert_sql(self, table: str, fields: Sequence[models.Field[Any, Any]]) -> str:
        """``INSERT ... SELECT json_extract(...) FROM json_each(...)``."""
        columns = ", ".join(connection.ops.quote_name(column(f)) for f in fields)
        values = ", ".join(f"json_extract(value, '$.{column(f)}')" for f in fields)
        return f"INSERT INTO {table} ({columns}) SELECT {values} FROM json_each(%s)"
