"""The live workflow page in a real browser: the timeline is drawn, and the progress
moves while the workflow runs, without a reload.

The screenshots are kept in ``artifacts/admin/`` (``CLOUDTASKS_ARTIFACTS`` moves it),
which CI keeps: ``workflow-live.png`` (the page), ``workflow-timeline.png`` (its
timeline) and ``workflow-timeline-1000.png`` (a chord of a thousand).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.urls import reverse

from django_cloudtasks import chord, dagsvg, task
from django_cloudtasks.admin import WorkflowAdmin
from django_cloudtasks.constants import State
from tests.django_cloudtasks.browser import Browser, read_png
from tests.django_cloudtasks.test_dagsvg import ARTIFACTS
from tests.testapp.tasks import flaky, quiet_add, quiet_sum, tsum

pytestmark = pytest.mark.django_db(transaction=True)


@task(name="timeline_sleeps")
def sleeps(seconds, value):
    """Sleep, then return ``value``: a bar long enough to see."""
    time.sleep(seconds)
    return value


@pytest.fixture
def page(chromium, live_server, admin_client, monkeypatch, tmp_path):
    """A browser logged in to the admin as the superuser, polling every 0.2 s."""
    monkeypatch.setattr(WorkflowAdmin, "poll_seconds", 0.2)
    browser = Browser(chromium, tmp_path / "profile", 1400, 1300)
    browser.set_cookie(live_server.url, "sessionid", admin_client.cookies["sessionid"].value)
    yield browser
    browser.close()


def open_workflow(page: Browser, live_server, workflow_id: str) -> None:
    url = reverse("admin:django_cloudtasks_workflow_change", args=[workflow_id])
    page.open(live_server.url + url)
    page.wait_for("window.cloudtasksLive && window.cloudtasksLive.draws > 0")


def progress_text(page: Browser) -> str:
    return page.evaluate("document.querySelector('.ct-progress-text').textContent")


def near(png, hex_colour: str) -> int:
    """How many pixels of ``png`` are within a few levels of ``hex_colour``."""
    _, _, rows = read_png(png)
    pixels: Counter[bytes] = Counter()
    for row in rows:
        for x in range(0, len(row), 3):
            pixels[row[x : x + 3]] += 1
    target = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(
        n
        for rgb, n in pixels.items()
        if all(abs(a - b) <= 6 for a, b in zip(rgb, target, strict=True))
    )


def test_the_timeline_is_drawn_and_the_progress_moves_without_a_reload(page, live_server, memory):
    members = [sleeps.si(0.02 * (1 + i % 4), i) for i in range(10)] + [flaky.s(1)]
    result = chord(members, tsum.s()).apply_async()
    workflow_id = result.workflow_id
    total = len(members) + 2
    memory.drain(limit=4)

    open_workflow(page, live_server, workflow_id)
    assert progress_text(page) == f"4 / {total} nodes done"
    assert page.evaluate("document.querySelectorAll('#ct-timeline .ct-row').length") == total
    assert (
        page.evaluate("document.querySelectorAll('#ct-timeline .ct-bar.state-SUCCESS').length") == 4
    )
    page.evaluate("window.sameDocument = true")

    memory.drain(limit=5)
    page.wait_for(
        f"document.querySelector('.ct-progress-text').textContent === '9 / {total} nodes done'"
    )
    page.wait_for("document.querySelectorAll('#ct-timeline .ct-bar.state-SUCCESS').length === 9")
    assert page.evaluate("window.sameDocument") is True  # updated in place, not reloaded
    status = page.evaluate("document.querySelector('.field-status_badge .readonly').textContent")
    assert status == f"RUNNING 9/{total}"

    memory.drain()  # flaky retries once, then the join and the body
    page.wait_for("window.cloudtasksLive.finished")
    page.wait_for(
        "document.querySelectorAll('#ct-timeline .ct-bar.state-SUCCESS').length"
        f" === {total - 1}"  # the join finishes without a run of its own: a mark
    )
    assert progress_text(page) == f"{total} / {total} nodes done"
    assert page.evaluate("window.sameDocument") is True
    # the fields that change at the end follow: status, end, output, no revoke button
    field = "document.querySelector('.field-{} .readonly').textContent.trim()"
    assert page.evaluate(field.format("status_badge")) == "SUCCESS"
    assert page.evaluate(field.format("finished")) != "-"
    assert "so far" not in page.evaluate(field.format("duration"))
    assert page.evaluate(field.format("output_link")).endswith("tsum SUCCESS")
    assert page.evaluate("document.querySelector('form[action$=\"/revoke/\"]')") is None
    assert page.evaluate("document.querySelectorAll('#ct-timeline .ct-mark').length") == 1
    # flaky's first attempt, a retry, is drawn under its last run
    assert (
        page.evaluate("document.querySelectorAll('#ct-timeline .ct-try.outcome-RETRY').length") == 1
    )
    # the picture's nodes took their final colours too, the join's included
    assert (
        page.evaluate("document.querySelectorAll('#workflow-graph g.node.state-SUCCESS').length")
        == total
    )
    polls = page.evaluate("window.cloudtasksLive.polls")
    page.evaluate("new Promise(done => setTimeout(done, 800))")
    assert page.evaluate("window.cloudtasksLive.polls") == polls  # it stopped polling

    out = ARTIFACTS / "admin"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(out / "workflow-live.png")
    page.screenshot(out / "workflow-timeline.png", "#workflow-timeline")
    success_fill = dagsvg.STATE_COLOURS[State.SUCCESS][0]
    assert near(out / "workflow-timeline.png", success_fill) > 10 * 40  # ten green bars at least


def test_a_thousand_nodes_fit_one_screen_of_timeline(page, live_server, memory):
    result = chord([quiet_add.si(i, i) for i in range(1000)], quiet_sum.s()).apply_async()
    memory.drain(limit=600)

    open_workflow(page, live_server, result.workflow_id)
    assert page.evaluate("document.querySelectorAll('#ct-timeline .ct-row').length") == 1002
    # the timeline leaves out the join's four shards; the progress counts them
    assert progress_text(page) == "600 / 1006 nodes done"
    height = page.evaluate(
        "document.querySelector('#ct-timeline svg').getBoundingClientRect().height"
    )
    width = page.evaluate("document.documentElement.scrollWidth")
    assert height <= 760 and width <= 1400
    out = ARTIFACTS / "admin"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(out / "workflow-timeline-1000.png", "#workflow-timeline")
    assert (
        page.evaluate("document.querySelectorAll('#ct-timeline .ct-bar.state-SUCCESS').length")
        == 600
    )
    # the 400 members still queued wait until now: their bars reach the right end
    ends = page.evaluate(
        "[...document.querySelectorAll('#ct-timeline .ct-row.state-QUEUED .ct-wait')]"
        ".map(r => +r.getAttribute('x') + +r.getAttribute('width'))"
    )
    axis_end = page.evaluate("document.querySelector('#ct-timeline svg').getAttribute('width')")
    assert len(ends) == 400 and min(ends) >= float(axis_end) - 40
