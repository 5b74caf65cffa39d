"""The hook through which canvas expressions are run.

``canvas`` only describes and compiles work. Running it belongs to an engine that
another package installs (``django_cloudtasks`` does so when its app is ready). The
engine receives the expression and the run options and returns whatever handle it
chooses (``django_cloudtasks`` returns an ``AsyncResult``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from canvas.errors import NoEngineError

if TYPE_CHECKING:
    from canvas.expression import Expression


class Engine(Protocol):
    """What an engine provides: run an expression with run-wide options."""

    def apply_async(self, expression: Expression, options: dict[str, Any]) -> Any:
        """Start running ``expression``; ``options`` apply to the whole run."""


_engine: Engine | None = None


def install(engine: Engine | None) -> Engine | None:
    """Install ``engine`` (or remove it with ``None``); return the previous one."""
    global _engine
    previous, _engine = _engine, engine
    return previous


def current() -> Engine:
    """Return the installed engine.

    Raises:
        NoEngineError: when no engine is installed.
    """
    if _engine is None:
        raise NoEngineError(
            "No canvas engine is installed, so expressions cannot be run. Add "
            "'django_cloudtasks' to INSTALLED_APPS (and call django.setup()), or "
            "install an engine with canvas.engine.install()."
        )
    return _engine
