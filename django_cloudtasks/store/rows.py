"""The row <-> :class:`~django_cloudtasks.models.Node` mapping of the raw statements.

Two column lists, each defined once here:

* :data:`NODE_FIELDS`, every column of a node: a statement that claims a node
  returns them in this order and :func:`node_from_db` reads them back;
* :data:`ADVANCE_COLUMNS`, what the advance statement returns for each child it
  touched, decoded by :func:`decode_row` into a dict.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from django_cloudtasks.models import Node

#: Every column of a node, in the order :func:`node_from_db` reads them back.
NODE_FIELDS = Node._meta.concrete_fields

#: The columns the advance statement returns for each node it updates.
ADVANCE_COLUMNS = (
    "id",
    "index",
    "kind",
    "state",
    "pending_parents",
    "task_name",
    "queue",
    "countdown",
    "eta",
    "retries",
    "children",
    "parents",
    "input_rule",
    "is_output",
    "options",
    "workflow_id",
    "flow_key",
)

#: Columns only needed for a node that became ready; the others return NULL for them,
#: so that a group member does not read back its join's list of every member.
WHEN_READY = frozenset({"children", "parents", "options", "flow_key"})

_NODE_ATTNAMES = [f.attname for f in NODE_FIELDS]
_converters: dict[str, list[tuple[Any, list[Any]]]] = {}


def node_from_db(values: Sequence[Any]) -> Node:
    """A :class:`Node` from the raw values of every concrete column, in field order."""
    converters = _converters.get(connection.alias)
    if converters is None:
        converters = []
        for f in NODE_FIELDS:
            col = f.get_col(Node._meta.db_table)
            converters.append(
                (col, connection.ops.get_db_converters(col) + col.get_db_converters(connection))
            )
        _converters[connection.alias] = converters
    converted = []
    for (col, functions), value in zip(converters, values, strict=True):
        for convert in functions:
            value = convert(value, col, connection)
        converted.append(value)
    return Node.from_db(connection.alias, _NODE_ATTNAMES, converted)


def decode_row(raw: Sequence[Any]) -> dict[str, Any]:
    """The :data:`ADVANCE_COLUMNS` of one returned row, as Python values."""
    row = dict(zip(ADVANCE_COLUMNS, raw, strict=True))
    row["id"] = uuid.UUID(str(row["id"]))
    row["workflow_id"] = uuid.UUID(str(row["workflow_id"]))
    for key in ("children", "parents", "options"):
        if isinstance(row[key], str | bytes):
            row[key] = json.loads(row[key])
    row["is_output"] = bool(row["is_output"])
    eta = row["eta"]
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if eta is not None and timezone.is_naive(eta):
        eta = eta.replace(tzinfo=UTC)
    row["eta"] = eta
    return row


def field_values(node: Node) -> dict[str, Any]:
    """Every concrete field of ``node`` by attname, as :meth:`.Store.insert` takes a row."""
    return {name: getattr(node, name) for name in _NODE_ATTNAMES}


def as_row(node: Node) -> dict[str, Any]:
    """``node`` as :func:`decode_row` would return it."""
    return {c: getattr(node, c) for c in ADVANCE_COLUMNS}


def node_columns(plain: str = "") -> str:
    """What a statement taking a node returns: every column in field order, then
    ``plain`` (the store's ``plain_children_sql``), if any; :func:`returned_node` reads it."""
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in NODE_FIELDS)
    return f"{columns}, {plain}" if plain else columns


def returned_node(values: Sequence[Any]) -> Node:
    """The node of the values :func:`node_columns` selected, its plain flag noted if any."""
    node = node_from_db(values[: len(NODE_FIELDS)])
    if len(values) > len(NODE_FIELDS):
        mark_plain_children(node, bool(values[len(NODE_FIELDS)]))
    return node


def mark_plain_children(node: Node, plain: bool) -> None:
    """Note on a claimed ``node`` whether all its children are plain tasks (see below)."""
    node.__dict__["plain_children"] = plain


def has_plain_children(node: Node) -> bool:
    """True when the claim found that every child of ``node`` is a task without limits.

    Advancing such a node never closes a group join nor admits a limited child, so
    it takes no statement after the one that records and advances. Only a store that
    :attr:`~.base.Store.records_in_advance` reads this back; elsewhere it is False.
    """
    return bool(node.__dict__.get("plain_children", False))
