"""The admin: pages, the DAG picture, and the revoke and retry actions."""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from django_cloudtasks import chain, chord, dagsvg, task
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.recovery import RetryRefused, retry_node
from tests.django_cloudtasks.browser import read_png, screenshot
from tests.testapp.tasks import add, fail, tsum

pytestmark = pytest.mark.django_db(transaction=True)

#: While True, ``admin_flaky_once`` fails; tests flip it to let a retry succeed.
FLAKY = {"fail": True}


@task(name="admin_flaky_once")
def admin_flaky_once(value=10):
    """Fails while ``FLAKY["fail"]`` is set, then returns ``value``."""
    if FLAKY["fail"]:
        raise RuntimeError("the flaky task fails this time")
    return value


@pytest.fixture(autouse=True)
def flaky_fails_first():
    FLAKY["fail"] = True
    yield
    FLAKY["fail"] = True


def node_url(node):
    return reverse("admin:django_cloudtasks_node_change", args=[node.pk])


def workflow_url(workflow_id):
    return reverse("admin:django_cloudtasks_workflow_change", args=[workflow_id])


def run_action(client, model, action, pks):
    url = reverse(f"admin:django_cloudtasks_{model}_changelist")
    data = {"action": action, "_selected_action": [str(pk) for pk in pks], "index": 0}
    return client.post(url, data, follow=True)


def shapes(html):
    """``(classes, node id)`` of each node shape in the page's SVG."""
    return re.findall(r'<g class="node ([^"]+)" data-node="([^"]+)">', html)


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def failed_chain(memory):
    """``add(1, 1) | admin_flaky_once() | add(3, 4)`` run until the flaky task failed."""
    result = chain(add.s(1, 1), admin_flaky_once.si(), add.si(3, 4)).apply_async()
    memory.drain()
    return Workflow.objects.get(pk=result.workflow_id)


# -- who may see the pages ---------------------------------------------------------------


def admin_pages(workflow):
    node = workflow.nodes.get(index=1)
    workflows = reverse("admin:django_cloudtasks_workflow_changelist")
    nodes = reverse("admin:django_cloudtasks_node_changelist")
    return [
        workflows,
        f"{workflows}?status__exact=FAILURE",
        f"{workflows}?{urlencode({'created_at__gte': '2000-01-01 00:00:00+00:00'})}",
        f"{workflows}?q=admin_flaky_once",
        f"{workflows}?q={workflow.pk}",
        f"{workflows}?q={str(workflow.pk)[:8]}",
        workflow_url(workflow.pk),
        nodes,
        f"{nodes}?state__exact=FAILURE&kind__exact=task&task_name=add",
        f"{nodes}?workflow__id__exact={workflow.pk}",
        f"{nodes}?q={node.pk}",
        f"{nodes}?q=flaky",
        node_url(node),
    ]


def test_every_admin_page_answers_a_superuser(admin_client, failed_chain):
    for url in admin_pages(failed_chain):
        response = admin_client.get(url)
        assert response.status_code == 200, url


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(
    client, django_user_model, failed_chain
):
    pages = admin_pages(failed_chain)
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.force_login(django_user_model.objects.create_user("someone", password="x"))
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_the_pages_are_read_only_with_no_add_delete_or_save(admin_client, failed_chain):
    assert admin_client.get(reverse("admin:django_cloudtasks_workflow_add")).status_code == 403
    page = admin_client.get(workflow_url(failed_chain.pk)).content.decode()
    assert 'name="_save"' not in page
    changelist = admin_client.get(reverse("admin:django_cloudtasks_node_changelist"))
    assert "delete_selected" not in changelist.content.decode()


def test_searching_workflows_by_id_node_id_and_task_name(admin_client, memory, failed_chain):
    other = add.s(5, 5).apply_async()
    url = reverse("admin:django_cloudtasks_workflow_changelist")

    def found(term):
        response = admin_client.get(url, {"q": term})
        return {str(w.pk) for w in response.context["cl"].result_list}

    flaky_node = failed_chain.nodes.get(index=1)
    assert found(str(failed_chain.pk)) == {str(failed_chain.pk)}
    assert found(str(flaky_node.pk)) == {str(failed_chain.pk)}
    assert found("admin_flaky_once") == {str(failed_chain.pk)}
    assert found("add") == {str(failed_chain.pk), other.workflow_id}
    assert found(str(failed_chain.pk)[:13]) == {str(failed_chain.pk)}


