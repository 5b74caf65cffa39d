"""The Cloud Scheduler jobs that drive the schedules: plan, apply, pause, resume.

Each schedule has one job, ``<SCHEDULE_JOB_PREFIX><name>`` in ``projects/PROJECT/
locations/SCHEDULER_LOCATION`` (``LOCATION`` by default), that POSTs to
``BASE_URL/cloudtasks/schedule/<name>/`` with an OIDC token for the ``sweep``
family's service account (``OIDC_SCOPES``, else ``OIDC_SERVICE_ACCOUNT``), or the
shared ``AUTH_TOKEN`` when no service account is set. Only jobs whose id starts with
the prefix are ours, and of those only the ones a sync created (their description
starts with :data:`DESCRIPTION_MARK`) are ever deleted. :meth:`SchedulerJobs.plan`
compares them with the declarations and lists what to create, update, delete, pause
or resume;
:meth:`SchedulerJobs.apply` carries a plan out and, if the service fails midway, says
what was applied before the failure.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)

from django_cloudtasks.auth import oidc_scope
from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import CloudTasksError
from django_cloudtasks.schedules.declarations import Schedule, ScheduleError, schedule_problems
from django_cloudtasks.schedules.timing import job_schedule

#: What the description of a job we own starts with.
DESCRIPTION_MARK = "django-gcp-cloudtasks schedule"
_TIMEOUT = 30.0
#: How long reading the jobs retries an unavailable service: 30 s, 2 s on an emulator
#: (the client's own default retries for 10 minutes).
_READ_RETRY_SECONDS, _EMULATOR_READ_RETRY_SECONDS = 30.0, 2.0


@dataclass(frozen=True)
class Change:
    """One step of a plan: ``create``, ``update`` (of ``fields``), ``delete``, ``pause``,
    ``resume`` or ``unchanged``, for the job ``job_id``."""

    action: str
    job_id: str
    fields: tuple[str, ...] = ()
    job: scheduler_v1.Job | None = None
    paused: bool = False

    def __str__(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        paused = " (paused)" if self.action == "create" and self.paused else ""
        return f"{self.action:9} {self.job_id}{detail}{paused}"


class SyncFailed(CloudTasksError, RuntimeError):
    """The service refused a step of a plan; ``applied`` lists the steps done before it."""

    def __init__(self, applied: list[Change], failed: Change, error: Exception) -> None:
        done = "; ".join(str(c) for c in applied) or "nothing"
        super().__init__(f"{failed.action} {failed.job_id} failed: {error}. Applied before: {done}")
        self.applied, self.failed, self.error = applied, failed, error


class SchedulerJobs:
    """The jobs of our schedules on Cloud Scheduler (or the emulator, with EMULATOR_HOST)."""

    def __init__(self, client: scheduler_v1.CloudSchedulerClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> scheduler_v1.CloudSchedulerClient:
        """The client, built on first use: the emulator's when ``EMULATOR_HOST`` is set."""
        with self._lock:
            if self._client is None:
                host = conf.EMULATOR_HOST
                if host:
                    # A local emulator speaks plain gRPC, without TLS or credentials.
                    channel = grpc.insecure_channel(str(host))
                    self._client = scheduler_v1.CloudSchedulerClient(
                        transport=CloudSchedulerGrpcTransport(channel=channel)
                    )
                else:
                    self._client = scheduler_v1.CloudSchedulerClient()
            return self._client

    def close(self) -> None:
        """Close the client's channel, if one was opened."""
        if self._client is not None:
            self._client.transport.close()

    # -- names -----------------------------------------------------------------------------

    @property
    def parent(self) -> str:
        """``projects/PROJECT/locations/LOCATION`` of the jobs.

        Raises:
            ScheduleError: without ``PROJECT`` or a location.
        """
        project = conf.PROJECT
        location = conf.SCHEDULER_LOCATION or conf.LOCATION
        if not project or not location:
            raise ScheduleError(
                "schedules need CLOUDTASKS['PROJECT'] and CLOUDTASKS['LOCATION'] (or "
                "SCHEDULER_LOCATION) to name their Cloud Scheduler jobs"
            )
        return f"projects/{project}/locations/{location}"

    @staticmethod
    def prefix() -> str:
        """The job id prefix that marks our jobs."""
        return str(conf.SCHEDULE_JOB_PREFIX or "")

    def job_name(self, schedule_name: str) -> str:
        """The full job name of a schedule."""
        return f"{self.parent}/jobs/{self.prefix()}{schedule_name}"

    def schedule_name(self, job_name: str) -> str:
        """The schedule a job of ours drives."""
        return job_name.rsplit("/jobs/", 1)[-1][len(self.prefix()) :]

    # -- the desired state -------------------------------------------------------------------

    def desired_job(self, schedule: Schedule) -> scheduler_v1.Job:
        """The job that drives ``schedule``.

        Raises:
            ScheduleError: without ``BASE_URL``, or without a way to authenticate.
        """
        base = conf.run_url_base
        if not base:
            raise ScheduleError("schedules need CLOUDTASKS['BASE_URL'] for their jobs' URL")
        cron, zone = job_schedule(schedule)
        target = scheduler_v1.HttpTarget(
            uri=f"{base}/cloudtasks/schedule/{schedule.name}/",
            http_method=scheduler_v1.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=json.dumps({"schedule": schedule.name}).encode(),
        )
        # Cloud Scheduler's calls belong to the ``sweep`` family of OIDC_SCOPES.
        accepted = oidc_scope("sweep")
        if accepted.service_accounts and accepted.audiences:
            target.oidc_token = scheduler_v1.OidcToken(
                service_account_email=accepted.service_accounts[0],
                audience=accepted.audiences[0],
            )
        elif conf.AUTH_TOKEN:
            target.headers["Authorization"] = f"Bearer {conf.AUTH_TOKEN}"
        else:
            raise ScheduleError(
                "schedules need OIDC_SERVICE_ACCOUNT (or AUTH_TOKEN) to call the endpoint"
            )
        description = f"{DESCRIPTION_MARK} {schedule.name}: {schedule.when}"
        if schedule.description:
            description += f". {schedule.description}"
        return scheduler_v1.Job(
            name=self.job_name(schedule.name),
            description=description[:500],
            schedule=cron,
            time_zone=zone,
            http_target=target,
        )

    def owned_jobs(self) -> dict[str, scheduler_v1.Job]:
        """Our jobs on the service, by full name."""
        prefix = f"{self.parent}/jobs/{self.prefix()}"
        seconds = _EMULATOR_READ_RETRY_SECONDS if conf.EMULATOR_HOST else _READ_RETRY_SECONDS
        retry = gretry.Retry(
            predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
            initial=0.1,
            maximum=2.0,
            multiplier=2.0,
            timeout=seconds,
        )
        jobs = self.client.list_jobs(parent=self.parent, retry=retry, timeout=_TIMEOUT)
        return {job.name: job for job in jobs if job.name.startswith(prefix)}

    # -- plan and apply ------------------------------------------------------------------

    def plan(self, schedules: Mapping[str, Schedule], paused: Iterable[str] = ()) -> list[Change]:
        """What to do so that the service matches ``schedules``; reads, changes nothing.

        ``paused`` names schedules paused by an operator: their jobs stay paused. A
        disabled schedule's job is paused too.

        Raises:
            ScheduleError: listing every problem of every schedule (nothing is planned
                while one is wrong), or for missing settings.
            google.api_core.exceptions.GoogleAPICallError: when the jobs cannot be read.
        """
        problems = [m for s in schedules.values() for _, m in schedule_problems(s)]
        if problems:
            raise ScheduleError("; ".join(problems))
        desired = {self.job_name(name): s for name, s in sorted(schedules.items())}
        paused = set(paused)
        current = self.owned_jobs()
        plan: list[Change] = []
        for name, schedule in desired.items():
            job = self.desired_job(schedule)
            want_paused = not schedule.enabled or schedule.name in paused
            short = name.rsplit("/", 1)[-1]
            existing = current.get(name)
            if existing is None:
                plan.append(Change("create", short, job=job, paused=want_paused))
                continue
            changed = differences(job, existing)
            if changed:
                plan.append(Change("update", short, tuple(changed), job=job))
            is_paused = existing.state == scheduler_v1.Job.State.PAUSED
            if want_paused and not is_paused:
                plan.append(Change("pause", short))
            elif not want_paused and is_paused:
                plan.append(Change("resume", short))
            elif not changed:
                plan.append(Change("unchanged", short))
        for name in sorted(set(current) - set(desired)):
            # Only a job a sync created is deleted: its description carries the mark.
            if current[name].description.startswith(DESCRIPTION_MARK):
                plan.append(Change("delete", name.rsplit("/", 1)[-1]))
        return plan

    def drift(
        self, schedules: Mapping[str, Schedule], paused: Iterable[str] = ()
    ) -> dict[str, str]:
        """How each schedule's job differs from the code: ``in sync``, ``missing``,
        ``update (fields)``, ``pause`` or ``resume``; reads, changes nothing.

        Raises:
            ScheduleError: as :meth:`plan` does.
            google.api_core.exceptions.GoogleAPICallError: when the jobs cannot be read.
        """
        words = {"unchanged": "in sync", "create": "missing"}
        drift: dict[str, str] = {}
        for change in self.plan(schedules, paused=paused):
            if change.action == "delete":
                continue
            name = self.schedule_name(change.job_id)
            if drift.get(name, "in sync") == "in sync":
                detail = f" ({', '.join(change.fields)})" if change.fields else ""
                drift[name] = words.get(change.action, change.action + detail)
        return drift

    def apply(self, plan: Iterable[Change]) -> list[Change]:
        """Carry out ``plan``, in order; return the steps applied.

        Raises:
            SyncFailed: at the first step the service refuses, with the steps applied
                before it.
        """
        applied: list[Change] = []
        for change in _steps(plan):
            try:
                self._apply_one(change)
            except gexc.GoogleAPICallError as exc:
                raise SyncFailed(applied, change, exc) from exc
            applied.append(change)
        return applied

    def _apply_one(self, change: Change) -> None:
        name = f"{self.parent}/jobs/{change.job_id}"
        if change.action == "create":
            assert change.job is not None
            self.client.create_job(parent=self.parent, job=change.job, timeout=_TIMEOUT)
        elif change.action == "update":
            assert change.job is not None
            self.client.update_job(
                job=change.job, update_mask={"paths": list(change.fields)}, timeout=_TIMEOUT
            )
        elif change.action == "delete":
            self.client.delete_job(name=name, timeout=_TIMEOUT)
        elif change.action == "pause":
            self.client.pause_job(name=name, timeout=_TIMEOUT)
        elif change.action == "resume":
            self.client.resume_job(name=name, timeout=_TIMEOUT)
        else:  # pragma: no cover - plan() makes no other
            raise ValueError(f"unknown action {change.action!r}")

    def set_paused(self, schedule_name: str, paused: bool) -> bool:
        """Pause or resume a schedule's job; False when it has no job (not synced yet).

        Raises:
            google.api_core.exceptions.GoogleAPICallError: when the service refuses.
        """
        name = self.job_name(schedule_name)
        try:
            if paused:
                self.client.pause_job(name=name, timeout=_TIMEOUT)
            else:
                self.client.resume_job(name=name, timeout=_TIMEOUT)
        except gexc.NotFound:
            return False
        return True


def _steps(plan: Iterable[Change]) -> Iterable[Change]:
    """The calls that carry out ``plan``: a paused job is created, then paused (two
    steps, so that a failure between them reports the job as created)."""
    for change in plan:
        if change.action == "unchanged":
            continue
        if change.action == "create" and change.paused:
            yield dataclasses.replace(change, paused=False)
            yield Change("pause", change.job_id)
        else:
            yield change


def differences(desired: scheduler_v1.Job, current: scheduler_v1.Job) -> list[str]:
    """The top-level job fields where ``current`` differs from ``desired``.

    Headers the service adds by itself (such as ``User-Agent``) are not differences.
    """
    changed = [
        key for key in ("description", "schedule") if getattr(desired, key) != getattr(current, key)
    ]
    if desired.time_zone.lower() != (current.time_zone or "utc").lower():
        changed.append("time_zone")
    want, have = desired.http_target, current.http_target
    headers = dict(have.headers)
    if (
        want.uri != have.uri
        or want.http_method != have.http_method
        or want.body != have.body
        or any(headers.get(key) != value for key, value in want.headers.items())
        or want.oidc_token != have.oidc_token
    ):
        changed.append("http_target")
    return changed
