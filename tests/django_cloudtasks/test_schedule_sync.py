"""``cloudtasks_schedules``: sync against the emulator's Cloud Scheduler over gRPC, and
the jobs firing the schedule endpoint of a real HTTP server."""

from __future__ import annotations

import io
import time

import grpc
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from google.cloud import scheduler_v1

from django_cloudtasks.constants import WorkflowStatus
from django_cloudtasks.emulator import CloudTasksEmulator
from django_cloudtasks.emulator.errors import EmulatorError
from django_cloudtasks.emulator.scheduler import scheduler_client
from django_cloudtasks.models import ScheduleRun, ScheduleState
from django_cloudtasks.schedules.cloud import SchedulerJobs, SyncFailed
from tests.testapp.models import Execution

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PARENT = "projects/test-project/locations/us-central1"


def configure(settings, **schedules) -> None:
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "SCHEDULES": schedules}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("cloudtasks_schedules", *args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def scheduler(settings):
    """An emulator whose Cloud Scheduler the app syncs to (its clock at real speed); it
    delivers nothing, so the app keeps its transport."""
    with CloudTasksEmulator() as emu:
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EMULATOR_HOST": emu.address}
        yield emu


@pytest.fixture
def cloud(scheduler):
    """The real Cloud Scheduler client on the emulator, to look at the jobs."""
    client = scheduler_client(scheduler.address)
    yield client
    client.transport.close()


NIGHTLY = {"task": "add", "args": [1, 2], "cron": "0 3 * * *", "timezone": "Europe/Paris"}
HOURLY = {"task": "add", "args": [3, 4], "every": "1h"}


def test_sync_creates_the_jobs_and_a_second_sync_finds_nothing_to_do(settings, scheduler, cloud):
    configure(settings, nightly=NIGHTLY, hourly=HOURLY)

    assert run("sync", "--dry-run").split() == [
        "create",
        "cloudtasks-schedule-hourly",
        "create",
        "cloudtasks-schedule-nightly",
    ]
    assert list(cloud.list_jobs(parent=PARENT)) == []
    assert "applied 2 changes" in run("sync")

    job = cloud.get_job(name=f"{PARENT}/jobs/cloudtasks-schedule-nightly")
    assert (job.schedule, job.time_zone) == ("0 3 * * *", "Europe/Paris")
    assert job.http_target.uri == "http://testserver/cloudtasks/schedule/nightly/"
    assert job.http_target.headers["Authorization"] == "Bearer test-token"
    assert cloud.get_job(name=f"{PARENT}/jobs/cloudtasks-schedule-hourly").schedule == "0 * * * *"
    assert run("sync", "--check").split() == [
        "unchanged",
        "cloudtasks-schedule-hourly",
        "unchanged",
        "cloudtasks-schedule-nightly",
    ]


def test_sync_updates_changed_jobs_deletes_removed_ones_and_leaves_others_alone(
    settings, scheduler, cloud
):
    configure(settings, nightly=NIGHTLY, hourly=HOURLY)
    run("sync")
    foreign = scheduler_v1.Job(
        name=f"{PARENT}/jobs/cloudtasks-sweep",
        schedule="0 0 * * *",
        http_target=scheduler_v1.HttpTarget(uri="http://example.com/"),
    )
    cloud.create_job(parent=PARENT, job=foreign)
    configure(settings, nightly={**NIGHTLY, "cron": "30 4 * * *"})

    plan = run("sync", "--dry-run")
    assert "update    cloudtasks-schedule-nightly (description, schedule)" in plan
    assert "delete    cloudtasks-schedule-hourly" in plan
    run("sync")

    names = sorted(j.name.rsplit("/", 1)[-1] for j in cloud.list_jobs(parent=PARENT))
    assert names == ["cloudtasks-schedule-nightly", "cloudtasks-sweep"]
    assert cloud.get_job(name=f"{PARENT}/jobs/cloudtasks-schedule-nightly").schedule == "30 4 * * *"


def test_sync_never_deletes_a_job_it_did_not_create_even_under_its_prefix(
    settings, scheduler, cloud
):
    configure(settings, nightly=NIGHTLY)
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "SCHEDULE_JOB_PREFIX": ""}
    run("sync")
    for job_id in ("cloudtasks-sweep", "hand-made"):
        cloud.create_job(
            parent=PARENT,
            job=scheduler_v1.Job(
                name=f"{PARENT}/jobs/{job_id}",
                schedule="*/5 * * * *",
                http_target=scheduler_v1.HttpTarget(uri="http://example.com/"),
            ),
        )
    configure(settings, weekly={"task": "add", "cron": "0 4 * * 1"})

    assert run("sync").splitlines() == [
        "create    weekly",
        "delete    nightly",
        "applied 2 changes",
    ]
    names = sorted(j.name.rsplit("/", 1)[-1] for j in cloud.list_jobs(parent=PARENT))
    assert names == ["cloudtasks-sweep", "hand-made", "weekly"]