def test_the_node_list_filters_by_state_and_finds_a_workflows_nodes(admin_client, failed_chain):
    url = reverse("admin:django_cloudtasks_node_changelist")
    failed = admin_client.get(url, {"state__exact": "FAILURE"}).context["cl"].result_list
    assert sorted(n.index for n in failed) == [1, 2]
    by_workflow = admin_client.get(url, {"q": str(failed_chain.pk)}).context["cl"].result_list
    assert len(by_workflow) == 3


# -- the detail pages ------------------------------------------------------------------


def test_the_node_page_shows_arguments_result_error_and_traceback(admin_client, failed_chain):
    first = failed_chain.nodes.get(index=0)
    page = admin_client.get(node_url(first)).content.decode()
    assert "[\n  1,\n  1\n]" in page  # args, pretty JSON
    assert "<pre" in page and ">2</pre>" in page  # the result
    flaky = failed_chain.nodes.get(index=1)
    page = admin_client.get(node_url(flaky)).content.decode()
    assert "RuntimeError" in page
    assert "the flaky task fails this time" in page
    assert "Traceback (most recent call last)" in page
    assert "Retry this node" in page


def test_the_workflow_page_lists_its_nodes_with_links(admin_client, failed_chain):
    page = admin_client.get(workflow_url(failed_chain.pk)).content.decode()
    for node in failed_chain.nodes.all():
        assert node_url(node) in page
    assert "RuntimeError: the flaky task fails this time" in page  # where it failed


# -- the picture -------------------------------------------------------------------------


def test_a_chord_of_100_is_one_box_until_expanded_then_one_shape_per_node(
    admin_client, memory, django_assert_max_num_queries
):
    result = chord([add.si(i, i) for i in range(100)], tsum.s()).apply_async()
    memory.drain()
    assert result.get(timeout=1) == sum(2 * i for i in range(100))
    with django_assert_max_num_queries(25):
        page = admin_client.get(workflow_url(result.workflow_id)).content.decode()
    assert len(shapes(page)) == 2  # the join and the body; the members are one box
    assert 'data-members="100"' in page and "100 success" in page

    with django_assert_max_num_queries(25):
        page = admin_client.get(workflow_url(result.workflow_id) + "?expand=header").content
    page = page.decode()
    drawn = shapes(page)
    assert len(drawn) == 102
    ids = {
        str(pk)
        for pk in Node.objects.filter(workflow_id=result.workflow_id).values_list("pk", flat=True)
    }
    assert {node_id for _, node_id in drawn} == ids
    assert Counter(classes.split()[0] for classes, _ in drawn) == {"state-SUCCESS": 102}
    assert sum("kind-barrier" in classes for classes, _ in drawn) == 1
    width, height = map(float, re.search(r'viewBox="0 0 (\S+) (\S+)"', page).groups())
    assert width <= dagsvg.MAX_WIDTH + 40 and height < 1400
    assert page.count(" add</text>") == 100  # every task box is labelled


def test_the_picture_colours_a_failure_and_what_it_failed(admin_client, failed_chain):
    page = admin_client.get(workflow_url(failed_chain.pk)).content.decode()
    states = {node_id: classes.split()[0] for classes, node_id in shapes(page)}
    by_index = {n.index: str(n.pk) for n in failed_chain.nodes.all()}
    assert states[by_index[0]] == "state-SUCCESS"
    assert states[by_index[1]] == "state-FAILURE"
    assert states[by_index[2]] == "state-FAILURE"


def test_an_expanded_group_of_1000_becomes_a_grid_of_small_squares():
    members = [
        SimpleNamespace(
            pk=i, index=i, parents=[], kind="task", task_name="add", path=str(i), state="SUCCESS"
        )
        for i in range(1000)
    ]
    join = SimpleNamespace(
        pk=1000,
        index=1000,
        parents=list(range(1000)),
        kind="barrier",
        task_name="",
        path="",
        state="PENDING",
    )
    svg = dagsvg.draw([*members, join], expanded={""})
    assert len(shapes(svg)) == 1001
    assert " add</text>" not in svg  # too small for labels; the tooltip has them
    width = float(re.search(r'viewBox="0 0 (\S+) ', svg).group(1))
    assert width <= dagsvg.MAX_WIDTH + 40


def test_beyond_the_limit_a_note_replaces_the_picture():
    nodes = [
        SimpleNamespace(
            pk=i, index=i, parents=[], kind="task", task_name="t", path="", state="PENDING"
        )
        for i in range(dagsvg.MAX_NODES + 1)
    ]
    assert "<svg" not in dagsvg.draw(nodes)


