"""What a schedule is, and the two ways to declare one: ``@periodic`` and ``SCHEDULES``.

A :class:`Schedule` names what to start (a task with its arguments, or a canvas:
a function returning an expression, or an expression itself), when (a cron
expression in a time zone, or an interval), and what to do when runs overlap or
were missed. Declarations are validated when they are read; :func:`schedule_problems`
lists what is wrong with each, for the system checks and for ``sync``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils.module_loading import import_string

from canvas import Expression, Signature
from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import CloudTasksError
from django_cloudtasks.schedules.cron import unix_cron_problem

#: What happens when a slot comes while the previous run is unfinished.
OVERLAP_POLICIES = ("allow", "skip", "buffer_one")
#: Which missed slots within ``catch_up`` are started: every one, or only the latest.
CATCH_UP_MODES = ("all", "latest")
#: Cloud Scheduler's job ids: letters, digits, hyphens, underscores; 500 at most.
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_JOB_ID = 500
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH_NOTE = "intervals count from 1970-01-01 00:00 UTC"


class ScheduleError(CloudTasksError, ValueError):
    """A schedule declaration that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Schedule:
    """A periodic workflow: what to start, when, and the rules for overlaps and misses.

    Exactly one of ``task`` (a registered task name or a dotted path to a task, called
    with ``args``/``kwargs``) and ``canvas`` (a dotted path to a function returning an
    expression, called with ``args``/``kwargs``, or to an expression) says what starts.
    Exactly one of ``cron`` (five fields, read in ``timezone``) and ``every`` (a
    whole number of minutes, counted from the Unix epoch in UTC) says when.
    """

    name: str
    task: str | None = None
    canvas: str | None = None
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    overlap: str = "allow"
    catch_up: timedelta = timedelta(0)
    catch_up_mode: str = "all"
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    description: str = ""
    #: Where it was declared: ``SCHEDULES`` or ``@periodic on <function>``.
    origin: str = "SCHEDULES"
    #: The decorated task itself, for ``@periodic`` (no import needed).
    target: Any = field(default=None, compare=False, repr=False)

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the cron expression is read in.

        Raises:
            ScheduleError: for a name the tz database does not know.
        """
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(
                f"schedule {self.name!r}: unknown time zone {self.timezone!r}"
            ) from None

    @property
    def when(self) -> str:
        """``cron '0 3 * * *' Europe/Paris`` or ``every 0:15:00``, for listings."""
        if self.cron:
            return f"cron '{self.cron}' {self.timezone}"
        return f"every {self.every}"

    def expression(self) -> Any:
        """The canvas expression one run starts (a signature, chain, group or chord).

        Raises:
            ScheduleError: when the target does not import or does not give an expression.
        """
        if self.task is not None or self.target is not None:
            return _task_signature(self)
        assert self.canvas is not None
        target = _import(self.name, self.canvas)
        if isinstance(target, Expression):
            # An expression is callable too (calling one runs it): use it as it is.
            if self.args or self.kwargs:
                raise ScheduleError(
                    f"schedule {self.name!r}: {self.canvas} is an expression, which takes no "
                    "args or kwargs (give them to its signatures, or name a function)"
                )
            return target
        value = target(*self.args, **dict(self.kwargs)) if callable(target) else target
        if not isinstance(value, Expression):
            raise ScheduleError(
                f"schedule {self.name!r}: {self.canvas} gave {type(value).__name__}, not a "
                "canvas expression (a signature, chain, group or chord)"
            )
        return value


def _import(name: str, path: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise ScheduleError(f"schedule {name!r}: cannot import {path!r}: {exc}") from None


def _task_signature(schedule: Schedule) -> Any:
    """An immutable signature of the scheduled task (a run receives no parent result)."""
    # Here, not at the top: settings may name schedules before the tasks are imported.
    from django_cloudtasks.registry import registry

    target = schedule.target
    if target is None:
        assert schedule.task is not None
        if schedule.task in registry:
            return Signature(
                schedule.task, tuple(schedule.args), dict(schedule.kwargs), immutable=True
            )
        target = _import(schedule.name, schedule.task)
    task_name = _task_name(schedule.name, target)
    return Signature(task_name, tuple(schedule.args), dict(schedule.kwargs), immutable=True)


def _task_name(name: str, target: Any) -> str:
    """The registered name of ``target``: one of our tasks, or a ``django.tasks`` task."""
    # Here, not at the top: settings may name schedules before the tasks are imported,
    # and the Django Tasks backend is only needed for a django.tasks task.
    from django_cloudtasks.registry import Task

    if isinstance(target, Task):
        return target.name
    if type(target).__name__ == "Task" and hasattr(target, "enqueue"):
        from django_cloudtasks.backends import register

        return register(target)
    raise ScheduleError(
        f"schedule {name!r}: {target!r} is not a task (decorate it with @task, or with "
        "django.tasks' @task on the Cloud Tasks backend)"
    )


# -- declaring -------------------------------------------------------------------------


_declared: dict[str, Schedule] = {}
_declared_lock = threading.Lock()


def periodic(
    cron: str | None = None,
    *,
    every: timedelta | None = None,
    timezone: str = "UTC",
    name: str | None = None,
    overlap: str = "allow",
    catch_up: timedelta | str | float = 0,
    catch_up_mode: str = "all",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    enabled: bool = True,
    description: str = "",
) -> Callable[[Any], Any]:
    """Run the decorated task on a schedule: ``@periodic(cron="*/15 * * * *")``.

    Put it above ``@task`` (or above ``django.tasks``' ``@task``). The schedule is
    named after the task unless ``name`` is given; the other arguments are those of a
    ``SCHEDULES`` entry. Returns the task unchanged.

    Raises:
        ScheduleError: for a second schedule under a taken name.
    """

    def decorate(target: Any) -> Any:
        task_name = getattr(target, "name", None) or getattr(target, "__name__", "task")
        schedule_name = name or _job_safe(str(task_name))
        schedule = build_schedule(
            schedule_name,
            {
                "cron": cron,
                "every": every,
                "timezone": timezone,
                "overlap": overlap,
                "catch_up": catch_up,
                "catch_up_mode": catch_up_mode,
                "args": list(args),
                "kwargs": dict(kwargs or {}),
                "enabled": enabled,
                "description": description,
            },
            origin=f"@periodic on {getattr(target, '__module__', '?')}.{task_name}",
            target=target,
        )
        with _declared_lock:
            taken = _declared.get(schedule_name)
            if taken is not None and taken.origin != schedule.origin:
                raise ScheduleError(
                    f"schedule {schedule_name!r} is declared twice: {taken.origin} and "
                    f"{schedule.origin}"
                )
            _declared[schedule_name] = schedule
        return target

    return decorate


def _job_safe(name: str) -> str:
    """A task name made fit for a schedule name (dots and colons become hyphens)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def build_schedule(
    name: str, entry: Mapping[str, Any], origin: str = "SCHEDULES", target: Any = None
) -> Schedule:
    """A :class:`Schedule` from a ``SCHEDULES`` entry (or ``@periodic``'s arguments).

    Only the shape is checked here (types, durations); :func:`schedule_problems`
    checks the rest (cron, time zone, imports, names).

    Raises:
        ScheduleError: for an entry that is not a mapping, an unknown key, or a value
            of the wrong type.
    """
    if not isinstance(entry, Mapping):
        raise ScheduleError(f"schedule {name!r}: the entry must be a dict, not {entry!r}")
    known = {
        "task",
        "canvas",
        "cron",
        "every",
        "timezone",
        "overlap",
        "catch_up",
        "catch_up_mode",
        "args",
        "kwargs",
        "enabled",
        "description",
    }
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ScheduleError(
            f"schedule {name!r}: unknown keys {', '.join(unknown)} (known: "
            f"{', '.join(sorted(known))})"
        )
    every = entry.get("every")
    if every is not None and not isinstance(every, timedelta):
        every = timedelta(seconds=parse_duration(name, "every", every).total_seconds())
    args = entry.get("args") or ()
    kwargs = entry.get("kwargs") or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ScheduleError(f"schedule {name!r}: 'args' must be a list and 'kwargs' a dict")
    return Schedule(
        name=str(name),
        task=entry.get("task"),
        canvas=entry.get("canvas"),
        cron=entry.get("cron"),
        every=every,
        timezone=str(entry.get("timezone") or "UTC"),
        overlap=str(entry.get("overlap") or "allow"),
        catch_up=parse_duration(name, "catch_up", entry.get("catch_up") or 0),
        catch_up_mode=str(entry.get("catch_up_mode") or "all"),
        args=tuple(args),
        kwargs=dict(kwargs),
        enabled=bool(entry.get("enabled", True)),
        description=str(entry.get("description") or ""),
        origin=origin,
        target=target,
    )


def parse_duration(name: str, key: str, value: Any) -> timedelta:
    """``"1h"``, ``"30m"``, ``"2d"``, ``"90s"``, a number of seconds, or a timedelta.

    Raises:
        ScheduleError: for anything else, or a negative duration.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ScheduleError(
                f"schedule {name!r}: {key}={value!r} is not a duration "
                "(use a timedelta, seconds, or '90s', '15m', '1h', '2d')"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ScheduleError(f"schedule {name!r}: {key} must not be negative")
    return timedelta(seconds=seconds)


# -- reading ---------------------------------------------------------------------------


def all_schedules() -> dict[str, Schedule]:
    """Every declared schedule by name: ``@periodic`` ones, then ``SCHEDULES`` entries.

    Raises:
        ScheduleError: for a malformed ``SCHEDULES`` setting, or a name declared both
            ways.
    """
    configured = conf.SCHEDULES or {}
    if not isinstance(configured, Mapping):
        raise ScheduleError("CLOUDTASKS['SCHEDULES'] must be a dict of name -> entry")
    with _declared_lock:
        schedules = dict(_declared)
    for name, entry in configured.items():
        if name in schedules:
            raise ScheduleError(
                f"schedule {name!r} is declared twice: {schedules[name].origin} and SCHEDULES"
            )
        schedules[name] = build_schedule(name, entry)
    return schedules


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``.

    Raises:
        KeyError: when no schedule has that name.
        ScheduleError: when the declarations are malformed.
    """
    return all_schedules()[name]


def schedule_problems(schedule: Schedule) -> list[tuple[str, str]]:
    """What is wrong with ``schedule``, as ``(check id suffix, message)`` pairs.

    The ids: ``E101`` cron, ``E102`` time zone, ``E103`` target, ``E104`` name,
    ``E105`` other options.
    """
    problems: list[tuple[str, str]] = []
    name = schedule.name
    prefix = str(conf.SCHEDULE_JOB_PREFIX or "")
    if not _JOB_ID.match(name) or len(prefix + name) > _MAX_JOB_ID:
        problems.append(
            (
                "E104",
                f"schedule name {name!r} cannot name a Cloud Scheduler job: use letters, "
                f"digits, hyphens and underscores, at most {_MAX_JOB_ID - len(prefix)} "
                "characters",
            )
        )
    if (schedule.cron is None) == (schedule.every is None):
        problems.append(("E101", f"schedule {name!r}: give exactly one of cron and every"))
    elif schedule.cron is not None:
        problems += _cron_problems(name, schedule.cron)
    else:
        assert schedule.every is not None
        seconds = schedule.every.total_seconds()
        if seconds < 60 or seconds % 60:
            problems.append(
                (
                    "E101",
                    f"schedule {name!r}: every={schedule.every} is not a whole number of "
                    "minutes (Cloud Scheduler fires at most once a minute; "
                    f"{_EPOCH_NOTE})",
                )
            )
    try:
        schedule.zone  # noqa: B018 - raises for an unknown zone
    except ScheduleError as exc:
        problems.append(("E102", str(exc)))
    problems += _target_problems(schedule)
    if schedule.overlap not in OVERLAP_POLICIES:
        problems.append(
            (
                "E105",
                f"schedule {name!r}: overlap={schedule.overlap!r}; use one of "
                f"{', '.join(OVERLAP_POLICIES)}",
            )
        )
    if schedule.catch_up_mode not in CATCH_UP_MODES:
        problems.append(
            (
                "E105",
                f"schedule {name!r}: catch_up_mode={schedule.catch_up_mode!r}; use one of "
                f"{', '.join(CATCH_UP_MODES)}",
            )
        )
    return problems


def _cron_problems(name: str, cron: str) -> list[tuple[str, str]]:
    problem = unix_cron_problem(cron)
    if problem is None:
        return []
    return [("E101", f"schedule {name!r}: invalid cron {cron!r}: {problem}")]


def _target_problems(schedule: Schedule) -> list[tuple[str, str]]:
    name = schedule.name
    if schedule.target is None and (schedule.task is None) == (schedule.canvas is None):
        return [("E103", f"schedule {name!r}: give exactly one of task and canvas")]
    try:
        if schedule.canvas is not None:
            target = _import(name, schedule.canvas)
            if isinstance(target, Expression) and (schedule.args or schedule.kwargs):
                schedule.expression()  # raises: an expression takes no arguments
        else:
            _task_signature(schedule)
    except ScheduleError as exc:
        return [("E103", str(exc))]
    return []
