"""A transport that records dispatches; ``drain()`` runs them in order."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from django_cloudtasks.transports.base import Dispatch, Transport


class MemoryTransport(Transport):
    """Keeps dispatches in memory. ``sent`` and ``cancelled`` record every call.

    ``drain()`` delivers the pending dispatches through the real run path, including
    those their runs produce, until none is left. ETAs are recorded, not waited for.
    """

    name = "memory"

    def __init__(self) -> None:
        self.sent: list[Dispatch] = []
        self.cancelled: list[Dispatch] = []
        self._pending: deque[Dispatch] = deque()
        self._lock = threading.Lock()

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Record ``dispatches`` as sent and pending."""
        with self._lock:
            self.sent.extend(dispatches)
            self._pending.extend(dispatches)

    def cancel(self, dispatches: Sequence[Dispatch]) -> None:
        """Record ``dispatches`` as cancelled and drop them from the pending ones."""
        ids = {d.cloud_task_id for d in dispatches}
        with self._lock:
            self.cancelled.extend(dispatches)
            self._pending = deque(d for d in self._pending if d.cloud_task_id not in ids)

    @property
    def pending(self) -> list[Dispatch]:
        """Dispatches sent and not yet delivered."""
        with self._lock:
            return list(self._pending)

    def drain(self, limit: int | None = None) -> int:
        """Deliver pending dispatches in order until none is left (or ``limit``).

        Returns how many deliveries were made.
        """
        from django_cloudtasks.runner import deliver

        done = 0
        while limit is None or done < limit:
            with self._lock:
                if not self._pending:
                    break
                dispatch = self._pending.popleft()
            deliver(dispatch.node_id, retries=dispatch.retries)
            done += 1
        return done

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self.sent.clear()
            self.cancelled.clear()
            self._pending.clear()