def test_check_exits_non_zero_when_the_cloud_has_drifted(settings, scheduler, cloud):
    configure(settings, nightly=NIGHTLY)
    run("sync")
    name = f"{PARENT}/jobs/cloudtasks-schedule-nightly"
    cloud.update_job(
        job=scheduler_v1.Job(name=name, schedule="0 5 * * *"), update_mask={"paths": ["schedule"]}
    )

    with pytest.raises(CommandError, match="1 Cloud Scheduler jobs differ") as caught:
        run("sync", "--check")
    assert caught.value.returncode == 1
    run("sync")
    run("sync", "--check")  # in line again


def test_a_bad_schedule_stops_the_sync_before_anything_is_applied(settings, scheduler, cloud):
    configure(settings, nightly=NIGHTLY, broken={"task": "add", "cron": "0 25 * * *"})
    with pytest.raises(CommandError, match="invalid cron"):
        run("sync")
    assert list(cloud.list_jobs(parent=PARENT)) == []


def test_a_failure_midway_reports_what_was_applied(settings, scheduler, cloud):
    configure(
        settings, a={"task": "add", "cron": "0 1 * * *"}, b={"task": "add", "cron": "0 2 * * *"}
    )
    jobs = SchedulerJobs()
    plan = jobs.plan({**_schedules()})
    # Someone creates b between the plan and its application.
    cloud.create_job(parent=PARENT, job=plan[1].job)

    with pytest.raises(SyncFailed) as caught:
        jobs.apply(plan)
    jobs.close()
    assert [c.job_id for c in caught.value.applied] == ["cloudtasks-schedule-a"]
    assert caught.value.failed.job_id == "cloudtasks-schedule-b"
    assert "Applied before: create    cloudtasks-schedule-a" in str(caught.value)


def test_the_command_names_what_was_applied_when_the_cloud_fails_midway_and_a_rerun_finishes(
    settings, scheduler, cloud, monkeypatch
):
    configure(
        settings, a={"task": "add", "cron": "0 1 * * *"}, b={"task": "add", "cron": "0 2 * * *"}
    )
    create_job = scheduler.scheduler.create_job

    def refuse_b(parent, job):
        if job.name.endswith("/cloudtasks-schedule-b"):
            raise EmulatorError(grpc.StatusCode.PERMISSION_DENIED, "the service refuses b")
        return create_job(parent, job)

    monkeypatch.setattr(scheduler.scheduler, "create_job", refuse_b)
    with pytest.raises(CommandError) as caught:
        run("sync")
    assert caught.value.returncode == 1
    message = str(caught.value)
    assert "create cloudtasks-schedule-b failed" in message
    assert "Applied before: create    cloudtasks-schedule-a" in message
    assert [j.name.rsplit("/", 1)[-1] for j in cloud.list_jobs(parent=PARENT)] == [
        "cloudtasks-schedule-a"
    ]

    monkeypatch.setattr(scheduler.scheduler, "create_job", create_job)
    assert run("sync").splitlines() == [
        "unchanged cloudtasks-schedule-a",
        "create    cloudtasks-schedule-b",
        "applied 1 changes",
    ]


def test_a_disabled_schedule_whose_pause_fails_is_reported_as_created_and_paused_by_a_rerun(
    settings, scheduler, cloud, monkeypatch
):
    configure(settings, nightly={**NIGHTLY, "enabled": False})
    set_state = scheduler.scheduler.set_state

    def refuse(name, state):
        raise EmulatorError(grpc.StatusCode.PERMISSION_DENIED, "no pausing today")

    monkeypatch.setattr(scheduler.scheduler, "set_state", refuse)
    with pytest.raises(CommandError) as caught:
        run("sync")
    assert "pause cloudtasks-schedule-nightly failed" in str(caught.value)
    assert "Applied before: create    cloudtasks-schedule-nightly" in str(caught.value)

    monkeypatch.setattr(scheduler.scheduler, "set_state", set_state)
    assert run("sync").splitlines()[0] == "pause     cloudtasks-schedule-nightly"
    job = cloud.get_job(name=f"{PARENT}/jobs/cloudtasks-schedule-nightly")
    assert job.state == scheduler_v1.Job.State.PAUSED


def _schedules():
    from django_cloudtasks.schedules.declarations import all_schedules

    return all_schedules()


def test_pause_and_resume_act_in_the_cloud_and_in_the_database_and_sync_keeps_the_pause(
    settings, scheduler, cloud
):
    configure(settings, nightly=NIGHTLY)
    run("sync")
    name = f"{PARENT}/jobs/cloudtasks-schedule-nightly"

    assert "paused in the cloud and the database" in run("pause", "nightly")
    assert cloud.get_job(name=name).state == scheduler_v1.Job.State.PAUSED
    assert ScheduleState.objects.get(name="nightly").paused
    assert "unchanged" in run("sync", "--check")  # an operator's pause is not drift

    run("resume", "nightly")
    assert cloud.get_job(name=name).state == scheduler_v1.Job.State.ENABLED
    assert not ScheduleState.objects.get(name="nightly").paused


