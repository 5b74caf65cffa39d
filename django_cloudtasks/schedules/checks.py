"""System checks of the declared schedules (``manage.py check`` fails on an error).

* ``django_cloudtasks.E100``: ``SCHEDULES`` is malformed (not a dict, an unknown key, a
  value of the wrong type, a name declared twice).
* ``django_cloudtasks.E101``: an invalid cron expression or interval.
* ``django_cloudtasks.E102``: an unknown time zone.
* ``django_cloudtasks.E103``: a task or canvas that does not import.
* ``django_cloudtasks.E104``: a name Cloud Scheduler would refuse as a job id.
* ``django_cloudtasks.E105``: an unknown overlap policy or catch-up mode.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from django_cloudtasks.schedules.declarations import (
    ScheduleError,
    all_schedules,
    schedule_problems,
)


@checks.register("django_cloudtasks")
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every problem of every declared schedule, with a stable id."""
    try:
        schedules = all_schedules()
    except ScheduleError as exc:
        return [checks.Error(str(exc), id="django_cloudtasks.E100")]
    messages: list[checks.CheckMessage] = []
    for schedule in schedules.values():
        for suffix, message in schedule_problems(schedule):
            messages.append(
                checks.Error(message, obj=schedule.origin, id=f"django_cloudtasks.{suffix}")
            )
    return messages
