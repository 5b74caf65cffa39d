"""Inserting many new rows: each value converted once, the rows streamed, never all held.

The engine gives :meth:`~.base.Store.insert` the new rows as mappings of field names
(attnames, ``workflow_id``) to Python values. :class:`Columns` turns each into the
tuple of the values of every column, as Django would have prepared them for this
database but without its per-field, per-row machinery: a ``JSONField`` is dumped as
``json.dumps`` does, a UUID is its text (hex on SQLite), a datetime the text Django's
backend adapts it to, a choice its value. A field missing from a mapping takes its
default, computed once per insert (so an ``id`` must always be given).

The rows then go to the database as a stream: PostgreSQL's ``COPY ... FROM STDIN``
(psycopg 3), SQLite's ``executemany``, or, where neither applies, one ``INSERT`` of a
JSON array per batch of :data:`BATCH_SIZE` rows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from functools import partial
from itertools import islice
from typing import Any

from django.db import connection, models

#: The rows of one ``INSERT`` of the JSON batches (one JSON document each).
BATCH_SIZE = 5_000

Encoder = Callable[[Any], Any]


class Columns:
    """The concrete columns of ``model`` and how each value is sent to this database."""

    def __init__(self, model: type[models.Model]) -> None:
        self.fields: list[models.Field[Any, Any]] = [
            f for f in model._meta.concrete_fields if not f.generated
        ]
        self.names = [str(f.column) for f in self.fields]
        self._defaults: list[Any] = []
        self._position: dict[str, tuple[int, Encoder | None]] = {}
        for position, field in enumerate(self.fields):
            encode = _encoder(field)
            default = field.get_default()
            self._defaults.append(default if encode is None else encode(default))
            self._position[field.attname] = (position, encode)

    def encode(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of every column for one row (``values`` by attname).

        Raises:
            KeyError: for a name that is not a concrete field's attname.
        """
        row = self._defaults.copy()
        position = self._position
        for name, value in values.items():
            at, encode = position[name]
            row[at] = value if encode is None else encode(value)
        return tuple(row)

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Any, ...]]:
        """Each of ``rows`` encoded, as it is read."""
        return map(self.encode, rows)


def batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[Any]]:
    """``rows`` in lists of at most ``size``."""
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def run_logged(sql: str, cursor: Any, run: Callable[[], Any]) -> None:
    """Run ``run`` (a statement the cursor API cannot express, such as ``COPY``) as
    Django runs a query on ``cursor``: through the connection's execute wrappers,
    translating database errors, and in ``connection.queries`` when queries are logged."""

    def execute(sql: str, params: Any, many: bool, context: Mapping[str, Any]) -> Any:
        return run()

    executor: Callable[..., Any] = execute
    # What CursorWrapper._execute_with_wrappers does for a query.
    for wrapper in reversed(connection.execute_wrappers):
        executor = partial(wrapper, executor)
    started = time.monotonic()
    try:
        with connection.wrap_database_errors:
            executor(sql, None, False, {"connection": connection, "cursor": cursor})
    finally:
        if connection.queries_logged:
            connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


def json_rows(names: Sequence[str], batch: Sequence[tuple[Any, ...]]) -> str:
    """One batch as the JSON array of objects an ``INSERT ... SELECT`` unpacks."""
    return json.dumps([dict(zip(names, row, strict=True)) for row in batch], separators=(",", ":"))


def _encoder(field: models.Field[Any, Any]) -> Encoder | None:
    """How a value of ``field`` is sent; None when it goes as it is."""
    if isinstance(field, models.JSONField):
        return _json
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    if isinstance(target, models.UUIDField):
        return _uuid if connection.features.has_native_uuid_field else _uuid_hex
    if isinstance(field, models.DateTimeField):
        return _Moments()
    if isinstance(field, models.CharField | models.TextField):
        return _text
    return None


def _json(value: Any) -> str | None:
    return None if value is None else _dumps(value)


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its default arguments, built once instead of per call.

    ``json.dumps`` builds a new C encoder for every value it is given, which is most of
    its cost for the small values of a row. The text is the same.
    """
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # no C accelerator: the pure-Python encoder
        return json.dumps
    plain = json.JSONEncoder()
    state: list[Any] = []

    def new() -> Any:
        return make(
            {},  # markers: circular references are refused, as json.dumps does
            plain.default,
            json.encoder.encode_basestring_ascii,  # type: ignore[attr-defined]
            None,
            plain.key_separator,
            plain.item_separator,
            False,
            False,
            True,
        )

    state.append(new())

    def dumps(value: Any) -> str:
        if isinstance(value, str):
            return json.dumps(value)
        try:
            return "".join(state[0](value, 0))
        except BaseException:
            state[0] = new()  # a failure can leave markers behind
            raise

    return dumps


_dumps = _json_encoder()


def _uuid(value: Any) -> str | None:
    if value is None:
        return None
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _uuid_hex(value: Any) -> str | None:
    if value is None:
        return None
    return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).hex


def _text(value: Any) -> Any:
    # A choice (``State.QUEUED``, ``InputRule.LIST``) is stored as its value.
    return value.value if isinstance(value, Enum) else value


class _Moments:
    """A datetime as Django's backend adapts it, as text; remembered, since the rows of
    one insert share a few moments (``created_at``, ``ready_at``)."""

    def __init__(self) -> None:
        self.seen: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.seen[value]
        except KeyError:
            adapted = connection.ops.adapt_datetimefield_value(value)
            text = None if adapted is None else str(adapted)
            self.seen[value] = text
            return text
