"""A transport that runs each ready node at once, in-process, through the real runner."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from django_cloudtasks import telemetry
from django_cloudtasks.context import running_depth
from django_cloudtasks.transports.base import Deliver, Dispatch, Transport, installed_delivery


class EagerTransport(Transport):
    """Runs dispatches immediately and iteratively (never recursively).

    The first ``send`` on a thread drains a queue; sends made by the runs it starts
    only append to that queue, so a chain of 10,000 uses constant stack depth.
    ETAs and countdowns are not waited for. ``deliver`` runs one delivery (default:
    the function the app installed).
    """

    name = "eager"
    delivers_in_process = True

    def __init__(self, deliver: Deliver | None = None) -> None:
        self._deliver = deliver
        self._local = threading.local()

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Run ``dispatches`` (and whatever they make ready) before returning.

        Work sent from inside a running task function (a nested ``delay()``) runs at
        once, before that function goes on, as Celery's ``task_always_eager`` does.
        """
        deliver = self._deliver or installed_delivery()
        queue: deque[Dispatch] | None = getattr(self._local, "queue", None)
        depth = getattr(self._local, "depth", 0)
        if queue is not None and running_depth() <= depth:
            queue.extend(dispatches)
            return
        self._local.queue, self._local.depth = deque(dispatches), running_depth()
        try:
            while self._local.queue:
                dispatch = self._local.queue.popleft()
                with telemetry.hooks.continuing(dispatch.traceparent):
                    deliver(dispatch.node_id, retries=dispatch.retries, early=True)
        finally:
            self._local.queue, self._local.depth = queue, depth