# -- revoking --------------------------------------------------------------------------


def test_revoking_selected_workflows_revokes_the_unfinished_ones(admin_client, memory):
    done = add.s(9, 9).apply_async()
    memory.drain()
    running = [(add.s(1, 1) | add.s(2)).apply_async() for _ in range(2)]
    selected = [r.workflow_id for r in running] + [done.workflow_id]
    response = run_action(admin_client, "workflow", "revoke_workflows", selected)
    statuses = {str(pk): status for pk, status in Workflow.objects.values_list("pk", "status")}
    assert [statuses[pk] for pk in selected] == [
        WorkflowStatus.REVOKED,
        WorkflowStatus.REVOKED,
        WorkflowStatus.SUCCESS,
    ]
    assert messages_of(response) == [
        "Revoked 2 workflow(s) (4 unfinished nodes). 1 already finished workflow(s) left as "
        "they were."
    ]
    memory.drain()
    revoked = Node.objects.filter(workflow_id__in=selected[:2])
    assert set(revoked.values_list("state", flat=True)) == {State.REVOKED}


def test_revoking_a_selected_node_revokes_what_is_downstream(admin_client, memory):
    result = (add.s(1, 1) | add.s(2) | add.s(3)).apply_async()
    second = Node.objects.get(workflow_id=result.workflow_id, index=1)
    response = run_action(admin_client, "node", "revoke_nodes", [second.pk])
    states = dict(Node.objects.values_list("index", "state"))
    assert states == {0: State.QUEUED, 1: State.REVOKED, 2: State.REVOKED}
    assert messages_of(response) == ["Revoked 2 node(s): 1 selected, 1 downstream."]
    memory.drain()
    assert Node.objects.get(index=0).state == State.SUCCESS


def test_the_revoke_button_on_the_workflow_page(admin_client, memory):
    result = (add.s(1, 1) | add.s(2)).apply_async()
    page = admin_client.get(workflow_url(result.workflow_id)).content.decode()
    assert "Revoke workflow" in page
    url = reverse("admin:django_cloudtasks_workflow_revoke", args=[result.workflow_id])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    assert response.status_code == 302 and response["Location"] == workflow_url(result.workflow_id)
    assert Workflow.objects.get().status == WorkflowStatus.REVOKED


def test_a_viewer_without_change_permission_may_look_but_not_act(
    client, django_user_model, failed_chain
):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_workflow", "view_node"])
    )
    client.force_login(viewer)
    flaky = failed_chain.nodes.get(index=1)
    page = client.get(node_url(flaky)).content.decode()
    assert "Retry this node" not in page
    changelist = client.get(reverse("admin:django_cloudtasks_node_changelist")).content.decode()
    assert "retry_nodes" not in changelist
    retry = reverse("admin:django_cloudtasks_node_retry", args=[flaky.pk])
    assert client.post(retry).status_code == 403
    assert Node.objects.get(pk=flaky.pk).state == State.FAILURE


# -- audit trail ------------------------------------------------------------------------


def history(obj) -> list[tuple[str, str, int]]:
    """The admin history of ``obj``: (user, message, action flag), oldest first."""
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk)
    ).order_by("pk")
    return [(e.user.get_username(), e.get_change_message(), e.action_flag) for e in entries]


def admin_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "django_cloudtasks.admin"]


@pytest.fixture
def operator(client, django_user_model):
    """A staff user, not a superuser, allowed to operate on workflows and nodes."""
    user = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    codenames = ["view_workflow", "view_node", "change_workflow", "change_node"]
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


def test_revoking_a_workflow_is_recorded_in_its_history_with_the_user(operator, memory, caplog):
    caplog.set_level("INFO", logger="django_cloudtasks.admin")
    button, action = (add.s(1, 1) | add.s(2)).apply_async(), add.s(3, 3).apply_async()
    operator.post(reverse("admin:django_cloudtasks_workflow_revoke", args=[button.workflow_id]))
    run_action(operator, "workflow", "revoke_workflows", [action.workflow_id])

    assert history(Workflow.objects.get(pk=button.workflow_id)) == [
        ("operator", "Revoked the workflow (2 unfinished nodes).", CHANGE)
    ]
    assert history(Workflow.objects.get(pk=action.workflow_id)) == [
        ("operator", "Revoked the workflow (1 unfinished nodes).", CHANGE)
    ]
    lines = admin_lines(caplog)
    assert lines == [
        "Revoked the workflow (2 unfinished nodes). (by operator in the admin)",
        "Revoked the workflow (1 unfinished nodes). (by operator in the admin)",
    ]
    record = next(r for r in caplog.records if r.name == "django_cloudtasks.admin")
    assert (record.user, record.workflow_id) == ("operator", str(button.workflow_id))


