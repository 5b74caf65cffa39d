"""Schedules: slots over DST and month ends, exactly one run per slot, overlap, catch-up."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from freezegun import freeze_time

from canvas import chain
from django_cloudtasks.constants import WorkflowStatus
from django_cloudtasks.models import ScheduleRun, ScheduleRunState, Workflow
from django_cloudtasks.schedules import declarations, runs, timing
from django_cloudtasks.schedules.declarations import Schedule, get_schedule, periodic
from django_cloudtasks.transports import get_transport
from tests.testapp.models import Execution
from tests.testapp.tasks import add

TOKEN = {"Authorization": "Bearer test-token"}
HEADER = "X-CloudScheduler-ScheduleTime"


def nightly_canvas(x=1):
    """A canvas for the SCHEDULES tests: ``add(x, 1) | add(10)``."""
    return chain(add.s(x, 1), add.s(10))


#: A canvas given as an expression rather than a function.
NIGHTLY = chain(add.s(3, 1), add.s(10))


def configure(settings, **entries) -> None:
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "SCHEDULES": entries}


def drain() -> None:
    """Deliver what the memory transport holds (the settings change replaced the fixture's)."""
    get_transport().drain()  # type: ignore[attr-defined]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def call(client, name: str, slot: datetime | None = None, **headers):
    extra = {HEADER: slot.strftime("%Y-%m-%dT%H:%M:%SZ")} if slot else {}
    return client.post(f"/cloudtasks/schedule/{name}/", headers={**TOKEN, **extra, **headers})


# -- slots -----------------------------------------------------------------------------


PARIS_0230 = Schedule("p", task="add", cron="30 2 * * *", timezone="Europe/Paris")


def test_a_time_skipped_by_the_spring_change_runs_at_the_first_minute_after_it():
    before = utc(2026, 3, 28, 12)
    slot = timing.next_slot(PARIS_0230, before)
    # 02:30 does not exist in Paris on 29 March 2026: 03:00 CEST is 01:00 UTC.
    assert slot == utc(2026, 3, 29, 1, 0)
    assert timing.next_slot(PARIS_0230, slot) == utc(2026, 3, 30, 0, 30)


def test_a_time_repeated_by_the_autumn_change_runs_once():
    slots = list(timing.slots_between(PARIS_0230, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12)))
    # 02:30 CEST on the 25th (00:30 UTC) only, not again at 02:30 CET; then 02:30 CET.
    assert slots == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_an_hourly_schedule_keeps_every_hour_over_the_autumn_change():
    hourly = Schedule("h", task="add", cron="0 * * * *", timezone="Europe/Paris")
    slots = list(timing.slots_between(hourly, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 3)))
    assert slots == [utc(2026, 10, 25, h) for h in range(4)]
    for slot in slots:
        assert timing.latest_slot(hourly, slot + timedelta(minutes=59)) == slot


def test_the_31st_is_only_in_long_months_and_the_29th_of_february_in_leap_years():
    on_31st = Schedule("m", task="add", cron="0 0 31 * *")
    assert [s.month for s in timing.slots_between(on_31st, utc(2026, 1, 1), utc(2026, 8, 1))] == [
        1,
        3,
        5,
        7,
    ]
    leap_day = Schedule("l", task="add", cron="0 0 29 2 *")
    slots = timing.slots_between(leap_day, utc(2026, 1, 1), utc(2033, 1, 1))
    assert [s.year for s in slots] == [2028, 2032]


def test_intervals_count_from_the_epoch_and_the_job_fires_on_a_cron_reaching_every_slot():
    ninety = Schedule("n", task="add", every=timedelta(minutes=90))
    assert timing.latest_slot(ninety, utc(2026, 1, 1, 2, 10)) == utc(2026, 1, 1, 1, 30)
    assert timing.job_schedule(ninety) == ("*/30 * * * *", "UTC")
    quarter = Schedule("q", task="add", every=timedelta(minutes=15))
    assert timing.job_schedule(quarter) == ("*/15 * * * *", "UTC")
    six_hours = Schedule("s", task="add", every=timedelta(hours=6))
    assert timing.job_schedule(six_hours) == ("0 */6 * * *", "UTC")


