"""The hooks of :mod:`django_cloudtasks.telemetry`, doing nothing (no ``otel`` extra)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from django_cloudtasks.telemetry.scope import Scope

if TYPE_CHECKING:
    from django_cloudtasks.models import Node

D = TypeVar("D")  # a transports.base.Dispatch (a layer above this package)


class Submission:
    """What :meth:`Telemetry.submitting` yields: told the workflow it created."""

    def created(self, workflow_id: str, name: str) -> None:
        """Name the workflow ``apply_async()`` stored."""


_SUBMISSION = Submission()


class Telemetry:
    """The hooks, doing nothing: what runs without the ``otel`` extra.

    Every method is cheap enough for the hot path: a call and a constant.
    """

    enabled = False

    def traceparent(self) -> str:
        """The W3C ``traceparent`` of the current span ("" when there is none)."""
        return ""

    def trace_ids(self) -> tuple[str, str, bool] | None:
        """The current span's trace id, span id (hex) and sampled flag, or None."""
        return None

    def stamp(self, dispatches: list[D]) -> list[D]:
        """``dispatches``, each carrying the trace it continues (see ``Dispatch``)."""
        return dispatches

    def continuing(self, traceparent: str) -> contextlib.AbstractContextManager[object]:
        """Make ``traceparent`` the current trace context while the block runs."""
        return contextlib.nullcontext()

    def submitting(self) -> contextlib.AbstractContextManager[Submission]:
        """The span of one ``apply_async()``, whose context the workflow keeps."""
        return contextlib.nullcontext(_SUBMISSION)

    def attempt(self, node: Node, headers: Mapping[str, str]) -> Scope:
        """The scope of one attempt of ``node`` (a span, with the ``otel`` extra)."""
        return Scope(node)

    def install(self) -> None:
        """Connect what listens to the engine's signals (at startup)."""
