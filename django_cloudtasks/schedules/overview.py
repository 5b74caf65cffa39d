"""One line per schedule: when it runs next, how its last run went, whether it is paused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from django_cloudtasks.models import ScheduleRun, ScheduleState
from django_cloudtasks.schedules.declarations import Schedule
from django_cloudtasks.schedules.timing import next_slot


@dataclass(frozen=True)
class ScheduleLine:
    """What ``cloudtasks_schedules list`` and the admin's Schedules page show."""

    name: str
    when: str
    overlap: str
    catch_up: str
    status: str
    paused: bool
    next_run: datetime | None
    last_slot: datetime | None
    last_outcome: str | None
    last_workflow: str | None
    origin: str
    #: How the schedule's Cloud Scheduler job differs from the code, when it was read.
    drift: str | None = None


def overview(
    schedules: Iterable[Schedule], now: datetime, drift: Mapping[str, str] | None = None
) -> list[ScheduleLine]:
    """The lines of ``schedules``, by name (one query, plus one per schedule).

    ``drift`` gives each schedule's drift (see
    :meth:`~django_cloudtasks.schedules.cloud.SchedulerJobs.drift`), when it was read.
    """
    schedules = sorted(schedules, key=lambda s: s.name)
    names = [s.name for s in schedules]
    paused = set(
        ScheduleState.objects.filter(name__in=names, paused=True).values_list("name", flat=True)
    )
    last: dict[str, ScheduleRun] = {}
    for name in names:
        run = (
            ScheduleRun.objects.of(name)
            .exclude(state="MISSED")
            .select_related("workflow")
            .order_by("-slot")
            .first()
        )
        if run is not None:
            last[name] = run
    lines = []
    for schedule in schedules:
        run = last.get(schedule.name)
        is_paused = schedule.name in paused
        status = "disabled" if not schedule.enabled else "paused" if is_paused else "active"
        lines.append(
            ScheduleLine(
                name=schedule.name,
                when=schedule.when,
                overlap=schedule.overlap,
                catch_up=(
                    f"{schedule.catch_up} ({schedule.catch_up_mode})"
                    if schedule.catch_up
                    else "none"
                ),
                status=status,
                paused=is_paused,
                next_run=next_slot(schedule, now) if status == "active" else None,
                last_slot=run.slot if run else None,
                last_outcome=run.outcome if run else None,
                last_workflow=str(run.workflow_id) if run and run.workflow_id else None,
                origin=schedule.origin,
                drift=drift.get(schedule.name) if drift is not None else None,
            )
        )
    return lines