# -- the endpoint ----------------------------------------------------------------------


pytestmark = pytest.mark.django_db(transaction=True)


def test_a_call_starts_the_slots_workflow_and_a_repeated_call_starts_nothing(
    client, settings, eager
):
    configure(settings, nightly={"canvas": f"{__name__}.nightly_canvas", "cron": "0 3 * * *"})
    slot = utc(2026, 5, 1, 3)

    first = call(client, "nightly", slot)
    again = call(client, "nightly", slot)

    assert first.status_code == again.status_code == 200
    assert first.json()["outcome"] == "started"
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["workflow"] == first.json()["workflow"]
    run = ScheduleRun.objects.get()
    assert (run.schedule, run.slot, run.state) == ("nightly", slot, ScheduleRunState.STARTED)
    assert run.workflow.status == WorkflowStatus.SUCCESS
    assert run.outcome == WorkflowStatus.SUCCESS
    assert Workflow.objects.count() == 1
    assert Execution.objects.filter(task="add").count() == 2


def test_a_canvas_given_as_an_expression_is_started_not_called(client, settings, eager):
    configure(settings, nightly={"canvas": f"{__name__}.NIGHTLY", "cron": "0 3 * * *"})

    answer = call(client, "nightly", utc(2026, 5, 1, 3)).json()

    assert answer["outcome"] == "started"
    workflow = Workflow.objects.get(pk=answer["workflow"])
    assert workflow.status == WorkflowStatus.SUCCESS
    assert Workflow.objects.count() == 1
    assert Execution.objects.filter(task="add").count() == 2


def test_a_call_without_the_header_belongs_to_the_latest_slot(client, settings, eager):
    configure(settings, report={"task": "add", "args": [2, 3], "cron": "0 * * * *"})
    with freeze_time("2026-05-01T10:42:00Z"):
        assert call(client, "report").json()["slot"] == "2026-05-01T10:00:00+00:00"
        assert call(client, "report").json()["outcome"] == "duplicate"


def test_the_endpoint_refuses_unknown_schedules_malformed_times_and_missing_credentials(
    client, settings, eager
):
    configure(settings, report={"task": "add", "args": [2, 3], "cron": "0 * * * *"})

    assert call(client, "nope").status_code == 404
    assert call(client, "report", **{HEADER: "yesterday"}).status_code == 400
    refused = client.post("/cloudtasks/schedule/report/", headers={HEADER: "2026-05-01T10:00:00Z"})
    assert refused.status_code == 401
    wrong = client.post("/cloudtasks/schedule/report/", headers={"Authorization": "Bearer no"})
    assert wrong.status_code in (401, 403)
    assert client.get("/cloudtasks/schedule/report/", headers=TOKEN).status_code == 405
    assert not ScheduleRun.objects.exists()


def test_a_paused_schedule_starts_nothing_until_resumed(client, settings, eager):
    configure(settings, report={"task": "add", "args": [2, 3], "cron": "0 * * * *"})
    runs.set_paused("report", True)

    assert call(client, "report", utc(2026, 5, 1, 10)).json()["outcome"] == "paused"
    runs.set_paused("report", False)
    assert call(client, "report", utc(2026, 5, 1, 10)).json()["outcome"] == "started"


# -- overlap ---------------------------------------------------------------------------


def _hourly(settings, overlap: str) -> Schedule:
    configure(
        settings, job={"task": "add", "args": [1, 1], "cron": "0 * * * *", "overlap": overlap}
    )
    return get_schedule("job")


def test_overlap_allow_starts_every_slot_while_others_run(settings, memory):
    job = _hourly(settings, "allow")
    outcomes = [runs.fire(job, utc(2026, 5, 1, h)).outcome for h in range(3)]
    assert outcomes == ["started"] * 3
    assert ScheduleRun.objects.running().count() == 3


def test_overlap_skip_records_the_slot_but_starts_nothing_while_the_previous_runs(settings, memory):
    job = _hourly(settings, "skip")
    assert runs.fire(job, utc(2026, 5, 1, 1)).outcome == "started"
    assert runs.fire(job, utc(2026, 5, 1, 2)).outcome == "skipped"

    drain()
    assert runs.fire(job, utc(2026, 5, 1, 3)).outcome == "started"
    states = list(ScheduleRun.objects.order_by("slot").values_list("state", flat=True))
    assert states == ["STARTED", "SKIPPED", "STARTED"]
    assert Execution.objects.filter(task="add").count() == 1  # the third is not drained


