"""The one interface the dispatcher uses to hand ready nodes to an execution service."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.models import cloud_task_id

#: Runs one delivery of a node: ``deliver(node_id, retries=n, early=True)`` (in-process
#: transports do not wait for ETAs, so they deliver early); the app installs
#: :func:`django_cloudtasks.runner.deliver`.
Deliver = Callable[..., object]

_delivery: list[Deliver] = []


def install_delivery(deliver: Deliver) -> None:
    """Install the function in-process transports call to deliver a node."""
    _delivery[:] = [deliver]


def installed_delivery() -> Deliver:
    """The function installed by :func:`install_delivery`.

    Raises:
        ConfigurationError: when none is installed (``django_cloudtasks`` is not an
            installed app, or Django is not set up).
    """
    if not _delivery:
        raise ConfigurationError(
            "no delivery function is installed: add 'django_cloudtasks' to INSTALLED_APPS "
            "and call django.setup()"
        )
    return _delivery[0]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One delivery to make: run node ``node_id`` (task ``task_name``) at ``eta``."""

    node_id: str
    workflow_id: str
    task_name: str
    retries: int = 0
    eta: datetime | None = None
    queue: str = ""
    dispatch_deadline: float | None = None
    #: The attempt a sweeper resend takes over (0 for a first delivery).
    takeover: int = 0
    #: How many times a debounce postponed the node: each time is a new Cloud Task.
    deferred: int = 0
    #: The W3C ``traceparent`` the delivery continues ("" for none); sent as a header.
    traceparent: str = field(default="", compare=False)

    @property
    def cloud_task_id(self) -> str:
        """The Cloud Tasks task id of this delivery (see ``Node.cloud_task_id``)."""
        return cloud_task_id(self.node_id, self.retries, self.takeover, self.deferred)

    def body(self) -> dict[str, Any]:
        """The JSON body the run endpoint receives."""
        return {"node": self.node_id, "workflow": self.workflow_id, "retry": self.retries}


class Transport(abc.ABC):
    """Sends dispatches to whatever will call the run endpoint (or runs them).

    Implementations: ``cloudtasks`` (Google Cloud Tasks), ``eager`` (runs at once,
    in-process) and ``memory`` (records; tests call ``drain()``).
    """

    name: str = ""
    #: True for a transport that runs deliveries itself, in this process; it is built
    #: as ``cls(deliver=...)`` with the function that delivers a node.
    delivers_in_process: ClassVar[bool] = False

    @abc.abstractmethod
    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Send every dispatch; a repeated send of the same delivery must be harmless.

        Raises:
            django_cloudtasks.exceptions.EnqueueError: when some could not be sent.
        """

    def cancel(self, dispatches: Sequence[Dispatch]) -> None:  # noqa: B027 - optional
        """Withdraw deliveries not yet made; ones already gone are ignored."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release clients and connections."""

    def describe(self, dispatch: Dispatch) -> str:
        """What the transport knows of a sent delivery's attempts, for error messages.

        An empty string when it knows nothing (the default); never raises.
        """
        return ""
