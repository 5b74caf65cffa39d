"""The delivery a line of code runs in, for log records and spans.

The runner enters a :class:`Scope` around each attempt of a node; while it is open,
:func:`current` names that node, and :class:`DeliveryFilter` copies its workflow id,
node id, node index and task name onto every log record of the library's loggers
(:func:`get_logger`). It costs a context variable per attempt and needs nothing
installed.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_cloudtasks.models import Node

#: The attributes :class:`DeliveryFilter` sets on a record (when the call did not).
FIELDS = ("workflow_id", "node_id", "node_index", "task_name")


class Delivery:
    """The node an attempt runs, and what the attempt learnt of its error."""

    __slots__ = ("error_type", "node")

    def __init__(self, node: Node) -> None:
        self.node = node
        #: The exception type that failed or retried the attempt ("" when none did).
        self.error_type = ""

    @property
    def workflow_id(self) -> str:
        return str(self.node.workflow_id)

    @property
    def node_id(self) -> str:
        return str(self.node.pk)

    @property
    def node_index(self) -> int:
        return self.node.index

    @property
    def task_name(self) -> str:
        return self.node.task_name


_current: ContextVar[Delivery | None] = ContextVar("django_cloudtasks_delivery", default=None)


def current() -> Delivery | None:
    """The delivery this code runs in, or None outside one."""
    return _current.get()


class Scope:
    """A context manager around one attempt of ``node``: :func:`current` names it.

    ``ended(outcome)`` records how the attempt ended and returns the outcome.
    """

    __slots__ = ("_token", "delivery", "headers", "outcome")

    def __init__(self, node: Node, headers: Any = None) -> None:
        self.delivery = Delivery(node)
        self.headers = headers
        self.outcome: Any = None
        self._token: Token[Delivery | None] | None = None

    def __enter__(self) -> Scope:
        self._token = _current.set(self.delivery)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def ended(self, outcome: Any) -> Any:
        """Record ``outcome`` (the runner's ``Outcome``) and return it."""
        self.outcome = outcome
        return outcome


class DeliveryFilter(logging.Filter):
    """Adds ``workflow_id``, ``node_id``, ``node_index`` and ``task_name`` to records.

    Inside a delivery they name its node; outside one they are ``""`` (``None`` for
    the index), so a format string may use them anywhere. Values the call passed in
    ``extra=`` are kept. Attach it to a handler to give your own tasks' records the
    same fields.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        delivery = _current.get()
        for name in FIELDS:
            if name not in record.__dict__:
                if delivery is not None:
                    value: Any = getattr(delivery, name)
                else:
                    value = None if name == "node_index" else ""
                setattr(record, name, value)
        return True


def node_fields(node: Node) -> dict[str, Any]:
    """The :data:`FIELDS` of ``node``, for the ``extra=`` of a line logged about it
    outside its delivery."""
    return {
        "workflow_id": str(node.workflow_id),
        "node_id": str(node.pk),
        "node_index": node.index,
        "task_name": node.task_name,
    }


_filter = DeliveryFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, with :class:`DeliveryFilter` on it."""
    logger = logging.getLogger(name)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    return logger