def test_overlap_buffer_one_starts_one_more_when_the_running_one_finishes(settings, memory):
    job = _hourly(settings, "buffer_one")
    runs.fire(job, utc(2026, 5, 1, 1))
    assert runs.fire(job, utc(2026, 5, 1, 2)).outcome == "buffered"
    assert runs.fire(job, utc(2026, 5, 1, 3)).outcome == "skipped"
    assert runs.tick(now=utc(2026, 5, 1, 3, 1)).promoted == {}  # the first still runs
    first = ScheduleRun.objects.get(slot=utc(2026, 5, 1, 1)).workflow_id

    transport = get_transport()
    transport.drain(limit=1)  # type: ignore[attr-defined]  # 01:00 finishes; 02:00 starts

    buffered = ScheduleRun.objects.get(slot=utc(2026, 5, 1, 2))
    assert Workflow.objects.get(pk=first).status == "SUCCESS"
    assert buffered.state == ScheduleRunState.STARTED
    assert buffered.workflow is not None and buffered.workflow.status == "PENDING"
    pending = transport.pending  # type: ignore[attr-defined]
    assert [d.workflow_id for d in pending] == [str(buffered.workflow_id)]
    drain()
    assert Execution.objects.filter(task="add").count() == 2
    assert runs.tick(now=utc(2026, 5, 1, 3, 1)).promoted == {}  # nothing left for the sweeper


def test_the_sweeper_starts_a_buffered_run_the_finish_did_not(settings, memory, monkeypatch):
    job = _hourly(settings, "buffer_one")
    runs.fire(job, utc(2026, 5, 1, 1))
    runs.fire(job, utc(2026, 5, 1, 2))
    monkeypatch.setattr(runs, "all_schedules", dict)  # as if the receiver saw no schedule
    drain()
    monkeypatch.undo()
    assert ScheduleRun.objects.get(slot=utc(2026, 5, 1, 2)).state == ScheduleRunState.BUFFERED

    assert runs.tick(now=utc(2026, 5, 1, 2, 1)).promoted == {"job": 1}
    assert ScheduleRun.objects.get(slot=utc(2026, 5, 1, 2)).state == ScheduleRunState.STARTED


def test_buffer_one_over_http_starts_the_buffered_run_when_the_running_one_finishes(
    client, settings, memory
):
    _hourly(settings, "buffer_one")
    assert call(client, "job", utc(2026, 5, 1, 1)).json()["outcome"] == "started"
    assert call(client, "job", utc(2026, 5, 1, 2)).json()["outcome"] == "buffered"
    drain()  # the 01:00 run finishes; the 02:00 one starts at once and finishes too

    answer = call(client, "job", utc(2026, 5, 1, 3)).json()

    assert answer["outcome"] == "started"
    states = dict(ScheduleRun.objects.values_list("slot__hour", "state"))
    assert states == {1: "STARTED", 2: "STARTED", 3: "STARTED"}
    assert Execution.objects.filter(task="add").count() == 2  # 01:00 and 02:00 ran


def test_run_now_starts_a_run_whatever_the_overlap_and_the_pause(settings, memory):
    job = _hourly(settings, "skip")
    runs.fire(job, utc(2026, 5, 1, 1))
    runs.set_paused("job", True)

    fired = runs.run_now(job)

    assert fired.outcome == "started"
    assert fired.run is not None and fired.run.trigger == "manual"


# -- catch-up --------------------------------------------------------------------------


