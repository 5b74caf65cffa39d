"""The workflow list: running workflows with their progress, times to the second,
short ids in the search, and a page that fits 1,400 pixels."""

from __future__ import annotations

import re
from pathlib import Path

import django
import pytest
from django.urls import reverse

from django_cloudtasks import chain, chord, group
from django_cloudtasks.models import Node, Workflow
from tests.django_cloudtasks.browser import screenshot
from tests.django_cloudtasks.test_dagsvg import ARTIFACTS
from tests.testapp.tasks import add, fail, tsum

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "admin:django_cloudtasks_workflow_changelist"


def rows(page: str) -> list[str]:
    return re.findall(r"<tr>.*?</tr>", page.split("<tbody>", 1)[1], re.S)


def test_a_running_workflow_says_so_with_its_progress(admin_client, memory):
    done = add.si(6, 6).apply_async()
    failed = fail.si().apply_async()
    memory.drain()
    running = chain(add.si(1, 1), add.s(2), add.s(3), add.s(4)).apply_async()
    memory.drain(limit=2)
    waiting = add.si(5, 5).set(countdown=3600).apply_async()

    page = admin_client.get(reverse(LIST)).content.decode()

    ids = (running.workflow_id, waiting.workflow_id, done.workflow_id, failed.workflow_id)
    shown = {wf: next(r for r in rows(page) if f">{wf[:8]}</a>" in r) for wf in ids}
    assert "RUNNING 2/4" in shown[running.workflow_id]
    assert " s so far<" in shown[running.workflow_id]
    assert ">PENDING<" in shown[waiting.workflow_id]
    assert ">SUCCESS<" in shown[done.workflow_id] and "so far" not in shown[done.workflow_id]
    assert ">FAILURE<" in shown[failed.workflow_id]
    created = Workflow.objects.get(pk=done.workflow_id).created_at
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>", shown[done.workflow_id])
    assert created.strftime("%H:%M:%S") in shown[done.workflow_id]  # UTC in the tests
    assert re.search(r">\d+\.\d{3} s<", shown[done.workflow_id])  # the duration column

    detail = admin_client.get(
        reverse("admin:django_cloudtasks_workflow_change", args=[running.workflow_id])
    ).content.decode()
    assert "RUNNING 2/4" in detail


def test_the_list_reads_the_progress_of_a_page_in_one_query(
    admin_client, memory, django_assert_num_queries
):
    def list_page():
        admin_client.get(reverse(LIST))  # warm the session and permission caches
        with django_assert_num_queries(6):
            return admin_client.get(reverse(LIST)).content.decode()

    chain(add.si(1, 1), add.s(2)).apply_async()
    memory.drain(limit=1)
    assert list_page().count("RUNNING 1/2") == 1
    for _ in range(5):
        chain(add.si(1, 1), add.s(2)).apply_async()
    memory.drain(limit=5)
    half_done = Workflow.objects.filter(status="PENDING", nodes__state="SUCCESS").count()
    assert half_done >= 4
    assert list_page().count("RUNNING 1/2") == half_done


def test_the_short_id_finds_workflows_and_nodes(admin_client, memory):
    result = chain(add.si(1, 1), add.s(2)).apply_async()
    other = add.si(3, 3).apply_async()
    node = Node.objects.get(workflow_id=result.workflow_id, index=1)

    def found(view, term):
        response = admin_client.get(reverse(view), {"q": term})
        return {str(obj.pk) for obj in response.context["cl"].result_list}

    assert found(LIST, result.workflow_id[:8]) == {result.workflow_id}
    assert found(LIST, str(node.pk)[:8]) == {result.workflow_id}
    assert found(LIST, str(node.pk)[:8].upper()) == {result.workflow_id}
    nodes = "admin:django_cloudtasks_node_changelist"
    assert found(nodes, str(node.pk)[:8]) == {str(node.pk)}
    assert len(found(nodes, result.workflow_id[:8])) == 2
    assert other.workflow_id not in found(LIST, result.workflow_id[:8])


def test_the_workflow_list_fits_1400_pixels(admin_client, memory, chromium):
    """With long names and every column, the page needs no horizontal scrolling."""
    chord([add.si(i, i) for i in range(40)], tsum.s()).apply_async()
    group(add.si(1, 1), fail.si()).apply_async()
    for i in range(8):
        chain(add.si(i, i), add.s(1), add.s(2)).apply_async()
    memory.drain(limit=30)
    page = admin_client.get(reverse(LIST)).content.decode()

    static = Path(django.__file__).parent / "contrib" / "admin" / "static"
    page = page.replace('href="/static/', f'href="{static.as_uri()}/')
    page = page.replace("</body>", _MEASURE + "</body>")
    out = ARTIFACTS / "admin"
    out.mkdir(parents=True, exist_ok=True)
    html = out / "workflow-list.html"
    html.write_text(page)
    screenshot(chromium, html, out / "workflow-list.png", 1400, 900)
    dumped = _dump_dom(chromium, html)
    width = int(re.search(r'<div id="measured">(\d+)</div>', dumped).group(1))
    assert width <= 1400


_MEASURE = (
    '<div id="measured"></div><script>document.getElementById("measured").textContent = '
    "document.documentElement.scrollWidth;</script>"
)


def _dump_dom(chromium: str, html: Path) -> str:
    import subprocess

    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={html.parent / 'dump-profile'}",
            "--window-size=1400,900",
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
