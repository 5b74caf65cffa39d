"""``ResultSet``: any results waited for together."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


class ResultSet:
    """Any results waited for together (Celery's ``ResultSet``), in the order given."""

    def __init__(self, results: Iterable[Any]) -> None:
        self.results = list(results)

    def __repr__(self) -> str:
        return f"<ResultSet: {len(self.results)} results>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    def add(self, result: Any) -> None:
        """Add ``result`` to the set, unless it is already in it."""
        if result not in self.results:
            self.results.append(result)

    def completed_count(self) -> int:
        """How many results succeeded."""
        return sum(1 for r in self.results if r.successful())

    def ready(self) -> bool:
        """True once every result is final."""
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        """True when every result succeeded."""
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        """True when some result failed."""
        return any(r.failed() for r in self.results)

    def get(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> list[Any]:
        """Wait for every result; return their values in order (see ``AsyncResult.get``).

        Raises:
            TimeoutError: when they are not all ready within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for member in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(member.get(timeout=left, interval=interval, propagate=propagate))
        return values

    join = get

    def revoke(self) -> list[str]:
        """Revoke every result (and what follows each)."""
        revoked: list[str] = []
        for member in self.results:
            revoked += member.revoke()
        return revoked