def test_revoking_a_node_is_recorded_in_its_history_with_the_user(operator, memory, caplog):
    caplog.set_level("INFO", logger="django_cloudtasks.admin")
    result = (add.s(1, 1) | add.s(2) | add.s(3)).apply_async()
    second, third = Node.objects.filter(index__in=[1, 2]).order_by("index")
    operator.post(reverse("admin:django_cloudtasks_node_revoke", args=[third.pk]))
    run_action(operator, "node", "revoke_nodes", [second.pk, third.pk])

    assert [message for _, message, _ in history(third)] == [
        "Revoked 1 node(s), downstream included."
    ]
    assert history(second)[0][:2] == ("operator", "Revoked 1 node(s), downstream included.")
    assert len(admin_lines(caplog)) == 2
    assert all("by operator" in line for line in admin_lines(caplog))
    assert Workflow.objects.get(pk=result.workflow_id).status == WorkflowStatus.REVOKED


def test_retrying_a_node_is_recorded_in_its_history_with_the_user(
    operator, memory, failed_chain, caplog
):
    caplog.set_level("INFO", logger="django_cloudtasks.admin")
    flaky = failed_chain.nodes.get(index=1)
    operator.post(reverse("admin:django_cloudtasks_node_retry", args=[flaky.pk]))
    memory.drain()  # fails again
    run_action(operator, "node", "retry_nodes", [flaky.pk])

    message = "Retried the node (1 downstream node(s) waiting on it again)."
    assert history(flaky) == [("operator", message, CHANGE)] * 2
    assert admin_lines(caplog) == [f"{message} (by operator in the admin)"] * 2


def test_what_was_refused_or_changed_nothing_leaves_no_history(operator, memory, failed_chain):
    first = failed_chain.nodes.get(index=0)  # SUCCESS: neither revoked nor retried
    operator.post(reverse("admin:django_cloudtasks_node_revoke", args=[first.pk]))
    run_action(operator, "node", "retry_nodes", [first.pk])
    run_action(operator, "workflow", "revoke_workflows", [failed_chain.pk])

    assert not LogEntry.objects.exists()


# -- retrying --------------------------------------------------------------------------


def test_retrying_the_failed_node_lets_the_workflow_finish(admin_client, memory, failed_chain):
    assert failed_chain.status == WorkflowStatus.FAILURE
    flaky = failed_chain.nodes.get(index=1)
    FLAKY["fail"] = False
    response = run_action(admin_client, "node", "retry_nodes", [flaky.pk])
    assert messages_of(response) == [
        "Retrying node #1 (admin_flaky_once); 1 downstream node(s) are waiting on it again; "
        "the workflow is running again."
    ]
    flaky.refresh_from_db()
    assert flaky.state == State.QUEUED and flaky.error_type == "" and flaky.attempts == 1
    last = failed_chain.nodes.get(index=2)
    assert last.state == State.PENDING and last.pending_parents == 1
    assert Workflow.objects.get().status == WorkflowStatus.PENDING
    assert Workflow.objects.get().finished_at is None
    memory.drain()
    workflow = Workflow.objects.get()
    assert workflow.status == WorkflowStatus.SUCCESS
    states = dict(workflow.nodes.values_list("index", "state"))
    assert states == {0: State.SUCCESS, 1: State.SUCCESS, 2: State.SUCCESS}
    assert workflow.nodes.get(index=2).result == 7
    assert workflow.nodes.get(index=1).attempts == 2


def test_the_retry_button_on_the_node_page(admin_client, memory, failed_chain):
    flaky = failed_chain.nodes.get(index=1)
    FLAKY["fail"] = False
    response = admin_client.post(reverse("admin:django_cloudtasks_node_retry", args=[flaky.pk]))
    assert response.status_code == 302 and response["Location"] == node_url(flaky)
    memory.drain()
    assert Workflow.objects.get().status == WorkflowStatus.SUCCESS


def test_a_retry_that_fails_again_fails_the_workflow_again(admin_client, memory, failed_chain):
    flaky = failed_chain.nodes.get(index=1)
    run_action(admin_client, "node", "retry_nodes", [flaky.pk])
    memory.drain()
    assert Workflow.objects.get().status == WorkflowStatus.FAILURE
    states = dict(Node.objects.values_list("index", "state"))
    assert states == {0: State.SUCCESS, 1: State.FAILURE, 2: State.FAILURE}


