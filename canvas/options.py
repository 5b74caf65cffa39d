"""The options a signature or expression may carry, and their normalisation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from canvas.values import check_aware

#: Options understood by the canvas, with what each means.
OPTION_NAMES: dict[str, str] = {
    "countdown": "seconds to wait after the node becomes ready",
    "eta": "earliest time to run (timezone-aware datetime or ISO 8601 string)",
    "expires": "seconds after readiness, or a datetime, after which the node is not run",
    "queue": "the Cloud Tasks queue to send the node to",
    "link_error": "error callbacks (signatures) run once if the node fails for good",
    "max_retries": "how many times the task's own retry policy may re-run it",
    "retry_backoff": "exponential backoff base in seconds (True means 1), or False",
    "retry_backoff_max": "the cap of the exponential backoff, in seconds",
    "retry_jitter": "randomise each backoff between 0 and its value",
    "dispatch_deadline": "seconds Cloud Tasks waits for the run endpoint to answer",
    "time_limit": "Celery's name for dispatch_deadline (stored as dispatch_deadline)",
    "soft_time_limit": "seconds after which SoftTimeLimitExceeded is raised inside the task",
    "result_kwarg": "pass the parent's result as this keyword argument instead of the first "
    "positional one",
    "concurrency_key": "the key whose nodes in flight max_concurrency counts, across workflows",
    "max_concurrency": "at most this many nodes of the same concurrency key in flight at once; "
    "on a group without a concurrency_key, at most this many of its members",
    "rate_limit": "at most this many starts per second, minute or hour ('10/m'), per "
    "concurrency key, else per task",
    "unique_key": "while a workflow with this key is unfinished, apply_async() returns it "
    "instead of starting another",
    "unique_for": "seconds from its start during which a workflow keeps its unique_key, "
    "even once finished",
    "debounce": "seconds of quiet before a unique workflow starts; calls in between fold "
    "into it with their arguments",
}

#: Options that describe a whole run, read by ``apply_async`` and never given to nodes.
RUN_OPTIONS = frozenset({"unique_key", "unique_for", "debounce"})

#: The units a rate limit may be given in, in seconds.
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_per_second(value: Any, label: str = "rate_limit") -> float:
    """The number of starts per second that ``value`` allows, in Celery's syntax.

    ``"10/m"`` is ten a minute; the units are ``s``, ``m`` and ``h``. A bare number
    (or a string of one) counts per second.

    Raises:
        TypeError: for a value that is neither a number nor a string.
        ValueError: for a string that does not parse, or a rate that is not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{label} must be a string such as '10/m' or a number, got {value!r}")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*([smh]))?\s*", value)
        if match is None:
            raise ValueError(
                f"{label} {value!r} does not parse: give a count per second, minute or "
                "hour, such as '20/s', '10/m' or '100/h'"
            )
        rate = float(match.group(1)) / RATE_UNITS[match.group(2) or "s"]
    else:
        rate = float(value)
    if not rate > 0 or rate == float("inf"):
        raise ValueError(f"{label} must allow a positive number of starts, got {value!r}")
    return rate


#: Celery options with no counterpart here, and the rewrite each error names.
UNSUPPORTED_OPTIONS: dict[str, str] = {
    "priority": "Cloud Tasks queues have no priorities; send urgent work to its own queue "
    "(queue=...)",
    "routing_key": "name the Cloud Tasks queue with queue=...",
    "exchange": "name the Cloud Tasks queue with queue=...",
    "link": "compose with |: (sig | callback).apply_async()",
    "task_id": "ids are chosen by the engine; read result.id",
    "serializer": "arguments and results are always JSON; remove the option",
    "headers": "Cloud Tasks sends its own headers; pass data as arguments",
    "retry": "sending to Cloud Tasks is retried by the client and the sweeper; remove it",
    "retry_policy": "sending to Cloud Tasks is retried by the client and the sweeper; remove it",
    "ignore_result": "set @task(ignore_result=True)",
}


def normalize_option(name: str, value: Any, where: str) -> Any:
    """Validate one option of ``where`` and return it as plain JSON data.

    Datetimes become ISO 8601 strings. Error callbacks (``link_error``) are
    expressions, which this module does not know: :func:`canvas.expression.normalize_options`
    normalises them.

    Raises:
        TypeError: for an unknown option or a value of the wrong type.
        ValueError: for a value of the right type that is out of range.
    """
    if name in UNSUPPORTED_OPTIONS:
        raise TypeError(f"option {name!r} of {where} is not supported: {UNSUPPORTED_OPTIONS[name]}")
    if name not in OPTION_NAMES:
        known = ", ".join(sorted(OPTION_NAMES))
        raise TypeError(f"unknown option {name!r} for {where}; known options: {known}")
    return _normalize(name, value, where)


def merge_options(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``extra``, concatenating error callbacks."""
    merged = dict(base)
    for name, value in extra.items():
        if name == "link_error":
            merged[name] = [*base.get(name, ()), *value]
        else:
            merged[name] = value
    return merged


def _normalize(name: str, value: Any, where: str) -> Any:
    label = f"option {name!r} of {where}"
    if value is None:
        return None
    if name in (
        "countdown",
        "retry_backoff_max",
        "dispatch_deadline",
        "time_limit",
        "soft_time_limit",
    ):
        return _non_negative_number(value, label)
    if name == "eta":
        return _moment(value, label)
    if name == "expires":
        if isinstance(value, datetime | str):
            return _moment(value, label)
        return _non_negative_number(value, label)
    if name == "queue":
        if not isinstance(value, str) or not value:
            raise TypeError(f"{label} must be a non-empty string, got {value!r}")
        return value
    if name == "max_retries":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"{label} must be a non-negative int or None, got {value!r}")
        return value
    if name == "retry_backoff":
        if isinstance(value, bool):
            return value
        return _non_negative_number(value, label)
    if name == "retry_jitter":
        if not isinstance(value, bool):
            raise TypeError(f"{label} must be True or False, got {value!r}")
        return value
    if name == "result_kwarg":
        if not isinstance(value, str) or not value:
            raise TypeError(f"{label} must be a non-empty string, got {value!r}")
        return value
    if name in ("concurrency_key", "unique_key"):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{label} must be a non-empty string, got {value!r}")
        if len(value) > 200:
            raise ValueError(f"{label} is longer than 200 characters: {value[:40]!r}...")
        return value
    if name == "max_concurrency":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{label} must be at least 1, got {value!r}")
        return value
    if name == "rate_limit":
        rate_per_second(value, label)
        return value
    if name in ("unique_for", "debounce"):
        return _non_negative_number(value, label)
    # link_error is normalised by canvas.expression.normalize_options.
    raise AssertionError(name)  # pragma: no cover - OPTION_NAMES and this list agree


def _non_negative_number(value: Any, label: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{label} must be a number of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"{label} must not be negative, got {value!r}")
    return value


def _moment(value: Any, label: str) -> str:
    if isinstance(value, datetime):
        return check_aware(value, label)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{label} is not an ISO 8601 datetime: {value!r}") from None
        return check_aware(parsed, label)
    raise TypeError(f"{label} must be a datetime or an ISO 8601 string, got {value!r}")
