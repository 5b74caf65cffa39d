"""Resource names of queues and tasks, parsed and validated as the real service does."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# A project id: 6 to 30 lowercase letters, digits and hyphens, starting with a letter and
# not ending with a hyphen, optionally behind a domain (``example.com:my-project``).
_PROJECT = r"(?:[a-z0-9.-]+\.[a-z]{2,}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_LOCATION = r"[a-z][a-z0-9-]*[a-z0-9]"
_QUEUE = rf"projects/{_PROJECT}/locations/{_LOCATION}/queues/[A-Za-z0-9-]{{1,100}}"
_QUEUE_RE = re.compile(rf"^{_QUEUE}$")
_TASK_RE = re.compile(rf"^({_QUEUE})/tasks/([A-Za-z0-9_-]{{1,500}})$")
_LOCATION_RE = re.compile(rf"^projects/{_PROJECT}/locations/{_LOCATION}$")


@dataclass(frozen=True)
class TaskName:
    """A parsed task name: the full queue name it belongs to and the short task id."""

    queue: str
    task_id: str


def is_location_name(name: str) -> bool:
    """Tell whether ``name`` reads ``projects/P/locations/L`` with a valid project id."""
    return _LOCATION_RE.match(name) is not None


def is_queue_name(name: str) -> bool:
    """Tell whether ``name`` reads ``projects/P/locations/L/queues/Q`` with valid ids."""
    return _QUEUE_RE.match(name) is not None


def queue_short_id(name: str) -> str:
    """The last segment of a queue name (what ``X-CloudTasks-QueueName`` carries)."""
    return name.rsplit("/", 1)[-1]


def parse_task_name(name: str) -> TaskName | None:
    """Split a task name into queue and id, or return None when it is malformed.

    The id may hold letters, digits, hyphens and underscores, at most 500 characters.
    """
    match = _TASK_RE.match(name)
    if match is None:
        return None
    return TaskName(queue=match.group(1), task_id=match.group(2))


def new_task_id() -> str:
    """A server-assigned task id: a long decimal number, like the real service's."""
    return str(secrets.randbelow(9 * 10**18) + 10**18)
