"""The live workflow page: its progress and timeline endpoints, the list's progress bars
and filters, and each node's attempt history."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from django_cloudtasks import chain, chord
from django_cloudtasks.admin import live
from django_cloudtasks.constants import State
from django_cloudtasks.models import Node, Workflow
from tests.testapp.tasks import add, always_disconnects, fail, flaky, identity, tsum

pytestmark = pytest.mark.django_db(transaction=True)


def progress_url(workflow_id) -> str:
    return reverse("admin:django_cloudtasks_workflow_progress", args=[workflow_id])


def timeline_url(workflow_id) -> str:
    return reverse("admin:django_cloudtasks_workflow_timeline", args=[workflow_id])


def workflow_url(workflow_id) -> str:
    return reverse("admin:django_cloudtasks_workflow_change", args=[workflow_id])


LIST = "admin:django_cloudtasks_workflow_changelist"


# -- the progress endpoint ------------------------------------------------------------------


def test_the_progress_endpoint_answers_the_counts_of_a_running_workflow(admin_client, memory):
    result = chord([add.si(i, i) for i in range(5)], tsum.s()).apply_async()
    memory.drain(limit=3)
    data = admin_client.get(progress_url(result.workflow_id)).json()
    assert data["status"] == "PENDING" and data["finished"] is False
    assert (data["done"], data["total"]) == (3, 7)
    assert data["counts"]["SUCCESS"] == 3 and data["counts"]["QUEUED"] == 2
    assert data["counts"]["PENDING"] == 2

    memory.drain()
    data = admin_client.get(progress_url(result.workflow_id)).json()
    assert data["status"] == "SUCCESS" and data["finished"] is True
    assert data["done"] == data["total"] == 7 and data["fraction"] == 1.0


def test_polling_the_progress_costs_four_queries_whatever_the_size(
    admin_client, memory, django_assert_num_queries
):
    result = chord([add.si(i, i) for i in range(300)], tsum.s()).apply_async()
    memory.drain(limit=10)
    url = progress_url(result.workflow_id)
    admin_client.get(url)  # warm the permission caches
    # the session, the user, the workflow, and one count of its nodes by state
    with django_assert_num_queries(4):
        data = admin_client.get(url).json()
    assert data["done"] == 10


def test_the_endpoints_need_a_staff_user_who_may_view_workflows(client, django_user_model, memory):
    result = add.s(1, 1).apply_async()
    urls = [progress_url(result.workflow_id), timeline_url(result.workflow_id)]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]

    someone = django_user_model.objects.create_user("someone", password="x")
    client.force_login(someone)
    for url in urls:
        assert client.get(url).status_code == 302

    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    for url in urls:
        assert client.get(url).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    client.force_login(django_user_model.objects.get(pk=staff.pk))
    for url in urls:
        assert client.get(url).status_code == 200


def test_an_unknown_workflow_is_not_found(admin_client):
    missing = "00000000-0000-0000-0000-000000000000"
    assert admin_client.get(progress_url(missing)).status_code == 404
    assert admin_client.get(timeline_url(missing)).status_code == 404


# -- the timeline endpoint ------------------------------------------------------------------


def test_the_timeline_places_each_node_on_one_axis_from_the_workflow_start(admin_client, memory):
    result = chain(add.si(1, 1), flaky.s(), identity.s(), fail.si()).apply_async()
    memory.drain()
    data = admin_client.get(timeline_url(result.workflow_id)).json()
    assert data["status"] == "FAILURE" and data["shown"] == data["size"] == 4
    first, retried, identity_node, failed = data["nodes"]
    assert [n["i"] for n in data["nodes"]] == [0, 1, 2, 3]
    assert first["label"] == "add" and first["state"] == "SUCCESS"
    assert 0 <= first["q"] <= first["s"] <= first["f"] <= data["end"]
    assert first["f"] <= retried["q"]  # each step is queued once its parent finished
    # flaky(2) retried twice: three attempts, the earlier two drawn from the attempt log
    assert retried["n"] == 3 and [t[2] for t in retried["tries"]] == ["RETRY", "RETRY", "SUCCESS"]
    assert all(start <= end for start, end, _ in retried["tries"])
    assert identity_node["f"] <= failed["s"]
    assert failed["state"] == "FAILURE" and failed["err"].startswith("ValueError: ")


def test_a_node_that_never_ran_has_no_start_on_the_timeline(admin_client, memory):
    result = (add.si(1, 1) | add.s(2)).apply_async()
    data = admin_client.get(timeline_url(result.workflow_id)).json()
    queued, waiting = data["nodes"]
    assert queued["state"] == "QUEUED" and queued["q"] is not None and queued["s"] is None
    assert waiting["state"] == "PENDING" and waiting["q"] is None and waiting["f"] is None
    assert data["now"] >= queued["q"]


def test_the_timeline_draws_the_first_nodes_of_a_very_large_workflow(
    admin_client, memory, monkeypatch
):
    monkeypatch.setattr(live, "MAX_TIMELINE_NODES", 25)
    result = chord([add.si(i, i) for i in range(40)], tsum.s()).apply_async()
    data = admin_client.get(timeline_url(result.workflow_id)).json()
    assert (data["shown"], data["size"]) == (25, 42)
    assert [n["i"] for n in data["nodes"]] == list(range(25))


def test_reading_the_timeline_costs_one_query_for_the_nodes(
    admin_client, memory, django_assert_num_queries
):
    result = chord([add.si(i, i) for i in range(200)], tsum.s()).apply_async()
    memory.drain()
    url = timeline_url(result.workflow_id)
    admin_client.get(url)
    with django_assert_num_queries(4):  # the session, the user, the workflow, its nodes
        data = admin_client.get(url).json()
    assert data["shown"] == 202


# -- the page ----------------------------------------------------------------------------


def test_a_running_workflow_page_polls_its_progress_and_a_finished_one_does_not(
    admin_client, memory
):
    result = (add.si(1, 1) | add.s(2) | add.s(3)).apply_async()
    memory.drain(limit=1)
    page = admin_client.get(workflow_url(result.workflow_id)).content.decode()
    live_div = re.search(r'<div id="ct-live"[^>]*>', page).group(0)
    assert f'data-progress-url="{progress_url(result.workflow_id)}"' in live_div
    assert f'data-timeline-url="{timeline_url(result.workflow_id)}"' in live_div
    assert 'data-finished="false"' in live_div
    assert 'src="/static/django_cloudtasks/live.js"' in page
    assert "1 / 3 nodes done" in page
    assert 'id="ct-timeline"' in page

    memory.drain()
    page = admin_client.get(workflow_url(result.workflow_id)).content.decode()
    assert 'data-finished="true"' in page and "3 / 3 nodes done" in page


def test_the_script_is_served_by_the_static_files(client):
    from django.contrib.staticfiles import finders

    found = finders.find("django_cloudtasks/live.js")
    assert found and "ct-live" in Path(found).read_text()


def test_the_node_table_shows_attempts_and_errors(admin_client, memory):
    result = chain(flaky.s(1), fail.si()).apply_async()
    memory.drain()
    page = admin_client.get(workflow_url(result.workflow_id)).content.decode()
    table = page.split('id="nodes-group"', 1)[1]
    assert re.search(r'<td class="field-attempts">\s*<p>2</p>', table)
    assert "ValueError: " in table


# -- the list: progress bars and filters ---------------------------------------------------


def test_the_list_draws_a_progress_bar_for_each_workflow(admin_client, memory):
    done = add.si(1, 1).apply_async()
    memory.drain()
    running = chord([add.si(i, i) for i in range(3)], tsum.s()).apply_async()
    memory.drain(limit=2)
    page = admin_client.get(reverse(LIST)).content.decode()
    bars = dict(re.findall(r'title="(\d+ of \d+) nodes done".*?<small>(\d+)%</small>', page))
    assert bars["2 of 5"] == "40"
    assert bars["1 of 1"] == "100"
    assert running.workflow_id[:8] in page and done.workflow_id[:8] in page


def test_the_list_filters_by_task_name_and_state_and_date(admin_client, memory):
    adds = add.si(1, 1).apply_async()
    retried = always_disconnects.si().apply_async()
    memory.drain()
    both = (add.si(1, 1) | identity.s()).apply_async()

    def shown(**query) -> set[str]:
        response = admin_client.get(reverse(LIST), query)
        assert response.status_code == 200
        return {str(w.pk) for w in response.context["cl"].result_list}

    assert shown(task="add") == {adds.workflow_id, both.workflow_id}
    assert shown(task="identity") == {both.workflow_id}
    assert shown(task="always_disconnects", status__exact="FAILURE") == {retried.workflow_id}
    assert shown(task="add", status__exact="PENDING") == {both.workflow_id}
    finished = Workflow.objects.get(pk=adds.workflow_id).finished_at
    assert shown(finished_at__gte=finished.strftime("%Y-%m-%d 00:00:00+00:00"), task="add") == {
        adds.workflow_id
    }
    assert shown(q=retried.workflow_id[:8]) == {retried.workflow_id}


# -- a node's attempt history ----------------------------------------------------------------


def test_a_node_page_shows_each_attempt_with_its_outcome_and_error(admin_client, memory):
    result = always_disconnects.si().apply_async()
    memory.drain()
    node = Node.objects.get(pk=result.id)
    page = admin_client.get(reverse("admin:django_cloudtasks_node_change", args=[node.pk]))
    html = page.content.decode()
    table = re.search(r'<table class="ct-attempts">.*?</table>', html, re.S).group(0)
    rows = re.findall(r"<tr><td>(\d+)</td>.*?state-(\w+).*?</td><td>(.*?)</td></tr>", table, re.S)
    assert [(n, outcome) for n, outcome, _ in rows] == [
        ("1", "RETRY"),
        ("2", "RETRY"),
        ("3", "RETRY"),
        ("4", "FAILURE"),
    ]
    assert {error for _, _, error in rows} == {"ConnectionError: no route"}
    assert table.count("<time ") == 8  # each attempt's start and end


def test_a_node_that_never_ran_has_no_attempts_section(admin_client, memory):
    result = (add.si(1, 1) | add.s(2)).apply_async()
    waiting = Node.objects.get(workflow_id=result.workflow_id, index=1)
    assert waiting.state == State.PENDING
    html = admin_client.get(
        reverse("admin:django_cloudtasks_node_change", args=[waiting.pk])
    ).content.decode()
    assert '<table class="ct-attempts">' not in html and ">Attempts</h2>" not in html
