"""The former name of :mod:`canvas.executor`, kept so existing imports keep working."""

from __future__ import annotations

from canvas.executor import Executor as Engine
from canvas.executor import current, install

__all__ = ["Engine", "current", "install"]
