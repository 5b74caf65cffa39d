"""The hook through which canvas expressions are run.

``canvas`` only describes and compiles work. Running it belongs to an executor that
another package installs (``django_cloudtasks`` does so when its app is ready). The
executor receives the expression and the run options and returns whatever handle it
chooses (``django_cloudtasks`` returns an ``AsyncResult``).
"""

from __future__ import annotations

from typing import Any, Protocol

from canvas.errors import NoExecutorError


class Executor(Protocol):
    """What an executor provides: run an expression with run-wide options."""

    # ``expression`` is a canvas.expression.Expression; this module sits below it
    # (expression.py imports it), so the type is not named here.
    def apply_async(self, expression: Any, options: dict[str, Any]) -> Any:
        """Start running ``expression``; ``options`` apply to the whole run."""

    async def aapply_async(self, expression: Any, options: dict[str, Any]) -> Any:
        """:meth:`apply_async` for async code, without blocking the event loop."""

    def call(self, signature: Any) -> Any:
        """Call ``signature``'s function in this process and return its result."""

    def apply(self, signature: Any, options: dict[str, Any]) -> Any:
        """Run ``signature``'s task in this process as Celery's ``sig.apply()`` does,
        returning an eager result that holds its outcome."""


_executor: Executor | None = None


def install(executor: Executor | None) -> Executor | None:
    """Install ``executor`` (or remove it with ``None``); return the previous one."""
    global _executor
    previous, _executor = _executor, executor
    return previous


def current() -> Executor:
    """Return the installed executor.

    Raises:
        NoExecutorError: when no executor is installed.
    """
    if _executor is None:
        raise NoExecutorError(
            "No canvas executor is installed, so expressions cannot be run. Add "
            "'django_cloudtasks' to INSTALLED_APPS (and call django.setup()), or "
            "install one with canvas.executor.install()."
        )
    return _executor
