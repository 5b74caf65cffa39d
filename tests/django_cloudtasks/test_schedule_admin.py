"""The admin's Schedules page: the schedules, their runs linked to workflows, and the buttons."""

from __future__ import annotations

import io
import re

import pytest
from django.urls import reverse

from django_cloudtasks.models import ScheduleRun, ScheduleState

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "admin:django_cloudtasks_schedulerun_changelist"


@pytest.fixture
def nightly(settings, eager):
    settings.CLOUDTASKS = {
        **settings.CLOUDTASKS,
        "SCHEDULES": {
            "nightly": {"task": "add", "args": [1, 2], "cron": "0 3 * * *", "overlap": "skip"}
        },
    }


def operate(client, verb: str, name: str = "nightly"):
    url = reverse("admin:django_cloudtasks_schedule_operate", args=[name, verb])
    return client.post(url, follow=True)


def test_the_page_lists_the_schedules_and_run_now_starts_a_run_linked_to_its_workflow(
    admin_client, nightly
):
    page = admin_client.get(reverse(PAGE)).content.decode()
    assert 'data-schedule="nightly"' in page
    assert "cron &#x27;0 3 * * *&#x27; UTC" in page and "skip" in page

    response = operate(admin_client, "run-now")

    run = ScheduleRun.objects.get()
    assert run.trigger == "manual" and run.workflow is not None
    page = response.content.decode()
    assert "started workflow" in page
    workflow_page = reverse("admin:django_cloudtasks_workflow_change", args=[run.workflow_id])
    assert workflow_page in page
    assert admin_client.get(workflow_page).status_code == 200


def test_pause_and_resume_from_the_page(admin_client, nightly, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EMULATOR_HOST": "127.0.0.1:1"}
    response = operate(admin_client, "pause")
    assert ScheduleState.objects.get(name="nightly").paused
    # No Cloud Scheduler answers here: the pause holds in the database, with a warning.
    assert "paused in the database" in response.content.decode()
    assert "Resume" in response.content.decode()

    operate(admin_client, "resume")
    assert not ScheduleState.objects.get(name="nightly").paused


def test_only_operators_may_press_the_buttons(client, django_user_model, nightly):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_schedulerun"))
    client.force_login(user)

    assert client.get(reverse(PAGE)).status_code == 200
    assert "Run now" not in client.get(reverse(PAGE)).content.decode()
    assert operate(client, "run-now").status_code == 403
    assert not ScheduleRun.objects.exists()


def test_an_unknown_schedule_or_operation_is_not_found(admin_client, nightly):
    assert operate(admin_client, "run-now", name="nope").status_code == 404
    assert operate(admin_client, "explode").status_code == 404


def test_the_page_compares_the_schedules_with_cloud_scheduler_when_asked(
    admin_client, nightly, settings
):
    from django.core.management import call_command

    from django_cloudtasks.emulator import CloudTasksEmulator

    with CloudTasksEmulator() as emulator:
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EMULATOR_HOST": emulator.address}
        call_command("cloudtasks_schedules", "sync", stdout=io.StringIO())
        schedules = settings.CLOUDTASKS["SCHEDULES"]
        settings.CLOUDTASKS = {
            **settings.CLOUDTASKS,
            "SCHEDULES": {**schedules, "weekly": {"task": "add", "cron": "0 4 * * 1"}},
        }

        plain = admin_client.get(reverse(PAGE)).content.decode()
        compared = admin_client.get(reverse(PAGE) + "?drift=1")

    assert "<th>Drift</th>" not in plain and "Compare with Cloud Scheduler" in plain
    assert compared.status_code == 200
    drift = dict(
        re.findall(r'data-schedule="(\w+)">.*?<td class="drift">([^<]*)</td>', _flat(compared))
    )
    assert drift == {"nightly": "in sync", "weekly": "missing"}


def test_the_page_warns_when_cloud_scheduler_cannot_be_read(admin_client, nightly, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EMULATOR_HOST": "127.0.0.1:1"}
    response = admin_client.get(reverse(PAGE) + "?drift=1")
    assert response.status_code == 200
    assert "Cannot read the Cloud Scheduler jobs" in response.content.decode()
    assert 'data-schedule="nightly"' in response.content.decode()


def _flat(response) -> str:
    return " ".join(response.content.decode().split())
