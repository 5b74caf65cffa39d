"""``EagerResult``: what ``Task.apply()`` returns, as Celery's does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EagerResult:
    """The outcome of :meth:`Task.apply`: Celery's ``EagerResult``."""

    id: str
    state: str
    result: Any
    traceback: str | None = None

    @property
    def status(self) -> str:
        """The same as :attr:`state`."""
        return self.state

    @property
    def info(self) -> Any:
        """The same as :attr:`result`."""
        return self.result

    def ready(self) -> bool:
        """Always true: the function has run."""
        return True

    def successful(self) -> bool:
        """True when the function returned."""
        return self.state == "SUCCESS"

    def failed(self) -> bool:
        """True when the function raised."""
        return self.state == "FAILURE"

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        """The return value; the exception is raised when ``propagate`` is true."""
        if self.failed() and propagate:
            raise self.result
        return self.result
