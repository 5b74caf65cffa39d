"""Trivial tasks: they touch no database, so every query counted is the library's."""

from __future__ import annotations

from django_cloudtasks import task


@task(name="bench_noop")
def noop(value: int) -> int:
    """Return ``value``."""
    return value


@task(name="bench_inc")
def inc(value: int) -> int:
    """Return ``value + 1`` (a chain step)."""
    return value + 1


@task(name="bench_tsum")
def tsum(values: list[int]) -> int:
    """Sum a group's results (a chord's callback)."""
    return sum(values)