def test_after_an_outage_slots_within_the_window_start_and_older_ones_are_missed(settings, memory):
    configure(
        settings,
        job={"task": "add", "args": [1, 1], "cron": "0 * * * *", "catch_up": "2h"},
    )
    with freeze_time("2026-05-01T00:30:00Z"):
        runs.fire(get_schedule("job"), utc(2026, 5, 1, 0))
    # The service is down from 00:30 to 06:10: slots 01:00 to 06:00 were never called.
    with freeze_time("2026-05-01T06:10:00Z"):
        report = runs.tick()

    assert report.started == {"job": 2} and report.missed == {"job": 4}
    by_slot = dict(ScheduleRun.objects.values_list("slot__hour", "state"))
    assert by_slot == {
        0: "STARTED",
        1: "MISSED",
        2: "MISSED",
        3: "MISSED",
        4: "MISSED",
        5: "STARTED",
        6: "STARTED",
    }
    with freeze_time("2026-05-01T06:11:00Z"):
        assert runs.tick().started == {}  # a second tick finds nothing more


def test_catch_up_latest_starts_only_the_most_recent_missed_slot(settings, memory):
    configure(
        settings,
        job={
            "task": "add",
            "args": [1, 1],
            "cron": "*/10 * * * *",
            "catch_up": "1h",
            "catch_up_mode": "latest",
        },
    )
    with freeze_time("2026-05-01T00:00:00Z"):
        runs.tick()
    with freeze_time("2026-05-01T00:45:00Z"):
        report = runs.tick()

    assert report.started == {"job": 1} and report.missed == {"job": 3}
    started = ScheduleRun.objects.get(state=ScheduleRunState.STARTED)
    assert started.slot == utc(2026, 5, 1, 0, 40)


def test_a_late_call_of_a_slot_recorded_as_missed_starts_it_after_all(client, settings, eager):
    configure(settings, job={"task": "add", "args": [1, 1], "cron": "0 * * * *"})
    with freeze_time("2026-05-01T00:59:00Z"):
        runs.tick()
    with freeze_time("2026-05-01T01:05:00Z"):
        assert runs.tick(grace=60).missed == {"job": 1}
        assert call(client, "job", utc(2026, 5, 1, 1)).json()["outcome"] == "started"


def test_a_call_catches_up_the_slots_missed_before_it(client, settings, eager):
    configure(settings, job={"task": "add", "args": [1, 1], "cron": "0 * * * *", "catch_up": "3h"})
    with freeze_time("2026-05-01T00:00:30Z"):
        call(client, "job", utc(2026, 5, 1, 0))
    with freeze_time("2026-05-01T04:00:10Z"):
        call(client, "job", utc(2026, 5, 1, 4))
    states = dict(ScheduleRun.objects.values_list("slot__hour", "state"))
    # 01:00 is more than 3 hours before the call at 04:00:10.
    assert states == {0: "STARTED", 1: "MISSED", 2: "STARTED", 3: "STARTED", 4: "STARTED"}


def _every_90_minutes(client, settings, catch_up: str = "0") -> None:
    # Slots at 22:30, 00:00, 01:30...; the job fires every 30 minutes.
    configure(
        settings,
        job={"task": "add", "args": [1, 1], "every": "90m", "catch_up": catch_up},
    )
    with freeze_time("2026-04-30T22:30:05Z"):
        assert call(client, "job", utc(2026, 4, 30, 22, 30)).json()["outcome"] == "started"


def test_a_call_between_two_interval_slots_does_not_start_the_lost_slot_late(
    client, settings, eager
):
    _every_90_minutes(client, settings)
    # The call of 00:00 never arrived; the job's next call, at 00:30, is between slots.
    with freeze_time("2026-05-01T00:30:05Z"):
        answer = call(client, "job", utc(2026, 5, 1, 0, 30)).json()
    assert (answer["outcome"], answer["slot"]) == ("missed", "2026-05-01T00:00:00+00:00")
    assert answer["workflow"] is None
    with freeze_time("2026-05-01T01:00:05Z"):
        assert call(client, "job", utc(2026, 5, 1, 1)).json()["outcome"] == "duplicate"
    with freeze_time("2026-05-01T01:30:05Z"):
        assert call(client, "job", utc(2026, 5, 1, 1, 30)).json()["outcome"] == "started"

    states = dict(ScheduleRun.objects.values_list("slot__hour", "state"))
    assert states == {22: "STARTED", 0: "MISSED", 1: "STARTED"}
    assert Workflow.objects.count() == 2


