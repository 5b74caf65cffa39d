"""Exceptions raised by the canvas layer."""

from __future__ import annotations


class CanvasError(Exception):
    """Base class for errors in describing or compiling a canvas expression."""


class NoExecutorError(CanvasError, RuntimeError):
    """Raised by ``apply_async``/``delay`` when no executor is installed."""


#: The former name of :class:`NoExecutorError`.
NoEngineError = NoExecutorError


class GraphFormatError(CanvasError, ValueError):
    """Raised when a serialized graph cannot be decoded."""
