"""Starting the run of a slot: exactly once, by the overlap policy; catch-up, backfill.

Every way a slot can start (Cloud Scheduler's call, the tick catching up, a
backfill, ``run-now``) goes through :func:`fire`, which in one transaction locks the
schedule's :class:`~django_cloudtasks.models.ScheduleState` row, records the slot's
:class:`~django_cloudtasks.models.ScheduleRun` (unique per schedule and slot) and,
when the overlap policy lets it, starts the workflow with the public canvas API. A
retried or duplicated call of a slot finds its row and starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from django_cloudtasks.conf import conf
from django_cloudtasks.constants import SCHEDULE_LOOKBACK
from django_cloudtasks.dispatch import after_commit
from django_cloudtasks.models import ScheduleRun, ScheduleRunState, ScheduleState
from django_cloudtasks.schedules.declarations import Schedule, ScheduleError, all_schedules
from django_cloudtasks.schedules.timing import is_slot, latest_slot, slots_between
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.schedules")

#: How far back the tick looks for missed slots, whatever ``catch_up`` says.
LOOKBACK = SCHEDULE_LOOKBACK
#: At most this many missed slots are recorded per schedule and tick (the latest ones).
MAX_MISSED_ROWS = 1000
#: At most this many slots in one backfill.
MAX_BACKFILL = 1000

#: The ways a slot is started.
SCHEDULER, CATCH_UP, BACKFILL, MANUAL, BUFFER = (
    "scheduler",
    "catch_up",
    "backfill",
    "manual",
    "buffered",
)


@dataclass(frozen=True)
class Fired:
    """What a call of a slot did: ``started``, ``skipped``, ``buffered``, ``duplicate``,
    ``paused`` (also for a disabled schedule), or for a call between two slots of an
    interval ``missed`` (the slot before it had no run and is past ``catch_up``) or
    ``idle`` (nothing was due); with the slot's run (None when paused or idle)."""

    outcome: str
    schedule: str
    slot: datetime
    run: ScheduleRun | None

    def as_json(self) -> dict[str, Any]:
        """The endpoint's answer."""
        run = self.run
        return {
            "outcome": self.outcome,
            "schedule": self.schedule,
            "slot": self.slot.isoformat(),
            "state": run.state if run else None,
            "workflow": str(run.workflow_id) if run and run.workflow_id else None,
        }


def _state_for_update(name: str) -> ScheduleState:
    """The schedule's state row, created if new, locked until the transaction ends."""
    ScheduleState.objects.get_or_create(name=name)
    return ScheduleState.objects.select_for_update().get(name=name)


def _start(schedule: Schedule, run: ScheduleRun, now: datetime) -> None:
    """Start the schedule's workflow for ``run``.

    Raises:
        ScheduleError: when the target cannot give an expression, or the expression
            cannot be started (an unknown task, arguments that do not bind).
    """
    expression = schedule.expression()
    try:
        result = expression.apply_async()
    except (TypeError, ValueError, LookupError) as exc:
        raise ScheduleError(f"schedule {schedule.name!r} cannot start: {exc}") from exc
    run.workflow_id = result.workflow_id
    run.state, run.started_at = ScheduleRunState.STARTED, now
    logger.info(
        "schedule %s: slot %s started workflow %s",
        schedule.name,
        run.slot.isoformat(),
        run.workflow_id,
        extra={"workflow_id": str(run.workflow_id), "schedule": schedule.name},
    )


def _promote_buffered(schedule: Schedule, now: datetime) -> ScheduleRun | None:
    """Start the buffered run once nothing runs (``buffer_one``); call under the lock."""
    runs = ScheduleRun.objects.of(schedule.name)
    if runs.running().exists():
        return None
    waiting = runs.buffered().order_by("slot").first()
    if waiting is None:
        return None
    _start(schedule, waiting, now)
    waiting.save(update_fields=["workflow", "state", "started_at"])
    return waiting


def start_buffered_when_finished(sender: Any, workflow_id: Any, **kwargs: Any) -> None:
    """Start a ``buffer_one`` schedule's buffered run as soon as its running one finishes.

    A receiver of ``workflow_finished`` (connected at startup). It asks the database
    nothing unless a declared schedule buffers; then one query finds whether the
    finished workflow was such a schedule's run, and the buffered run starts after the
    commit. The sweeper's :func:`tick` remains the backstop.
    """
    buffering = {n: s for n, s in all_schedules().items() if s.overlap == "buffer_one"}
    if not buffering:
        return
    name = (
        ScheduleRun.objects.filter(workflow_id=workflow_id, schedule__in=list(buffering))
        .values_list("schedule", flat=True)
        .first()
    )
    if name is not None:
        after_commit(partial(promote_buffered, buffering[name]))