def test_a_call_between_two_interval_slots_starts_the_lost_slot_within_catch_up(
    client, settings, eager
):
    _every_90_minutes(client, settings, catch_up="1h")
    with freeze_time("2026-05-01T00:30:05Z"):
        answer = call(client, "job", utc(2026, 5, 1, 0, 30)).json()
    with freeze_time("2026-05-01T01:00:05Z"):
        again = call(client, "job", utc(2026, 5, 1, 1)).json()

    assert (answer["outcome"], answer["slot"]) == ("started", "2026-05-01T00:00:00+00:00")
    assert again["outcome"] == "duplicate" and again["workflow"] == answer["workflow"]
    run = ScheduleRun.objects.get(slot=utc(2026, 5, 1))
    assert run.trigger == "catch_up" and run.workflow.status == WorkflowStatus.SUCCESS


def test_a_call_between_two_interval_slots_of_a_started_slot_starts_nothing(
    client, settings, eager
):
    _every_90_minutes(client, settings, catch_up="1h")
    with freeze_time("2026-04-30T23:00:05Z"):
        answer = call(client, "job", utc(2026, 4, 30, 23)).json()
    assert answer["outcome"] == "duplicate"
    assert Workflow.objects.count() == 1


def test_backfill_fires_each_slot_of_a_range_by_the_overlap_policy(settings, memory):
    job = _hourly(settings, "skip")
    fired = runs.backfill(job, utc(2026, 5, 1, 1), utc(2026, 5, 1, 3))
    assert [f.outcome for f in fired] == ["started", "skipped", "skipped"]
    drain()
    assert [f.outcome for f in runs.backfill(job, utc(2026, 5, 1, 1), utc(2026, 5, 1, 4))] == [
        "duplicate",
        "duplicate",
        "duplicate",
        "started",
    ]


# -- concurrency -----------------------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_calls_of_one_slot_start_one_workflow(settings, memory):
    job = _hourly(settings, "allow")
    slot = utc(2026, 5, 1, 9)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def caller() -> None:
        try:
            barrier.wait()
            outcomes.append(runs.fire(job, slot).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["duplicate"] * 7 + ["started"]
    assert ScheduleRun.objects.count() == 1
    assert Workflow.objects.count() == 1


@pytest.mark.postgres
def test_concurrent_http_calls_of_one_slot_start_one_workflow(settings, memory, live_server):
    _hourly(settings, "allow")
    url = f"{live_server.url}/cloudtasks/schedule/job/"
    headers = {**TOKEN, HEADER: "2026-05-01T09:00:00Z"}
    barrier = threading.Barrier(8)
    answers: list[dict] = []

    def caller() -> None:
        barrier.wait()
        request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            answers.append(json.loads(response.read()))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a["outcome"] for a in answers) == ["duplicate"] * 7 + ["started"]
    assert len({a["workflow"] for a in answers}) == 1
    assert ScheduleRun.objects.count() == 1
    assert Workflow.objects.count() == 1
    assert len(get_transport().sent) == 1  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_concurrent_slots_of_a_skip_schedule_start_one_workflow(settings, memory):
    job = _hourly(settings, "skip")
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def caller(hour: int) -> None:
        try:
            barrier.wait()
            outcomes.append(runs.fire(job, utc(2026, 5, 1, hour)).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller, args=(h,)) for h in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["skipped"] * 5 + ["started"]
    assert Workflow.objects.count() == 1


# -- declarations and checks ------------------------------------------------------------


@pytest.fixture
def declared(monkeypatch):
    """An empty set of ``@periodic`` declarations, restored afterwards."""
    monkeypatch.setattr(declarations, "_declared", {})
    return declarations._declared


def test_periodic_schedules_a_task_under_its_name(declared, client, eager):
    from django_cloudtasks import task

    @periodic(cron="*/15 * * * *", timezone="Europe/Paris", args=[20, 22])
    @task(name="schedules_test_sum")
    def schedules_test_sum(a, b):
        return a + b

    schedule = get_schedule("schedules_test_sum")
    assert (schedule.cron, schedule.timezone) == ("*/15 * * * *", "Europe/Paris")
    assert schedules_test_sum(1, 2) == 3  # still a plain function
    answer = call(client, "schedules_test_sum", utc(2026, 5, 1, 10, 15)).json()
    assert Workflow.objects.get(pk=answer["workflow"]).status == WorkflowStatus.SUCCESS


