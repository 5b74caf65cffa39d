"""Checks that the values a canvas carries survive a JSON round trip."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

JSON_SCALARS = (str, int, float, bool, type(None))


def check_json(value: Any, where: str, owner: str = "") -> None:
    """Raise ``TypeError`` unless ``value`` is plain JSON data.

    Allowed are ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists and tuples
    of those, and dicts with ``str`` keys. The message names ``where`` the offending
    value sits (``where`` is the path of ``value``, ``owner`` what holds it, as in
    ``check_json(x, "args[1]", " of 'add'")``) and the value itself.
    """
    try:
        json.dumps(value, default=lambda _: None)
    except ValueError:
        raise TypeError(f"{where}{owner} contains a reference cycle") from None
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise TypeError(f"{path}{owner} is {item!r}, which JSON cannot represent")
        if isinstance(item, JSON_SCALARS):
            continue
        if isinstance(item, list | tuple):
            stack.extend((member, f"{path}[{i}]") for i, member in enumerate(item))
        elif isinstance(item, Mapping):
            for key, member in item.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"{path}{owner} has the key {key!r} of type {type(key).__name__}; "
                        "JSON object keys must be strings"
                    )
                stack.append((member, f"{path}[{key!r}]"))
        else:
            raise TypeError(
                f"{path}{owner} is {_short_repr(item)} of type {type(item).__name__}, which is not "
                "JSON-serializable; pass plain data (str, int, float, bool, None, list, dict)"
            )


def to_json_data(value: Any) -> Any:
    """Return ``value`` with tuples turned into lists, as it reads back from JSON."""
    if isinstance(value, list | tuple):
        return [to_json_data(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json_data(v) for k, v in value.items()}
    return value


def check_aware(moment: datetime, where: str) -> str:
    """Return ``moment`` as ISO 8601, refusing naive datetimes with ``ValueError``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{where} must be a timezone-aware datetime, got the naive {moment!r}")
    return moment.isoformat()


def _short_repr(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."
