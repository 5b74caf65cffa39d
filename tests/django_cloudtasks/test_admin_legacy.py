"""The original package's rows (1.x) in the admin: listed, shown, never changed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from django_cloudtasks.models import CloudChain, CloudTask

pytestmark = pytest.mark.django_db


@pytest.fixture
def old_chain():
    chain = CloudChain.objects.create(status="SUCCESS", result=[9, 19])
    CloudTask.objects.create(
        chain=chain,
        endpoint_path="/cloudtasks/run/sum/",
        payload={"a": 4, "b": 5},
        status="SUCCESS",
        execution_result=9,
    )
    CloudTask.objects.create(
        chain=chain,
        endpoint_path="/cloudtasks/run/sum/",
        payload={"b": 10, "a": 9},
        status="FAILED",
        execution_result={"error": "boom"},
    )
    return chain


def test_the_chains_from_1x_are_listed_and_shown_with_their_tasks(admin_client, old_chain):
    listing = admin_client.get(reverse("admin:django_cloudtasks_cloudchain_changelist"))
    assert listing.status_code == 200
    assert str(old_chain.pk) in listing.content.decode()

    page = admin_client.get(
        reverse("admin:django_cloudtasks_cloudchain_change", args=[old_chain.pk])
    ).content.decode()
    assert "/cloudtasks/run/sum/" in page
    assert "boom" in page
    assert 'name="_save"' not in page  # nothing to save: read-only


def test_the_rows_from_1x_cannot_be_added_changed_or_deleted(admin_client, old_chain):
    task = old_chain.tasks.first()
    assert admin_client.get(reverse("admin:django_cloudtasks_cloudchain_add")).status_code == 403
    assert admin_client.get(reverse("admin:django_cloudtasks_cloudtask_add")).status_code == 403
    url = reverse("admin:django_cloudtasks_cloudtask_change", args=[task.pk])
    admin_client.post(url, {"status": "PENDING"})
    delete = reverse("admin:django_cloudtasks_cloudchain_delete", args=[old_chain.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403

    task.refresh_from_db()
    assert task.status == "SUCCESS"
    assert CloudChain.objects.count() == 1 and CloudTask.objects.count() == 2