def test_a_disabled_schedule_has_a_paused_job(settings, scheduler, cloud):
    configure(settings, nightly={**NIGHTLY, "enabled": False})
    run("sync")
    job = cloud.get_job(name=f"{PARENT}/jobs/cloudtasks-schedule-nightly")
    assert job.state == scheduler_v1.Job.State.PAUSED


def test_list_shows_next_and_last_runs_and_drift(settings, scheduler, eager):
    configure(settings, nightly=NIGHTLY, hourly=HOURLY)
    run("sync")
    configure(settings, nightly=NIGHTLY, hourly=HOURLY, extra={"task": "add", "cron": "0 6 * * *"})
    run("run-now", "nightly")

    lines = run("list").splitlines()

    assert lines[0].split()[:2] == ["NAME", "WHEN"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert "in sync" in by_name["nightly"] and "SUCCESS" in by_name["nightly"]
    assert "missing" in by_name["extra"]
    assert "every 1:00:00" in by_name["hourly"]


def test_run_now_and_backfill_start_workflows(settings, eager):
    configure(settings, hourly=HOURLY)
    assert "started workflow" in run("run-now", "hourly")
    out = run(
        "backfill", "hourly", "--from", "2026-05-01T00:00:00Z", "--to", "2026-05-01T02:00:00Z"
    )
    assert out.splitlines()[-1] == "3 slots"
    assert ScheduleRun.objects.count() == 4
    with pytest.raises(CommandError, match="unknown schedule 'nope'"):
        run("run-now", "nope")


# -- firing ----------------------------------------------------------------------------


@pytest.fixture
def fast_site(serve_emulator):
    """The emulator with a clock 30 times faster, delivering to the live server."""
    return serve_emulator(options={"scheduler_time_scale": 30})


def test_a_synced_schedule_fires_through_the_emulator_once_per_slot(settings, fast_site):
    configure(settings, minutely={"task": "add", "args": [2, 2], "cron": "* * * * *"})
    run("sync")

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = ScheduleRun.objects.filter(workflow__status=WorkflowStatus.SUCCESS).count()
        if done >= 2:
            break
        time.sleep(0.2)

    fired = [e for e in fast_site.scheduler.history if e.succeeded]
    assert len(fired) >= 2
    slots = set(ScheduleRun.objects.values_list("slot", flat=True))
    assert {e.schedule_time.replace(microsecond=0) for e in fired} <= slots
    assert ScheduleRun.objects.filter(workflow__status=WorkflowStatus.SUCCESS).count() >= 2
    assert Execution.objects.filter(task="add").count() >= 2


def test_jobs_call_the_endpoint_with_oidc_tokens_the_app_verifies(
    settings, serve_emulator, live_server, monkeypatch, client
):
    from django_cloudtasks import auth

    monkeypatch.setattr(auth, "certificates", auth.CertificateCache())
    monkeypatch.delenv("TASKAPP_AUTH_TOKEN", raising=False)
    account = "scheduler@test-project.iam.gserviceaccount.com"
    emu = serve_emulator(options={"scheduler_time_scale": 30})
    settings.CLOUDTASKS = {
        **{k: v for k, v in settings.CLOUDTASKS.items() if k != "AUTH_TOKEN"},
        "OIDC_SERVICE_ACCOUNT": account,
        "OIDC_CERTS_URL": emu.oidc_certs_url,
        "SCHEDULES": {"minutely": {"task": "add", "args": [5, 5], "cron": "* * * * *"}},
    }
    run("sync")
    jobs = SchedulerJobs()
    job = jobs.client.get_job(name=f"{PARENT}/jobs/cloudtasks-schedule-minutely")
    jobs.close()
    assert job.http_target.oidc_token.service_account_email == account
    assert "Authorization" not in job.http_target.headers

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not ScheduleRun.objects.filter(
        workflow__status=WorkflowStatus.SUCCESS
    ):
        time.sleep(0.2)
    assert ScheduleRun.objects.filter(workflow__status=WorkflowStatus.SUCCESS).exists()

    stranger = emu.mint_token("https://elsewhere.example.com", account)
    for url in ("/cloudtasks/schedule/minutely/", "/cloudtasks/schedules/tick/"):
        refused = client.post(url, headers={"Authorization": f"Bearer {stranger}"})
        assert refused.status_code == 403, url
    good = emu.mint_token(live_server.url, account)
    ticked = client.post("/cloudtasks/schedules/tick/", headers={"Authorization": f"Bearer {good}"})
    assert ticked.status_code == 200
    assert set(ticked.json()) == {"started", "missed", "promoted", "errors"}
