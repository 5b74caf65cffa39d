"""Traces, metrics and the log context of deliveries (see ``docs/observability.md``).

One seam: :data:`hooks` is :class:`~django_cloudtasks.telemetry.otel.OpenTelemetry`
when the ``otel`` extra (``opentelemetry-api``) is installed, else :class:`Telemetry`,
whose hooks do nothing but keep the log context. The engine, the transports and the
runner reach it as ``telemetry.hooks`` (looked up at each call, so a test can swap
it); no other module imports OpenTelemetry.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from django_cloudtasks.telemetry.base import Submission, Telemetry
from django_cloudtasks.telemetry.scope import (
    DeliveryFilter,
    Scope,
    current,
    get_logger,
    node_fields,
)

__all__ = [
    "DeliveryFilter",
    "Scope",
    "Submission",
    "Telemetry",
    "attempt",
    "attempt_async",
    "current",
    "get_logger",
    "hooks",
    "load",
    "node_fields",
]


def load() -> Telemetry:
    """The hooks this environment supports: OpenTelemetry's when it is installed."""
    try:
        # Here, not at the top: this import is the one that fails without the extra.
        from django_cloudtasks.telemetry.otel import OpenTelemetry
    except ImportError:
        return Telemetry()
    return OpenTelemetry()


#: The hooks in use (see :func:`load`).
hooks: Telemetry = load()

R = TypeVar("R")
Run = Callable[[Any, Mapping[str, str], Any], R]


def attempt(run: Run[R]) -> Run[R]:
    """Wrap the runner's ``_start(node, headers, inline)`` in :meth:`Telemetry.attempt`."""

    @functools.wraps(run)
    def attempted(node: Any, headers: Mapping[str, str], inline: Any) -> R:
        with hooks.attempt(node, headers) as scope:
            return scope.ended(run(node, headers, inline))  # type: ignore[no-any-return]

    return attempted


def attempt_async(run: Run[Awaitable[R]]) -> Run[Awaitable[R]]:
    """:func:`attempt` for the runner's ``_astart``."""

    @functools.wraps(run)
    async def attempted(node: Any, headers: Mapping[str, str], inline: Any) -> R:
        with hooks.attempt(node, headers) as scope:
            return scope.ended(await run(node, headers, inline))  # type: ignore[no-any-return]

    return attempted
