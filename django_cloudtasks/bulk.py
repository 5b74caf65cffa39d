"""Insert any number of rows with one statement and one JSON parameter.

``bulk_create`` splits its work by the database's parameter limit (999 on SQLite),
so its query count grows with the number of rows. Sending the rows as a single JSON
document that the database unpacks (``json_each`` on SQLite, ``jsonb_to_recordset``
on PostgreSQL) persists a canvas of any size with one query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def insert_rows(model: type[models.Model], rows: Sequence[models.Model]) -> None:
    """Insert ``rows`` (unsaved instances with their primary keys set) in one query.

    Falls back to ``bulk_create`` on databases other than SQLite and PostgreSQL.
    """
    if not rows:
        return
    if connection.vendor not in ("sqlite", "postgresql"):
        model._default_manager.bulk_create(rows)
        return
    fields = [f for f in model._meta.concrete_fields if not f.generated]
    payload = [_encode(row, fields) for row in rows]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(_column(f)) for f in fields)
    if connection.vendor == "postgresql":
        typed = ", ".join(f"{connection.ops.quote_name(_column(f))} {_pg_type(f)}" for f in fields)
        values = ", ".join(
            f"CAST(x.{connection.ops.quote_name(_column(f))} AS jsonb)"
            if isinstance(f, models.JSONField)
            else f"x.{connection.ops.quote_name(_column(f))}"
            for f in fields
        )
        sql = (
            f"INSERT INTO {table} ({columns}) SELECT {values} "
            f"FROM jsonb_to_recordset(CAST(%s AS jsonb)) AS x({typed})"
        )
    else:
        values = ", ".join(f"json_extract(value, '$.{_column(f)}')" for f in fields)
        sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM json_each(%s)"
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(payload, separators=(",", ":"))])


def _encode(row: models.Model, fields: Sequence[models.Field[Any, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in fields:
        value = field.pre_save(row, add=True)
        if isinstance(field, models.JSONField):
            data[_column(field)] = None if value is None else json.dumps(value)
            continue
        prepared = field.get_db_prep_value(value, connection, prepared=False)
        if prepared is not None and not isinstance(prepared, str | int | float | bool):
            prepared = str(prepared)
        data[_column(field)] = prepared
    return data


def _pg_type(field: models.Field[Any, Any]) -> str:
    if isinstance(field, models.JSONField):
        return "text"
    if isinstance(field, models.ForeignKey):
        return str(field.target_field.rel_db_type(connection))
    return str(field.db_type(connection))


def _column(field: models.Field[Any, Any]) -> str:
    return str(field.column)
