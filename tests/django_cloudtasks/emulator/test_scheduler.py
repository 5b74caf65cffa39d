"""The emulator's Cloud Scheduler v1 service, driven by the real google-cloud-scheduler client."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.auth.transport import requests as google_requests
from google.cloud import scheduler_v1
from google.oauth2 import id_token

from django_cloudtasks.emulator import CloudTasksEmulator
from django_cloudtasks.emulator.scheduler import next_fire, scheduler_client
from tests.django_cloudtasks.emulator.recording import Reply

PARENT = "projects/test-project/locations/us-central1"


@pytest.fixture
def fast() -> Iterator[CloudTasksEmulator]:
    """An emulator whose scheduler clock runs 60 times faster: a minute lasts a second."""
    with CloudTasksEmulator(scheduler_time_scale=60) as emu:
        yield emu


@pytest.fixture
def jobs(fast: CloudTasksEmulator) -> Iterator[scheduler_v1.CloudSchedulerClient]:
    client = scheduler_client(fast.address)
    yield client
    client.transport.close()


def a_job(job_id: str, url: str, schedule: str = "* * * * *", **target) -> scheduler_v1.Job:
    return scheduler_v1.Job(
        name=f"{PARENT}/jobs/{job_id}",
        schedule=schedule,
        time_zone="Europe/Paris",
        http_target=scheduler_v1.HttpTarget(
            uri=url, http_method=scheduler_v1.HttpMethod.POST, body=b"{}", **target
        ),
    )


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_jobs_are_created_read_listed_updated_and_deleted(jobs, handler):
    created = jobs.create_job(parent=PARENT, job=a_job("nightly", handler.url(), "0 3 * * *"))
    assert created.state == scheduler_v1.Job.State.ENABLED
    assert created.schedule_time.timestamp() > time.time()

    with pytest.raises(gexc.AlreadyExists):
        jobs.create_job(parent=PARENT, job=a_job("nightly", handler.url()))
    assert [j.name for j in jobs.list_jobs(parent=PARENT)] == [f"{PARENT}/jobs/nightly"]

    change = scheduler_v1.Job(name=created.name, schedule="0 4 * * *")
    updated = jobs.update_job(job=change, update_mask={"paths": ["schedule"]})
    assert (updated.schedule, updated.time_zone) == ("0 4 * * *", "Europe/Paris")
    assert jobs.get_job(name=created.name).schedule == "0 4 * * *"

    jobs.delete_job(name=created.name)
    with pytest.raises(gexc.NotFound):
        jobs.get_job(name=created.name)
    with pytest.raises(gexc.NotFound):
        jobs.delete_job(name=created.name)


@pytest.mark.parametrize(
    "job, words",
    [
        (a_job("bad", "http://127.0.0.1/", "61 * * * *"), "invalid schedule"),
        (a_job("bad", "http://127.0.0.1/", "every 5 minutes"), "unix-cron"),
        (a_job("bad", "http://127.0.0.1/", "0 12 L * *"), "unix-cron field"),
        (a_job("bad", "http://127.0.0.1/", "0 9 * * 1#2"), "unix-cron field"),
        (a_job("bad", "http://127.0.0.1/", "5/15 * * * *"), "unix-cron field"),
        (a_job("bad name", "http://127.0.0.1/"), "job name"),
        (a_job("bad", "ftp://127.0.0.1/"), "not an http"),
    ],
)
def test_a_job_the_service_would_refuse_is_invalid(jobs, job, words):
    with pytest.raises(gexc.InvalidArgument, match=words):
        jobs.create_job(parent=PARENT, job=job)


def test_an_unknown_time_zone_is_invalid(jobs):
    job = a_job("tz", "http://127.0.0.1/")
    job.time_zone = "Mars/Olympus"
    with pytest.raises(gexc.InvalidArgument, match="time zone"):
        jobs.create_job(parent=PARENT, job=job)


def test_a_job_fires_on_time_with_cloud_schedulers_headers_and_an_oidc_token(fast, jobs, handler):
    audience = "https://app.example.com"
    oidc = scheduler_v1.OidcToken(service_account_email="cron@p.iam.gserviceaccount.com")
    oidc.audience = audience
    jobs.create_job(parent=PARENT, job=a_job("every-minute", handler.url("/tick"), oidc_token=oidc))

    assert wait_for(lambda: len(handler.requests_for("/tick")) >= 2, timeout=5)

    first, second = handler.requests_for("/tick")[:2]
    assert first.header("X-CloudScheduler") == "true"
    assert first.header("X-CloudScheduler-JobName") == "every-minute"
    times = [
        datetime.fromisoformat(r.header("X-CloudScheduler-ScheduleTime").replace("Z", "+00:00"))
        for r in (first, second)
    ]
    assert times[0].second == 0 and (times[1] - times[0]).total_seconds() == 60
    token = first.header("Authorization").removeprefix("Bearer ")
    claims = id_token.verify_token(
        token, google_requests.Request(), audience=audience, certs_url=fast.oidc_certs_url
    )
    assert claims["email"] == "cron@p.iam.gserviceaccount.com"
    assert first.body == b"{}"


def test_a_paused_job_does_not_fire_until_resumed_and_run_job_fires_at_once(jobs, handler):
    job = jobs.create_job(parent=PARENT, job=a_job("p", handler.url("/p"), "0 0 1 1 *"))
    paused = jobs.pause_job(name=job.name)
    assert paused.state == scheduler_v1.Job.State.PAUSED
    time.sleep(1.5)
    assert handler.requests_for("/p") == []

    jobs.resume_job(name=job.name)
    jobs.run_job(name=job.name)
    assert wait_for(lambda: len(handler.requests_for("/p")) == 1)


def test_schedules_follow_their_time_zone_across_a_dst_change():
    # 02:30 every day in Paris: skipped on 29 March 2026, so 03:00 CEST (01:00 UTC).
    after = datetime.fromisoformat("2026-03-28T12:00:00+00:00").timestamp()
    fired = next_fire("30 2 * * *", "Europe/Paris", after)
    assert fired == datetime.fromisoformat("2026-03-29T01:00:00+00:00").timestamp()


def test_a_failed_call_is_retried_by_the_jobs_retry_config_with_the_same_schedule_time(
    jobs, handler
):
    handler.script["/retried"] = [Reply(500), Reply(503), Reply(200)]
    job = a_job("retried", handler.url("/retried"), "0 0 1 1 *")
    job.retry_config = scheduler_v1.RetryConfig(
        retry_count=3, min_backoff_duration=timedelta(seconds=6), max_doublings=1
    )
    job = jobs.create_job(parent=PARENT, job=job)
    jobs.run_job(name=job.name)

    assert wait_for(lambda: len(handler.requests_for("/retried")) == 3)
    calls = handler.requests_for("/retried")
    assert len({c.header("X-CloudScheduler-ScheduleTime") for c in calls}) == 1
    # 6 s then 12 s of the scheduler's clock, which runs 60 times faster.
    first_gap, second_gap = (b.started - a.started for a, b in itertools.pairwise(calls))
    assert first_gap >= 0.09 and second_gap >= 0.19
    time.sleep(0.5)
    assert len(handler.requests_for("/retried")) == 3  # the 200 ended the retries


def test_a_failed_call_is_not_retried_by_default(fast, jobs, handler):
    handler.script["/once"] = [Reply(500)]
    job = jobs.create_job(parent=PARENT, job=a_job("once", handler.url("/once"), "0 0 1 1 *"))
    jobs.run_job(name=job.name)

    assert wait_for(lambda: len(handler.requests_for("/once")) == 1)
    time.sleep(0.6)  # 36 s of the scheduler's clock: past any 5 s backoff
    assert len(handler.requests_for("/once")) == 1
    assert [e.status_code for e in fast.scheduler.history] == [500]


def test_a_retry_count_above_five_is_invalid(jobs):
    job = a_job("greedy", "http://127.0.0.1/")
    job.retry_config = scheduler_v1.RetryConfig(retry_count=6)
    with pytest.raises(gexc.InvalidArgument, match="retry_count"):
        jobs.create_job(parent=PARENT, job=job)
