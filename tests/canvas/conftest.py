from __future__ import annotations

from typing import Any

import pytest

from canvas import Signature


class TaskStub:
    """Just enough of a task for tests: ``.s()`` and ``.si()`` build signatures."""

    def __init__(self, name: str) -> None:
        self.name = name

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self.name, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return Signature(self.name, args, kwargs, immutable=True)


def _tsum(numbers: list[int], extra: int = 0) -> int:
    return sum(numbers) + extra


FUNCTIONS = {
    "add": lambda x, y: x + y,
    "tsum": _tsum,
    "identity": lambda x: x,
}


@pytest.fixture
def add() -> TaskStub:
    return TaskStub("add")


@pytest.fixture
def tsum() -> TaskStub:
    return TaskStub("tsum")


@pytest.fixture
def identity() -> TaskStub:
    return TaskStub("identity")


@pytest.fixture
def functions() -> dict[str, Any]:
    return FUNCTIONS
