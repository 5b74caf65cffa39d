"""Slots: the moments a schedule is due, in UTC, from its cron (and time zone) or interval.

Cron expressions are read by ``cronsim`` in the schedule's time zone, with Debian
cron's rules at daylight saving changes (as Cloud Scheduler): a time skipped by the
spring change runs at the first minute after it, and a time repeated in autumn runs
once. Intervals count from the Unix epoch in UTC, so every process agrees on the
slots of ``every=timedelta(minutes=90)`` without any stored state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from cronsim import CronSim

from django_cloudtasks.schedules.declarations import Schedule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC)


def _interval(schedule: Schedule) -> float:
    assert schedule.every is not None
    return schedule.every.total_seconds()


def next_slot(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after ``after``."""
    after = _utc(after)
    if schedule.cron is None:
        step = _interval(schedule)
        count = math.floor((after - _EPOCH).total_seconds() / step) + 1
        return _EPOCH + timedelta(seconds=count * step)
    local = after.astimezone(schedule.zone).replace(microsecond=0)
    return _utc(next(CronSim(schedule.cron, local)))


def latest_slot(schedule: Schedule, at: datetime) -> datetime:
    """The last slot at or before ``at``."""
    at = _utc(at)
    if schedule.cron is None:
        step = _interval(schedule)
        count = math.floor((at - _EPOCH).total_seconds() / step)
        return _EPOCH + timedelta(seconds=count * step)
    local = (at.replace(microsecond=0) + _SECOND).astimezone(schedule.zone)
    candidate = _utc(next(CronSim(schedule.cron, local, reverse=True)))
    # Walking back across a DST change may land beside the slot cron would pick going
    # forward; the forward walk from just before it is the reference.
    slot = next_slot(schedule, candidate - _SECOND)
    while slot > at:
        candidate -= timedelta(hours=1)
        slot = next_slot(schedule, candidate - _SECOND)
    return slot


def slots_between(schedule: Schedule, start: datetime, end: datetime) -> Iterator[datetime]:
    """The slots ``s`` with ``start < s <= end``, oldest first."""
    slot = next_slot(schedule, start)
    end = _utc(end)
    while slot <= end:
        yield slot
        slot = next_slot(schedule, slot)


def is_slot(schedule: Schedule, moment: datetime) -> bool:
    """Whether ``moment`` is one of the schedule's slots (to the second)."""
    moment = _utc(moment).replace(microsecond=0)
    return next_slot(schedule, moment - _SECOND) == moment


def job_schedule(schedule: Schedule) -> tuple[str, str]:
    """The ``(cron, time zone)`` of the Cloud Scheduler job that drives ``schedule``.

    A cron schedule's job fires on the cron itself. An interval's job fires on the
    coarsest cron that reaches every slot (``*/15 * * * *`` for 15 minutes, ``0 */6 *
    * *`` for 6 hours, ``*/30 * * * *`` for 90 minutes); a call between two slots
    finds its slot already started and starts nothing.
    """
    if schedule.cron is not None:
        return schedule.cron, schedule.timezone
    minutes = int(_interval(schedule) // 60)
    if minutes % 1440 == 0:
        return "0 0 * * *", "UTC"
    if minutes % 60 == 0:
        hours = minutes // 60
        if 24 % hours == 0:
            return ("0 * * * *" if hours == 1 else f"0 */{hours} * * *"), "UTC"
        return "0 * * * *", "UTC"
    step = math.gcd(minutes, 60)
    return ("* * * * *" if step == 1 else f"*/{step} * * * *"), "UTC"
