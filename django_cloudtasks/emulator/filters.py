"""ListQueues filters: the documented ``state: PAUSED`` form and a little more.

A filter is one or more comparisons joined by ``AND``; each compares ``state`` (with
``:``, ``=`` or ``!=`` and a state name) or ``name`` (``=``/``!=`` the full name, ``:``
a substring). Anything else is refused with INVALID_ARGUMENT rather than ignored, so a
filter that works locally is one the service understands.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from google.cloud import tasks_v2

from .errors import invalid

QueueFilter = Callable[[tasks_v2.Queue], bool]

_CLAUSE = re.compile(r'^\s*(state|name)\s*(!=|=|:)\s*"?([^"\s]+)"?\s*$')
_AND = re.compile(r"\s+AND\s+")
_STATES = {name for name in tasks_v2.Queue.State.__members__ if name != "STATE_UNSPECIFIED"}


def parse_queue_filter(text: str) -> QueueFilter:
    """A predicate on queues for ``text`` (an empty filter keeps every queue).

    Raises:
        EmulatorError: INVALID_ARGUMENT for a filter outside the supported form.
    """
    if not text.strip():
        return lambda queue: True
    tests = [_clause(part, text) for part in _AND.split(text.strip())]
    return lambda queue: all(test(queue) for test in tests)


def _clause(part: str, text: str) -> QueueFilter:
    match = _CLAUSE.match(part)
    if match is None:
        raise invalid(f"unsupported filter {text!r}: use for example 'state: PAUSED'")
    field, op, value = match.groups()
    if field == "state":
        if value not in _STATES:
            raise invalid(f"unknown queue state {value!r} in filter {text!r}")
        if op == "!=":
            return lambda queue: queue.state.name != value
        return lambda queue: queue.state.name == value
    if op == ":":
        return lambda queue: value in queue.name
    if op == "!=":
        return lambda queue: queue.name != value
    return lambda queue: queue.name == value
