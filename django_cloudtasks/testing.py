"""Run workflows synchronously in your own test suite, through the real engine.

With pytest, add ``pytest_plugins = ["django_cloudtasks.testing"]`` to your
``conftest.py`` and use the ``cloudtasks`` fixture::

    def test_checkout_sends_the_receipt(cloudtasks, db):
        checkout(order)                        # calls send_receipt.delay(order.id)
        assert cloudtasks.task_names() == ["send_receipt"]
        cloudtasks.run()                       # runs it, and everything it makes ready
        assert Receipt.objects.count() == 1

Without pytest (``django.test.TestCase`` included), use the context manager::

    with capture_tasks() as tasks:
        checkout(order)
        tasks.run()

Nodes are sent at once rather than after commit, so this also works inside the
transaction a ``TestCase`` wraps each test in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.test.utils import override_settings

from django_cloudtasks.dispatch import immediate
from django_cloudtasks.transports import get_transport, reset_transport
from django_cloudtasks.transports.base import Dispatch
from django_cloudtasks.transports.memory import MemoryTransport


class CapturedTasks:
    """What the code under test sent; ``run()`` delivers it through the engine."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    @property
    def sent(self) -> list[Dispatch]:
        """Every dispatch sent so far, in order."""
        return list(self.transport.sent)

    @property
    def pending(self) -> list[Dispatch]:
        """Dispatches sent and not yet run."""
        return self.transport.pending

    def task_names(self) -> list[str]:
        """The task names of the pending dispatches, in order."""
        return [d.task_name for d in self.transport.pending]

    def run(self, limit: int | None = None) -> int:
        """Run pending tasks, and the ones they make ready, until none is left.

        ETAs and countdowns are not waited for. Returns how many deliveries ran.
        """
        return self.transport.drain(limit)

    def clear(self) -> None:
        """Forget what was sent."""
        self.transport.clear()


@contextmanager
def capture_tasks(eager: bool = False) -> Iterator[CapturedTasks]:
    """Switch to the memory transport (or, with ``eager=True``, run everything at once).

    Yields a :class:`CapturedTasks`; the previous transport is restored afterwards.
    """
    current = getattr(settings, "CLOUDTASKS", None) or {}
    mode = "eager" if eager else "memory"
    previous = immediate.on
    with override_settings(CLOUDTASKS={**current, "TRANSPORT": mode}):
        reset_transport()
        immediate.on = True
        try:
            transport = get_transport() if not eager else MemoryTransport()
            assert isinstance(transport, MemoryTransport)
            yield CapturedTasks(transport)
        finally:
            immediate.on = previous
            reset_transport()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def cloudtasks() -> Iterator[CapturedTasks]:
        """The memory transport for one test: ``cloudtasks.run()`` runs what was sent."""
        with capture_tasks() as captured:
            yield captured

    @pytest.fixture
    def cloudtasks_eager() -> Iterator[None]:
        """Every workflow runs to the end inside ``apply_async``/``delay``."""
        with capture_tasks(eager=True):
            yield
