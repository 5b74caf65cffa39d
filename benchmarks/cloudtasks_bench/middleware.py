"""Counts the database queries and time of every request, per server process.

Each process appends one line per request to ``<log_dir>/<pid>.tsv``:
``path, status, queries, seconds in the database, seconds in the request``. The
benchmark reads the lines a case added. Queries are counted with
``connection.execute_wrapper``, as ``django_assert_num_queries`` counts them
(BEGIN and COMMIT are not statements the code executes, so they are not counted).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse


class _Counter:
    """An execute wrapper that counts statements and the time they take."""

    def __init__(self) -> None:
        self.queries = 0
        self.seconds = 0.0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.queries += 1


class QueryCounter:
    """Middleware: wraps each request in a query counter and logs the counts."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._lock = threading.Lock()
        self._file: Any = None
        self._pid = 0

    def _log(self) -> Any:
        pid = os.getpid()
        if self._file is None or self._pid != pid:  # gunicorn forks after loading
            directory = Path(settings.CONFIG.get("log_dir") or "/tmp")
            self._file = (directory / f"{pid}.tsv").open("a", buffering=1)
            self._pid = pid
        return self._file

    def __call__(self, request: HttpRequest) -> HttpResponse:
        counter = _Counter()
        started = time.perf_counter()
        with connection.execute_wrapper(counter):
            response = self.get_response(request)
        elapsed = time.perf_counter() - started
        line = (
            f"{request.path}\t{response.status_code}\t{counter.queries}\t"
            f"{counter.seconds:.6f}\t{elapsed:.6f}\n"
        )
        with self._lock:
            self._log().write(line)
        return response
