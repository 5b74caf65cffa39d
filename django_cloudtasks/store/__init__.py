"""Every raw statement, one class per database (PostgreSQL and SQLite).

:func:`get_store` returns the store of the default connection's database. Other
databases are refused by the system check ``django_cloudtasks.E010``.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import connection, connections

from django_cloudtasks.store.base import (
    CHUNK_SIZE,
    Done,
    Store,
    Take,
    chunks,
    sql_literal,
)
from django_cloudtasks.store.flow import Slots
from django_cloudtasks.store.postgresql import PostgresStore
from django_cloudtasks.store.retention import Deleted
from django_cloudtasks.store.rows import (
    ADVANCE_COLUMNS,
    NODE_FIELDS,
    as_row,
    field_values,
    has_plain_children,
    node_from_db,
)
from django_cloudtasks.store.sqlite import SqliteStore
from django_cloudtasks.store.steal import STEAL_WINDOW, Steal

__all__ = [
    "ADVANCE_COLUMNS",
    "CHUNK_SIZE",
    "NODE_FIELDS",
    "STEAL_WINDOW",
    "SUPPORTED_VENDORS",
    "Deleted",
    "Done",
    "Slots",
    "Steal",
    "Store",
    "Take",
    "as_row",
    "check_database",
    "chunks",
    "field_values",
    "get_store",
    "has_plain_children",
    "node_from_db",
    "sql_literal",
]

_STORES: dict[str, Store] = {store.vendor: store for store in (PostgresStore(), SqliteStore())}
#: The databases the library runs on.
SUPPORTED_VENDORS = tuple(sorted(_STORES))


def get_store() -> Store:
    """The store of the default connection's database.

    Raises:
        KeyError: for a database other than PostgreSQL and SQLite (which the system
            check ``django_cloudtasks.E010`` reports at start-up).
    """
    return _STORES[connection.vendor]


@checks.register("django_cloudtasks")
def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``django_cloudtasks.E010``: the default database is neither PostgreSQL nor SQLite."""
    vendor = connections["default"].vendor
    if vendor in _STORES:
        return []
    return [
        checks.Error(
            f"django_cloudtasks runs on PostgreSQL or SQLite; the default database is {vendor}.",
            hint="Use django.db.backends.postgresql or django.db.backends.sqlite3.",
            id="django_cloudtasks.E010",
        )
    ]