def promote_buffered(schedule: Schedule, now: datetime | None = None) -> ScheduleRun | None:
    """Start ``schedule``'s buffered run if nothing of it runs and it is not paused.

    Errors are logged, not raised: the sweeper's tick tries again.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            state = _state_for_update(schedule.name)
            if state.paused or not schedule.enabled:
                return None
            return _promote_buffered(schedule, now)
    except ScheduleError as exc:
        logger.error("schedule %s: %s", schedule.name, exc)
        return None


def _decide(schedule: Schedule, trigger: str) -> str:
    """The state a new slot gets by the overlap policy (call under the lock)."""
    if trigger == MANUAL or schedule.overlap == "allow":
        return ScheduleRunState.STARTED
    runs = ScheduleRun.objects.of(schedule.name)
    if not runs.running().exists():
        return ScheduleRunState.STARTED
    if schedule.overlap == "buffer_one" and not runs.buffered().exists():
        return ScheduleRunState.BUFFERED
    return ScheduleRunState.SKIPPED


def fire(
    schedule: Schedule, slot: datetime, trigger: str = SCHEDULER, now: datetime | None = None
) -> Fired:
    """Record ``slot`` of ``schedule`` and start its workflow if the overlap policy allows.

    A slot already recorded starts nothing (``duplicate``), except a slot the tick had
    recorded as missed, which a late call of Cloud Scheduler (or a backfill) starts
    after all. A paused schedule starts nothing unless ``trigger`` is ``manual``.

    Raises:
        ScheduleError: when the schedule's target cannot give an expression; nothing
            is recorded.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            state = _state_for_update(schedule.name)
            if (state.paused or not schedule.enabled) and trigger != MANUAL:
                return Fired("paused", schedule.name, slot, None)
            _promote_buffered(schedule, now)
            run = ScheduleRun.objects.filter(schedule=schedule.name, slot=slot).first()
            if run is not None and not (
                run.state == ScheduleRunState.MISSED and trigger in (SCHEDULER, BACKFILL)
            ):
                return Fired("duplicate", schedule.name, slot, run)
            decided = _decide(schedule, trigger)
            if run is None:
                run = ScheduleRun(schedule=schedule.name, slot=slot, created_at=now)
            run.state, run.trigger = decided, trigger
            if decided == ScheduleRunState.STARTED:
                _start(schedule, run, now)
            run.save()
    except IntegrityError:
        # Another process recorded the slot between our read and write (no row lock
        # on SQLite): it is theirs.
        run = ScheduleRun.objects.get(schedule=schedule.name, slot=slot)
        return Fired("duplicate", schedule.name, slot, run)
    if decided != ScheduleRunState.STARTED:
        logger.info("schedule %s: slot %s %s", schedule.name, slot.isoformat(), decided.lower())
    return Fired(decided.lower(), schedule.name, slot, run)


def call(schedule: Schedule, moment: datetime, now: datetime | None = None) -> Fired:
    """Answer Cloud Scheduler's call of ``schedule`` scheduled for ``moment``.

    The call belongs to the latest slot at or before ``moment``. A call at a slot
    catches up the missed slots before it, then fires the slot (:func:`fire`). The job
    of an interval fires on a coarser cron, so some calls come between two slots: such
    a call starts nothing new unless the slot before it has no run, which means that
    slot's own call was lost. That slot is then handled as missed, like :func:`tick`
    does: started within ``catch_up``, else recorded as ``MISSED``.

    Raises:
        ScheduleError: when the schedule's target cannot give an expression.
    """
    now = now or timezone.now()
    slot = latest_slot(schedule, moment)
    if is_slot(schedule, moment):
        catch_up(schedule, before=slot, now=now)
        return fire(schedule, slot, now=now)
    if (
        not schedule.enabled
        or ScheduleState.objects.filter(name=schedule.name, paused=True).exists()
    ):
        return Fired("paused", schedule.name, slot, None)
    existing = ScheduleRun.objects.filter(schedule=schedule.name, slot=slot).first()
    if existing is not None:
        return Fired("duplicate", schedule.name, slot, existing)
    report = TickReport()
    _tick_one(schedule, now, moment, report)
    run = ScheduleRun.objects.filter(schedule=schedule.name, slot=slot).first()
    if run is None:
        return Fired("idle", schedule.name, slot, None)
    outcome = "missed" if run.state == ScheduleRunState.MISSED else run.state.lower()
    return Fired(outcome, schedule.name, slot, run)


def run_now(schedule: Schedule, now: datetime | None = None) -> Fired:
    """Start a run at once, whatever the overlap policy or a pause (its slot is now)."""
    now = now or timezone.now()
    return fire(schedule, now, trigger=MANUAL, now=now)