def test_only_the_node_that_failed_can_be_retried(admin_client, failed_chain):
    first, _flaky, last = failed_chain.nodes.order_by("index")
    response = run_action(admin_client, "node", "retry_nodes", [first.pk, last.pk])
    assert messages_of(response) == [
        "Not retried: node #0 (add) is SUCCESS; only a node in FAILURE can be retried.",
        "Not retried: node #2 (add) did not run: its parent #1 (admin_flaky_once) is FAILURE; "
        "retry the node that failed first.",
    ]
    assert dict(Node.objects.values_list("index", "state")) == {
        0: State.SUCCESS,
        1: State.FAILURE,
        2: State.FAILURE,
    }
    with pytest.raises(RetryRefused):
        retry_node(last.pk)


def test_retrying_a_failed_chord_member_runs_the_body_with_every_result(memory):
    result = chord([add.si(1, 1), admin_flaky_once.si(10), add.si(2, 2)], tsum.s()).apply_async()
    memory.drain()
    assert Workflow.objects.get().status == WorkflowStatus.FAILURE
    flaky = Node.objects.get(task_name="admin_flaky_once")
    FLAKY["fail"] = False
    report = retry_node(flaky.pk)
    assert report.resumed and len(report.reset) == 2
    memory.drain()
    assert result.get(timeout=1) == 16
    assert Workflow.objects.get().status == WorkflowStatus.SUCCESS


def test_with_two_failed_members_the_workflow_resumes_after_both_are_retried(admin_client, memory):
    result = chord(
        [admin_flaky_once.si(1), add.si(2, 2), admin_flaky_once.si(3)], tsum.s()
    ).apply_async()
    memory.drain()
    first, second = Node.objects.filter(task_name="admin_flaky_once").order_by("index")
    FLAKY["fail"] = False
    response = run_action(admin_client, "node", "retry_nodes", [first.pk])
    assert messages_of(response) == [
        "Retrying node #0 (admin_flaky_once); the workflow stays failed until #2 is retried too."
    ]
    memory.drain()
    assert Workflow.objects.get().status == WorkflowStatus.FAILURE
    assert Node.objects.get(pk=first.pk).state == State.SUCCESS
    run_action(admin_client, "node", "retry_nodes", [second.pk])
    memory.drain()
    assert result.get(timeout=1) == 8
    assert Workflow.objects.get().status == WorkflowStatus.SUCCESS


def test_a_revoked_workflow_is_not_retried(memory):
    result = chain(admin_flaky_once.si(), add.si(1, 1)).apply_async()
    memory.drain()
    Workflow.objects.filter(pk=result.workflow_id).update(status=WorkflowStatus.REVOKED)
    with pytest.raises(RetryRefused, match="revoked workflow"):
        retry_node(Node.objects.get(index=0).pk)


# -- the picture in a real browser -----------------------------------------------------


def test_chromium_draws_the_workflow_picture(admin_client, memory, chromium, tmp_path):
    members = [add.si(i, i) for i in range(30)] + [fail.si()]
    result = chord(members, tsum.s()).apply_async()
    memory.drain()
    page = admin_client.get(workflow_url(result.workflow_id)).content.decode()
    svg = re.search(r'<svg [^>]*class="cloudtasks-dag".*?</svg>', page, re.S).group(0)
    html = tmp_path / "dag.html"
    html.write_text(f'<!doctype html><meta charset="utf-8"><body style="margin:0">{svg}</body>')
    png = tmp_path / "dag.png"
    screenshot(chromium, html, png, 1200, 900)
    width, height, rows = read_png(png)
    assert (width, height) == (1200, 900)
    pixels = Counter()
    for row in rows:
        for x in range(0, len(row), 3):
            pixels[row[x : x + 3]] += 1

    def near(hex_colour: str) -> int:
        target = bytes.fromhex(hex_colour.lstrip("#"))
        return sum(
            n
            for rgb, n in pixels.items()
            if all(abs(a - b) <= 6 for a, b in zip(rgb, target, strict=True))
        )

    success_fill = dagsvg.STATE_COLOURS[State.SUCCESS][0]
    failure_fill = dagsvg.STATE_COLOURS[State.FAILURE][0]
    # 30 green boxes, and the failed member plus the body in red (the join is a diamond).
    assert near(success_fill) > 30 * 1500
    assert 2 * 1500 < near(failure_fill) < 30 * 1500
    assert near("#ffffff") > width * height // 4
