"""A transport that records dispatches; ``drain()`` runs them in order."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from django_cloudtasks import telemetry
from django_cloudtasks.transports.base import Deliver, Dispatch, Transport, installed_delivery


class MemoryTransport(Transport):
    """Keeps dispatches in memory. ``sent`` and ``cancelled`` record every call.

    ``drain()`` delivers the pending dispatches through the real run path, including
    those their runs produce, until none is left. ETAs are recorded, not waited for.
    Like Cloud Tasks, a dispatch whose task id was already sent is not queued again.
    ``deliver`` runs one delivery (default: the function the app installed).
    """

    name = "memory"
    delivers_in_process = True

    def __init__(self, deliver: Deliver | None = None) -> None:
        self._deliver = deliver
        self.sent: list[Dispatch] = []
        self.cancelled: list[Dispatch] = []
        self._pending: deque[Dispatch] = deque()
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Record ``dispatches`` as sent; queue those whose task id is new."""
        with self._lock:
            self.sent.extend(dispatches)
            for dispatch in dispatches:
                if dispatch.cloud_task_id not in self._known:
                    self._known.add(dispatch.cloud_task_id)
                    self._pending.append(dispatch)

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

    def take(self) -> Dispatch | None:
        """Remove and return the oldest pending dispatch, if any (for custom workers)."""
        with self._lock:
            return self._pending.popleft() if self._pending else None

    def drain(self, limit: int | None = None) -> int:
        """Deliver pending dispatches in order until none is left (or ``limit``).

        Returns how many deliveries were made.
        """
        deliver = self._deliver or installed_delivery()
        done = 0
        while limit is None or done < limit:
            dispatch = self.take()
            if dispatch is None:
                break
            with telemetry.hooks.continuing(dispatch.traceparent):
                deliver(dispatch.node_id, retries=dispatch.retries, early=True)
            done += 1
        return done

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self.sent.clear()
            self.cancelled.clear()
            self._pending.clear()
            self._known.clear()