def backfill(schedule: Schedule, start: datetime, end: datetime) -> list[Fired]:
    """Fire every slot from ``start`` to ``end`` (both included), oldest first.

    Each slot goes through :func:`fire`, so the overlap policy applies and slots that
    already ran start nothing.

    Raises:
        ScheduleError: when the range ends in the future or holds more than
            :data:`MAX_BACKFILL` slots.
    """
    if end > timezone.now():
        raise ScheduleError(
            f"schedule {schedule.name!r}: a backfill ends now at the latest, not {end.isoformat()}"
        )
    slots = []
    for slot in slots_between(schedule, start - timedelta(microseconds=1), end):
        slots.append(slot)
        if len(slots) > MAX_BACKFILL:
            raise ScheduleError(
                f"schedule {schedule.name!r}: more than {MAX_BACKFILL} slots between "
                f"{start.isoformat()} and {end.isoformat()}; backfill a shorter range"
            )
    return [fire(schedule, slot, trigger=BACKFILL) for slot in slots]


def set_paused(name: str, paused: bool) -> None:
    """Pause or resume a schedule in the database (the tick and the endpoint obey it)."""
    with transaction.atomic():
        state = _state_for_update(name)
        state.paused, state.updated_at = paused, timezone.now()
        state.save(update_fields=["paused", "updated_at"])


# -- the tick --------------------------------------------------------------------------


@dataclass
class TickReport:
    """What a tick did, by schedule: slots started, recorded as missed, buffered runs started."""

    started: dict[str, int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)
    promoted: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Totals, and the errors by schedule."""
        return {
            "started": sum(self.started.values()),
            "missed": sum(self.missed.values()),
            "promoted": sum(self.promoted.values()),
            "errors": dict(self.errors),
        }


def tick(now: datetime | None = None, grace: float | None = None) -> TickReport:
    """Catch up on missed slots and start buffered runs, for every enabled schedule.

    A slot is missed when it is more than ``grace`` seconds old (``SCHEDULE_GRACE``,
    120) and has no run. Missed slots within the schedule's ``catch_up`` window are
    started (all of them, or with ``catch_up_mode="latest"`` only the latest), older
    ones are recorded as ``MISSED``. A schedule's slots are only looked for after it
    was first seen, and at most :data:`LOOKBACK` back.
    """
    now = now or timezone.now()
    grace = float(conf.SCHEDULE_GRACE if grace is None else grace)
    report = TickReport()
    for schedule in all_schedules().values():
        if not schedule.enabled:
            continue
        try:
            _tick_one(schedule, now, now - timedelta(seconds=grace), report)
        except ScheduleError as exc:
            report.errors[schedule.name] = str(exc)
            logger.error("schedule %s: %s", schedule.name, exc)
    return report


def catch_up(schedule: Schedule, before: datetime, now: datetime | None = None) -> TickReport:
    """Handle the missed slots of ``schedule`` earlier than ``before`` (the slot Cloud
    Scheduler is calling now) and after the last recorded one: record or start them as
    :func:`tick` does. With ``catch_up_mode="latest"`` none is started, since the slot
    being called is later. The first call of a schedule has nothing to catch up.
    """
    now = now or timezone.now()
    report = TickReport()
    _tick_one(schedule, now, before - timedelta(microseconds=1), report, superseded=True)
    return report


def _tick_one(
    schedule: Schedule,
    now: datetime,
    late_before: datetime,
    report: TickReport,
    superseded: bool = False,
) -> None:
    with transaction.atomic():
        state = _state_for_update(schedule.name)
        if state.paused:
            return
        if _promote_buffered(schedule, now) is not None:
            report.promoted[schedule.name] = 1
        last = (
            ScheduleRun.objects.of(schedule.name)
            .exclude(trigger=MANUAL)
            .aggregate(last=Max("slot"))["last"]
        )
        if last is None and superseded:
            return  # the first call of a new schedule: nothing was due before it
        since = max(d for d in (last, state.first_seen, now - LOOKBACK) if d is not None)
        late = list(slots_between(schedule, since, late_before))
        window_start = now - schedule.catch_up
        catch = [slot for slot in late if schedule.catch_up and slot > window_start]
        if schedule.catch_up_mode == "latest":
            catch = [] if superseded else catch[-1:]
        missed = [slot for slot in late if slot not in catch][-MAX_MISSED_ROWS:]
        ScheduleRun.objects.bulk_create(
            [
                ScheduleRun(
                    schedule=schedule.name,
                    slot=slot,
                    state=ScheduleRunState.MISSED,
                    trigger=CATCH_UP,
                    created_at=now,
                )
                for slot in missed
            ],
            ignore_conflicts=True,
        )
    if missed:
        report.missed[schedule.name] = len(missed)
        logger.warning("schedule %s: %d slots missed", schedule.name, len(missed))
    started = [fire(schedule, slot, trigger=CATCH_UP, now=now) for slot in catch]
    count = sum(1 for item in started if item.outcome != "duplicate")
    if count:
        report.started[schedule.name] = count
