"""A transport that runs each ready node at once, in-process, through the real engine."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from django_cloudtasks.transports.base import Dispatch, Transport


class EagerTransport(Transport):
    """Runs dispatches immediately and iteratively (never recursively).

    The first ``send`` on a thread drains a queue; sends made by the runs it starts
    only append to that queue, so a chain of 10,000 uses constant stack depth.
    ETAs and countdowns are not waited for.
    """

    name = "eager"

    def __init__(self) -> None:
        self._local = threading.local()

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Run ``dispatches`` (and whatever they make ready) before returning."""
        from django_cloudtasks.runner import deliver

        queue: deque[Dispatch] | None = getattr(self._local, "queue", None)
        if queue is not None:
            queue.extend(dispatches)
            return
        queue = self._local.queue = deque(dispatches)
        try:
            while queue:
                dispatch = queue.popleft()
                deliver(dispatch.node_id, retries=dispatch.retries)
        finally:
            self._local.queue = None