def test_a_django_task_is_scheduled_the_same_way(declared, settings, client, eager):
    settings.TASKS = {"default": {"BACKEND": "django_cloudtasks.backends.CloudTasksBackend"}}
    from tests.testapp import django_tasks

    periodic(every=timedelta(minutes=5), name="django-add", args=[4, 5])(django_tasks.add)

    answer = call(client, "django-add", utc(2026, 5, 1, 10, 5)).json()

    assert answer["outcome"] == "started"
    assert Execution.objects.get(task="django.add").value == [4, 5]


def test_a_django_task_is_scheduled_by_its_dotted_path_in_schedules(settings, client, eager):
    settings.TASKS = {"default": {"BACKEND": "django_cloudtasks.backends.CloudTasksBackend"}}
    configure(
        settings,
        digest={"task": "tests.testapp.django_tasks.add", "args": [6, 7], "cron": "0 * * * *"},
    )

    answer = call(client, "digest", utc(2026, 5, 1, 10)).json()

    assert answer["outcome"] == "started"
    assert Workflow.objects.get(pk=answer["workflow"]).status == WorkflowStatus.SUCCESS
    assert Execution.objects.get(task="django.add").value == [6, 7]


def test_periodic_below_task_on_a_plain_function_fails_the_checks(declared):
    def nightly_cleanup():
        return None

    periodic(cron="0 3 * * *")(nightly_cleanup)

    with pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert "django_cloudtasks.E103" in str(caught.value)
    assert "is not a task" in str(caught.value)


def test_a_name_declared_twice_is_an_error(declared, settings):
    periodic(cron="0 * * * *", name="twice")(add)
    configure(settings, twice={"task": "add", "cron": "0 * * * *"})
    with pytest.raises(declarations.ScheduleError, match="declared twice"):
        declarations.all_schedules()


