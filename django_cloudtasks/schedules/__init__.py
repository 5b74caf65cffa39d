"""Periodic workflows on Cloud Scheduler: ``@periodic`` and ``CLOUDTASKS["SCHEDULES"]``.

``declarations`` says what a schedule is, ``timing`` computes its slots, ``runs``
starts a slot exactly once by the overlap policy, ``cloud`` syncs the Cloud Scheduler
jobs with the code.
"""

from __future__ import annotations

from django_cloudtasks.schedules.declarations import Schedule, ScheduleError, periodic

__all__ = ["Schedule", "ScheduleError", "periodic"]
