"""Cloud Scheduler jobs in the emulator: the job store, and each job fired on time over HTTP.

:class:`SchedulerEmulator` keeps the jobs that ``google.cloud.scheduler.v1.CloudScheduler``
manages (served by :mod:`.scheduler`) and fires each enabled job's HTTP target on its
unix-cron schedule in the job's time zone, as Cloud Scheduler does: a POST with the job's body
and headers, ``X-CloudScheduler: true``, ``X-CloudScheduler-JobName`` and
``X-CloudScheduler-ScheduleTime`` (RFC 3339, UTC), and an OIDC token when the job
asks for one; a failed call is retried by the job's ``retry_config``. A job never has
two executions outstanding.

``time_scale`` runs the scheduler's clock faster than real time from the moment it
starts (60: an hourly job fires every minute), so that a developer can watch a
schedule without waiting for it; the schedule times sent are those of the fast clock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from cronsim import CronSim, CronSimError
from google.cloud import scheduler_v1
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from .errors import EmulatorError, invalid, not_found
from .names import is_location_name
from .policy import RetryPolicy

logger = logging.getLogger("django_cloudtasks.emulator.scheduler")

_JOB_NAME = re.compile(r"^(projects/[^/]+/locations/[^/]+)/jobs/([A-Za-z0-9_-]{1,500})$")
#: Cloud Scheduler's default deadline for HTTP targets, in seconds.
DEFAULT_DEADLINE = 180.0
#: The most retries a job's ``retry_config`` may ask for.
MAX_RETRY_COUNT = 5
_USER_FIELDS = (
    "description",
    "http_target",
    "schedule",
    "time_zone",
    "retry_config",
    "attempt_deadline",
)
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# A unix-cron field as Cloud Scheduler reads it. cronsim, which computes the fire times,
# also reads extensions (L, W, #, ?, 5/15) that the service refuses. (The app checks its
# schedules with the same grammar; the emulator imports nothing of the app.)
_CRON_NAMES = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT"
_CRON_VALUE = rf"(?:\d+|{_CRON_NAMES})"
_CRON_ITEM = rf"(?:\*|{_CRON_VALUE}-{_CRON_VALUE})(?:/\d+)?|{_CRON_VALUE}"
_CRON_FIELD = re.compile(rf"^(?:{_CRON_ITEM})(?:,(?:{_CRON_ITEM}))*$", re.IGNORECASE)


@dataclass(frozen=True)
class Execution:
    """One HTTP call of a job: when it was due (on the scheduler's clock) and the answer."""

    job_name: str
    url: str
    schedule_time: datetime
    status_code: int | None
    error: str | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        """True for a 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def outcome(self) -> str:
        """The status code, or the error of a call that got no answer."""
        return str(self.status_code or self.error)


class SchedulerClock:
    """Real time, or real time sped up ``time_scale`` times from when it was made."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, not {time_scale!r}")
        self.time_scale = float(time_scale)
        self._origin = time.time()

    def now(self) -> float:
        """The scheduler's time, in seconds since the epoch."""
        return self._origin + (time.time() - self._origin) * self.time_scale

    def real_seconds(self, scheduler_seconds: float) -> float:
        """How long ``scheduler_seconds`` of the scheduler's time last in real time."""
        return scheduler_seconds / self.time_scale


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo("UTC" if name.lower() in ("", "utc") else name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(f"unknown time zone {name!r}") from None


def next_fire(schedule: str, time_zone: str, after: float) -> float:
    """The first time strictly after ``after`` (epoch seconds) that ``schedule`` fires.

    Raises:
        EmulatorError: INVALID_ARGUMENT for a schedule that is not five-field unix-cron,
            or an unknown time zone.
    """
    if len(schedule.split()) != 5:
        raise invalid(
            f"schedule {schedule!r} is not unix-cron (five fields); the emulator does not "
            "read the English-like format"
        )
    for part in schedule.split():
        if not _CRON_FIELD.match(part):
            raise invalid(
                f"invalid schedule {schedule!r}: {part!r} is not a unix-cron field (*, "
                "values, ranges, /steps and lists; Cloud Scheduler has no L, W, # or ?)"
            )
    start = datetime.fromtimestamp(int(after), UTC).astimezone(_zone(time_zone))
    try:
        return next(CronSim(schedule, start)).timestamp()
    except (CronSimError, StopIteration, ValueError) as exc:
        raise invalid(f"invalid schedule {schedule!r}: {exc}") from None


def _retry_policy(job: scheduler_v1.Job) -> tuple[int, RetryPolicy]:
    """How many times a failed call of ``job`` is retried, and the backoffs (defaults
    filled as Cloud Scheduler documents them: 5 s, doubling 5 times, at most 1 hour)."""
    config = job.retry_config
    policy = RetryPolicy(
        max_attempts=config.retry_count + 1,
        max_retry_duration=0.0,
        min_backoff=config.min_backoff_duration.total_seconds() or 5.0,
        max_backoff=config.max_backoff_duration.total_seconds() or 3600.0,
        max_doublings=config.max_doublings or 5,
    )
    return config.retry_count, policy


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SchedulerEmulator:
    """The jobs, their firing thread, and the record of their executions.

    ``mint_token(audience, email)`` gives the bearer token of jobs with an OIDC token.
    """

    def __init__(self, mint_token: Callable[[str, str], str], time_scale: float = 1.0) -> None:
        self.clock = SchedulerClock(time_scale)
        self._mint_token = mint_token
        self._jobs: dict[str, scheduler_v1.Job] = {}
        self._due: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self._history: list[Execution] = []
        self.cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # -- the API -------------------------------------------------------------------------

    def create_job(self, parent: str, job: scheduler_v1.Job) -> scheduler_v1.Job:
        """CreateJob: INVALID_ARGUMENT for a bad job, ALREADY_EXISTS for a taken name."""
        if not is_location_name(parent):
            raise invalid(f"parent {parent!r} is not projects/PROJECT/locations/LOCATION")
        job = scheduler_v1.Job(job)
        match = _JOB_NAME.match(job.name)
        if match is None or match.group(1) != parent:
            raise invalid(
                f"job name {job.name!r} is not {parent}/jobs/JOB_ID (letters, digits, "
                "hyphens, underscores, at most 500)"
            )
        self._validate(job)
        with self.cond:
            if job.name in self._jobs:
                raise EmulatorError(grpc.StatusCode.ALREADY_EXISTS, f"job {job.name} exists")
            job.state = scheduler_v1.Job.State(scheduler_v1.Job.State.ENABLED)
            job.user_update_time = _timestamp(time.time())
            self._jobs[job.name] = job
            self._schedule(job)
            self.cond.notify_all()
            return scheduler_v1.Job(job)

    def get_job(self, name: str) -> scheduler_v1.Job:
        """GetJob: NOT_FOUND for an unknown job."""
        with self.cond:
            return scheduler_v1.Job(self._job(name))

    def list_jobs(
        self, parent: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[scheduler_v1.Job], str]:
        """ListJobs: the jobs of ``parent`` by name, a page at a time."""
        if not is_location_name(parent):
            raise invalid(f"parent {parent!r} is not projects/PROJECT/locations/LOCATION")
        with self.cond:
            names = sorted(n for n in self._jobs if n.startswith(parent + "/jobs/"))
            start = int(page_token) if page_token.isdigit() else 0
            size = page_size if 0 < page_size <= 500 else 500
            page = [scheduler_v1.Job(self._jobs[n]) for n in names[start : start + size]]
            more = start + size < len(names)
            return page, str(start + size) if more else ""

    def update_job(self, job: scheduler_v1.Job, paths: list[str]) -> scheduler_v1.Job:
        """UpdateJob: the fields in ``paths`` (all user fields when empty) from ``job``."""
        with self.cond:
            current = self._job(job.name)
            updated = scheduler_v1.Job(current)
            for path in paths or _USER_FIELDS:
                top = path.split(".", 1)[0]
                if top not in _USER_FIELDS:
                    raise invalid(f"update_mask path {path!r} cannot be updated")
                if top in job:
                    setattr(updated, top, getattr(job, top))
                elif top in updated:
                    delattr(updated, top)
            self._validate(updated)
            updated.user_update_time = _timestamp(time.time())
            self._jobs[job.name] = updated
            self._schedule(updated)
            self.cond.notify_all()
            return scheduler_v1.Job(updated)

    def delete_job(self, name: str) -> None:
        """DeleteJob: NOT_FOUND for an unknown job."""
        with self.cond:
            self._job(name)
            del self._jobs[name]
            self._due.pop(name, None)

    def set_state(self, name: str, state: int) -> scheduler_v1.Job:
        """PauseJob (PAUSED) and ResumeJob (ENABLED)."""
        with self.cond:
            job = self._job(name)
            job.state = scheduler_v1.Job.State(state)
            self._schedule(job)
            self.cond.notify_all()
            return scheduler_v1.Job(job)

    def run_job(self, name: str) -> scheduler_v1.Job:
        """RunJob: fire the job now, with now as its schedule time."""
        with self.cond:
            job = self._job(name)
            self._fire(job, self.clock.now(), reschedule=False)
            return scheduler_v1.Job(job)

    def _job(self, name: str) -> scheduler_v1.Job:
        job = self._jobs.get(name)
        if job is None:
            raise not_found(f"job {name} does not exist")
        return job

    def _validate(self, job: scheduler_v1.Job) -> None:
        if not job.schedule:
            raise invalid("a job needs a schedule")
        next_fire(job.schedule, job.time_zone, self.clock.now())
        if "http_target" not in job:
            raise invalid("the emulator fires HTTP targets only; set http_target")
        if not job.http_target.uri.startswith(("http://", "https://")):
            raise invalid(f"http_target.uri {job.http_target.uri!r} is not an http(s) URL")
        if len(job.description) > 500:
            raise invalid("a description holds at most 500 characters")
        if not 0 <= job.retry_config.retry_count <= MAX_RETRY_COUNT:
            raise invalid(f"retry_config.retry_count must be between 0 and {MAX_RETRY_COUNT}")

    def _schedule(self, job: scheduler_v1.Job) -> None:
        """Compute the job's next fire time (call with the lock held)."""
        if job.state != scheduler_v1.Job.State.ENABLED:
            self._due.pop(job.name, None)
            job.schedule_time = timestamp_pb2.Timestamp()
            return
        due = next_fire(job.schedule, job.time_zone, self.clock.now())
        self._due[job.name] = due
        job.schedule_time = _timestamp(due)

    # -- inspection ----------------------------------------------------------------------

    @property
    def history(self) -> list[Execution]:
        """A snapshot of the executions so far, oldest first."""
        with self.cond:
            return list(self._history)

    # -- firing --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that fires jobs when they are due."""
        self._thread = threading.Thread(
            target=self._run, name="cloudtasks-emulator-cron", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop firing and join the threads (bounded by ``timeout``)."""
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for worker in list(self._workers):
            worker.join(timeout)

    def _run(self) -> None:
        with self.cond:
            while not self._stopping:
                now = self.clock.now()
                for name, due in list(self._due.items()):
                    if due <= now and name not in self._in_flight:
                        self._fire(self._jobs[name], due, reschedule=True)
                upcoming = [t for n, t in self._due.items() if n not in self._in_flight]
                if not upcoming:
                    self.cond.wait()  # until a job is created, resumed or answered
                    continue
                delay = self.clock.real_seconds(min(upcoming) - self.clock.now())
                self.cond.wait(max(0.0, min(delay, 1.0)))

    def _fire(self, job: scheduler_v1.Job, due: float, reschedule: bool) -> None:
        """Deliver ``job`` for ``due`` in a worker thread (call with the lock held)."""
        self._in_flight.add(job.name)
        if reschedule:
            following = next_fire(job.schedule, job.time_zone, due)
            self._due[job.name] = following
            job.schedule_time = _timestamp(following)
        job.last_attempt_time = _timestamp(time.time())
        worker = threading.Thread(
            target=self._deliver,
            args=(scheduler_v1.Job(job), due),
            name="cloudtasks-emulator-cron-call",
            daemon=True,
        )
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _deliver(self, job: scheduler_v1.Job, due: float) -> None:
        """Call ``job`` for ``due``, retrying a failed call by its ``retry_config``.

        As on Cloud Scheduler: ``retry_count`` retries (none by default), backoffs from
        ``min_backoff_duration`` doubling ``max_doublings`` times within
        ``max_backoff_duration``, and no retry once the next scheduled time has come.
        Every retry sends the same schedule time. The job has no other execution
        meanwhile.
        """
        retries, policy = _retry_policy(job)
        attempt = 0
        while True:
            record = self._call(job, due)
            logger.info("job %s for %s -> %s", job.name, record.schedule_time, record.outcome)
            with self.cond:
                self._history.append(record)
                stored = self._jobs.get(job.name)
                if stored is not None:
                    ok = record.succeeded
                    stored.status = status_pb2.Status(
                        code=0 if ok else 2, message="" if ok else record.outcome
                    )
                self.cond.notify_all()
                attempt += 1
                wait = policy.backoff(attempt)
                following = self._due.get(job.name)
                retry = (
                    not record.succeeded
                    and attempt <= retries
                    and stored is not None
                    and stored.state == scheduler_v1.Job.State.ENABLED
                    and (following is None or self.clock.now() + wait < following)
                )
                if retry:
                    deadline = time.monotonic() + self.clock.real_seconds(wait)
                    while not self._stopping and (left := deadline - time.monotonic()) > 0:
                        self.cond.wait(left)
                if not retry or self._stopping:
                    self._in_flight.discard(job.name)
                    self.cond.notify_all()
                    return

    def _call(self, job: scheduler_v1.Job, due: float) -> Execution:
        """One HTTP call of ``job`` for ``due``."""
        target = job.http_target
        headers = {"Content-Type": "application/octet-stream", **dict(target.headers)}
        headers.update(
            {
                "User-Agent": "Google-Cloud-Scheduler",
                "X-CloudScheduler": "true",
                "X-CloudScheduler-JobName": job.name.rsplit("/", 1)[-1],
                "X-CloudScheduler-ScheduleTime": _rfc3339(due),
            }
        )
        if "oidc_token" in target:
            audience = target.oidc_token.audience or target.uri
            token = self._mint_token(audience, target.oidc_token.service_account_email)
            headers["Authorization"] = f"Bearer {token}"
        method = scheduler_v1.HttpMethod(target.http_method or scheduler_v1.HttpMethod.POST).name
        deadline = DEFAULT_DEADLINE
        if "attempt_deadline" in job:
            deadline = job.attempt_deadline.total_seconds() or DEFAULT_DEADLINE
        request = urllib.request.Request(
            target.uri, data=target.body or None, headers=headers, method=method
        )
        status_code: int | None = None
        error: str | None = None
        try:
            with _LOOPBACK.open(request, timeout=deadline) as response:
                response.read()
                status_code = response.status
        except urllib.error.HTTPError as exc:
            status_code = exc.code
        except (OSError, ValueError) as exc:
            error = f"UNAVAILABLE: {exc}"
        record = Execution(
            job_name=job.name,
            url=target.uri,
            schedule_time=datetime.fromtimestamp(due, UTC),
            status_code=status_code,
            error=error,
            headers=headers,
        )
        return record