@pytest.mark.parametrize(
    "entry, check_id, words",
    [
        ({"task": "add", "cron": "61 * * * *"}, "E101", "invalid cron"),
        ({"task": "add", "cron": "0 * * * * *"}, "E101", "five fields"),
        ({"task": "add", "cron": "0 12 L * *"}, "E101", "not unix-cron"),
        ({"task": "add", "cron": "0 9 * * MON#1"}, "E101", "not unix-cron"),
        ({"task": "add", "cron": "@daily"}, "E101", "five fields"),
        ({"task": "add", "every": "30s"}, "E101", "whole number of minutes"),
        ({"task": "add", "cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "E102", "time zone"),
        ({"canvas": "tests.nowhere.canvas", "cron": "0 3 * * *"}, "E103", "cannot import"),
        ({"task": "not_a_task_anywhere", "cron": "0 3 * * *"}, "E103", "cannot import"),
        ({"task": "add", "cron": "0 3 * * *", "overlap": "queue"}, "E105", "overlap"),
        (
            {"canvas": f"{__name__}.NIGHTLY", "args": [1], "cron": "0 3 * * *"},
            "E103",
            "takes no args",
        ),
    ],
)
def test_bad_schedules_fail_the_system_checks_with_stable_ids(settings, entry, check_id, words):
    configure(settings, job=entry)
    with pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert f"django_cloudtasks.{check_id}" in str(caught.value)
    assert words in str(caught.value)


def test_a_name_cloud_scheduler_would_refuse_fails_the_checks(settings):
    configure(settings, **{"nightly report": {"task": "add", "cron": "0 3 * * *"}})
    with pytest.raises(SystemCheckError, match=r"django_cloudtasks\.E104"):
        call_command("check")


def test_a_malformed_schedules_setting_fails_the_checks(settings):
    configure(settings, job={"task": "add", "cron": "0 3 * * *", "colour": "blue"})
    with pytest.raises(SystemCheckError, match=r"django_cloudtasks\.E100.*unknown keys colour"):
        call_command("check")


def test_a_schedule_whose_arguments_do_not_bind_answers_500_and_records_nothing(
    client, settings, eager
):
    configure(settings, job={"task": "add", "args": [1, 2, 3], "cron": "0 * * * *"})
    response = call(client, "job", utc(2026, 5, 1, 1))
    assert response.status_code == 500
    assert "cannot start" in response.json()["error"]
    assert not ScheduleRun.objects.exists() and not Workflow.objects.exists()


def test_a_disabled_schedule_starts_nothing_when_called(client, settings, eager):
    configure(settings, job={"task": "add", "args": [1, 2], "cron": "0 * * * *", "enabled": False})
    assert call(client, "job", utc(2026, 5, 1, 1)).json()["outcome"] == "paused"
    assert runs.tick(now=utc(2026, 5, 1, 5)).missed == {}
    assert not ScheduleRun.objects.exists()


def test_a_backfill_cannot_reach_into_the_future(settings, memory):
    job = _hourly(settings, "allow")
    with freeze_time("2026-05-01T12:00:00Z"), pytest.raises(declarations.ScheduleError):
        runs.backfill(job, utc(2026, 5, 1, 10), utc(2026, 5, 1, 14))
    assert not ScheduleRun.objects.exists()


def test_calls_around_the_spring_change_map_to_the_slots_of_paris_time(client, settings, eager):
    configure(
        settings,
        early={"task": "add", "args": [1, 1], "cron": "30 2 * * *", "timezone": "Europe/Paris"},
    )
    # 01:05 UTC on 29 March 2026 is 03:05 CEST: the day's 02:30 ran at 03:00 CEST.
    with freeze_time("2026-03-29T01:05:00Z"):
        assert call(client, "early").json()["slot"] == "2026-03-29T01:00:00+00:00"
    with freeze_time("2026-03-30T00:31:00Z"):  # 02:31 CEST the next day
        assert call(client, "early").json()["slot"] == "2026-03-30T00:30:00+00:00"


def test_a_second_call_in_the_hour_repeated_in_autumn_starts_nothing(client, settings, eager):
    configure(
        settings,
        early={"task": "add", "args": [1, 1], "cron": "30 2 * * *", "timezone": "Europe/Paris"},
    )
    # 02:30 happens twice in Paris on 25 October 2026: 00:30 UTC (CEST), 01:30 UTC (CET).
    with freeze_time("2026-10-25T00:30:05Z"):
        first = call(client, "early", utc(2026, 10, 25, 0, 30)).json()
    with freeze_time("2026-10-25T01:30:05Z"):
        second = call(client, "early", utc(2026, 10, 25, 1, 30)).json()

    assert first["outcome"] == "started"
    assert (second["outcome"], second["slot"]) == ("duplicate", first["slot"])
    assert Workflow.objects.count() == 1


def test_a_slot_cloud_scheduler_skips_in_spring_is_recorded_as_missed(client, settings, eager):
    configure(
        settings,
        early={"task": "add", "args": [1, 1], "cron": "30 2 * * *", "timezone": "Europe/Paris"},
    )
    with freeze_time("2026-03-28T01:30:05Z"):
        call(client, "early", utc(2026, 3, 28, 1, 30))
    # No call on the 29th (02:30 did not exist); the next comes on the 30th.
    with freeze_time("2026-03-30T00:30:05Z"):
        assert call(client, "early", utc(2026, 3, 30, 0, 30)).json()["outcome"] == "started"

    states = dict(ScheduleRun.objects.values_list("slot", "state"))
    assert states == {
        utc(2026, 3, 28, 1, 30): "STARTED",
        utc(2026, 3, 29, 1, 0): "MISSED",
        utc(2026, 3, 30, 0, 30): "STARTED",
    }


def test_the_tick_over_a_month_end_finds_the_last_day_slot(settings, memory):
    configure(
        settings,
        monthly={"task": "add", "args": [1, 1], "cron": "0 12 29-31 * *", "catch_up": "2d"},
    )
    with freeze_time("2028-02-27T00:00:00Z"):
        runs.tick()
    with freeze_time("2028-03-01T00:00:00Z"):  # a leap year: February ends on the 29th
        assert runs.tick().started == {"monthly": 1}
    assert ScheduleRun.objects.get().slot == utc(2028, 2, 29, 12)
