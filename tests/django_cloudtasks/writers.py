"""Who writes node and workflow rows, seen from the statements a test runs.

``tests/test_architecture.py`` reads the source for writes outside the engine; this
watches the statements themselves, so a write it cannot see in the source (through a
variable holding a queryset, a model's ``save()``, raw SQL) is caught too.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

#: A statement writing the rows of nodes or workflows (not a ``SELECT ... FOR UPDATE``;
#: ``COPY`` is PostgreSQL's stream of new rows).
WRITE = re.compile(
    r'\b(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM|COPY)\s+"?django_cloudtasks_(?:node|workflow)"?(?:\s|$)',
    re.I,
)
#: Where such a statement may come from, and why (the architecture test's list).
WRITERS = (
    "django_cloudtasks.engine",  # every change of state
    "django_cloudtasks.dispatch",  # the parked flag of nodes beyond Cloud Tasks' horizon
)


def writer_of_statement() -> str | None:
    """The module that decided on the statement being run, or None for a test's own.

    It is the innermost frame of the package past the store (which only builds the
    statements the engine runs), unless a frame of the tests (a test, a test task)
    comes first.
    """
    frame = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module == __name__:  # the watch itself
            frame = frame.f_back  # type: ignore[assignment]
            continue
        if module.startswith("tests."):
            return None
        if module.startswith("django_cloudtasks") and not module.startswith(
            "django_cloudtasks.store"
        ):
            return module
        frame = frame.f_back  # type: ignore[assignment]
    return None


@contextmanager
def watch_writers() -> Iterator[list[str]]:
    """Collect, while the block runs, the writes of node or workflow rows that come
    from outside :data:`WRITERS` on this thread's connections (``"module: SQL"``)."""
    strays: list[str] = []

    def watch(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        if isinstance(sql, str) and WRITE.search(sql):
            module = writer_of_statement()
            if module is not None and not module.startswith(WRITERS):
                strays.append(f"{module}: {' '.join(sql.split())[:80]}")
        return execute(sql, params, many, context)

    watched = [connections[alias] for alias in connections]
    for connection in watched:
        connection.execute_wrappers.append(watch)
    try:
        yield strays
    finally:
        for connection in watched:
            if watch in connection.execute_wrappers:
                connection.execute_wrappers.remove(watch)
