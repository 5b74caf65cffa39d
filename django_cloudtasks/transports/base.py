"""The one interface the dispatcher uses to hand ready nodes to an execution service."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django_cloudtasks.models import cloud_task_id


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

    @property
    def cloud_task_id(self) -> str:
        """The Cloud Tasks task id of this delivery (see ``Node.cloud_task_id``)."""
        return cloud_task_id(self.node_id, self.retries)

    def body(self) -> dict[str, Any]:
        """The JSON body the run endpoint receives."""
        return {"node": self.node_id, "workflow": self.workflow_id, "retry": self.retries}


class Transport(abc.ABC):
    """Sends dispatches to whatever will call the run endpoint (or runs them).

    Implementations: ``cloudtasks`` (Google Cloud Tasks), ``eager`` (runs at once,
    in-process) and ``memory`` (records; tests call ``drain()``).
    """

    name: str = ""

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
