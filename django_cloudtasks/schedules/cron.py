"""The cron expressions Cloud Scheduler accepts: five unix-cron fields, nothing more.

``cronsim`` (which computes the slots) also reads extensions Cloud Scheduler refuses:
``L`` (last day), ``W``, ``#``, ``?``, ``@daily``-style nicknames and steps after a
single value (``5/15``). A schedule written with one of them would pass locally and
fail at sync, so they are refused here, by the grammar of the Cloud Scheduler guide
(https://cloud.google.com/scheduler/docs/configuring/cron-job-schedules): each field
is ``*`` or a value or range, optionally followed by ``/STEP``, in a list separated by
commas; months and weekdays may be named (``JAN``-``DEC``, ``SUN``-``SAT``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

_NAMES = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT"
_VALUE = rf"(?:\d+|{_NAMES})"
_ITEM = rf"(?:\*|{_VALUE}-{_VALUE})(?:/\d+)?|{_VALUE}"
_FIELD = re.compile(rf"^(?:{_ITEM})(?:,(?:{_ITEM}))*$", re.IGNORECASE)
FIELDS = ("minute", "hour", "day of the month", "month", "day of the week")


def unix_cron_problem(expression: str) -> str | None:
    """What Cloud Scheduler would refuse in ``expression``, or None when it is valid."""
    fields = expression.split()
    if len(fields) != len(FIELDS):
        return (
            "must have five fields (minute hour day-of-month month day-of-week); Cloud "
            "Scheduler has no seconds field and no nicknames such as @daily"
        )
    for label, field in zip(FIELDS, fields, strict=True):
        if not _FIELD.match(field):
            return (
                f"the {label} field {field!r} is not unix-cron (Cloud Scheduler takes "
                "*, values, ranges, /steps and lists; not L, W, # or ?)"
            )
    try:
        next(CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC)))
    except (CronSimError, StopIteration, ValueError) as exc:
        return str(exc)
    return None
