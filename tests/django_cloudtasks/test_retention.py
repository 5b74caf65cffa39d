"""Retention: the sweeper and ``cloudtasks_purge`` delete old finished workflows."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from django_cloudtasks import engine, group
from django_cloudtasks.checks import check_retention
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.engine import retention
from django_cloudtasks.models import Node, ScheduleRun, ScheduleRunState, Workflow
from django_cloudtasks.store import get_store
from tests.testapp.tasks import add, tsum

pytestmark = pytest.mark.django_db(transaction=True)

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
TOKEN = {"Authorization": "Bearer test-token"}


def make_workflow(status=WorkflowStatus.SUCCESS, days_ago=30.0, nodes=2, node_state=None):
    finished = None if days_ago is None else timezone.now() - timedelta(days=days_ago)
    workflow = Workflow.objects.create(status=status, finished_at=finished, size=nodes)
    Node.objects.bulk_create(
        Node(workflow=workflow, index=i, task_name="add", state=node_state or State.SUCCESS)
        for i in range(nodes)
    )
    return workflow


def remaining() -> set[str]:
    return {str(pk) for pk in Workflow.objects.values_list("pk", flat=True)}


def sweep() -> str:
    out = StringIO()
    call_command("cloudtasks_sweep", stdout=out)
    return out.getvalue()


def statements(func) -> int:
    with CaptureQueriesContext(connection) as captured:
        func()
    return len([q for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)])


# -- the sweeper -------------------------------------------------------------------------


def test_the_sweeper_deletes_a_finished_workflow_once_result_expires_days_passed(memory):
    with freeze_time("2026-03-01T12:00:00Z"):
        done = (group(add.si(i, i) for i in range(3)) | tsum.s()).apply_async()
        memory.drain()
        running = (add.s(1, 1) | add.s(2)).apply_async()
    assert done.get(timeout=0) == 6
    finished, unfinished = done.workflow_id, running.workflow_id

    with freeze_time("2026-03-08T11:59:00Z"):  # not quite 7 days (the default)
        assert "purged" not in sweep()
    assert remaining() == {finished, unfinished}

    with freeze_time("2026-03-08T12:01:00Z"):
        assert "purged 1 workflows (5 nodes)" in sweep()
    assert remaining() == {unfinished}
    assert not Node.objects.filter(workflow_id=finished).exists()
    assert done.state == "PENDING"  # an unknown id, as Celery answers after results expired

    with freeze_time("2027-03-01T12:00:00Z"):  # unfinished: kept, however old
        sweep()
    assert remaining() == {unfinished}


def test_result_expires_takes_a_timedelta_or_fractions_of_days_and_none_turns_it_off(
    memory, settings
):
    with freeze_time("2026-03-01T12:00:00Z"):
        first = add.s(1, 1).apply_async().workflow_id
        memory.drain()

    with freeze_time("2026-03-01T15:00:00Z"):
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": None}
        assert engine.purge_expired().workflows == 0
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": 0.25}  # 6 hours
        assert engine.purge_expired().workflows == 0
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": timedelta(hours=2)}
        assert engine.purge_expired().workflows == 1
    assert first not in remaining()


def test_turned_off_retention_asks_the_database_nothing(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": None}
    assert statements(engine.purge_expired) == 0


def test_a_bad_result_expires_is_logged_and_the_rest_of_the_sweep_still_runs(
    memory, settings, caplog
):
    stuck = add.s(1, 1).apply_async()
    Node.objects.filter(pk=stuck.id).update(ready_at=timezone.now() - timedelta(hours=1))
    make_workflow(days_ago=30)
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": "7"}

    assert sweep().startswith("resent 1,")

    assert len(remaining()) == 2
    assert "retention is off: CLOUDTASKS['RESULT_EXPIRES'] must be" in caplog.text


def test_one_sweep_deletes_a_bounded_number_of_batches_and_the_next_one_goes_on(
    memory, monkeypatch
):
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    monkeypatch.setattr(retention, "SWEEP_BATCHES", 2)
    old = [make_workflow(days_ago=10 + i) for i in range(5)]

    report = engine.purge_expired(max_batches=retention.SWEEP_BATCHES)

    assert (report.workflows, report.batches, report.complete) == (4, 2, False)
    assert remaining() == {str(old[0].pk)}  # the oldest went first
    assert "purged 1 workflows (2 nodes)" in sweep()
    assert remaining() == set()


def test_the_sweep_endpoint_answers_what_it_purged(client, memory):
    make_workflow(days_ago=8, nodes=3)

    response = client.post("/cloudtasks/sweep/", headers=TOKEN)

    assert response.status_code == 200
    assert (response.json()["purged_workflows"], response.json()["purged_nodes"]) == (1, 3)


# -- what is kept ------------------------------------------------------------------------


def test_a_finished_workflow_with_a_node_still_running_is_kept_until_it_ends():
    failed = make_workflow(WorkflowStatus.FAILURE)
    Node.objects.filter(workflow=failed, index=1).update(state=State.STARTED)  # a sibling
    holder = make_workflow(WorkflowStatus.REVOKED)
    Node.objects.filter(workflow=holder, index=0).update(
        state=State.REVOKED, lease_until=timezone.now()
    )  # its run has not given its concurrency slot back
    never_ran = make_workflow(WorkflowStatus.FAILURE, node_state=State.PENDING)

    engine.purge(timezone.now() - timedelta(days=7))

    assert remaining() == {str(failed.pk), str(holder.pk)}
    Node.objects.filter(workflow=failed).update(state=State.SUCCESS)
    Node.objects.filter(workflow=holder).update(lease_until=None)
    engine.purge(timezone.now() - timedelta(days=7))
    assert remaining() == set()
    assert str(never_ran.pk) not in remaining()


def test_a_workflow_holding_its_unique_key_is_kept_until_unique_for_ends():
    held = make_workflow()
    Workflow.objects.filter(pk=held.pk).update(
        unique_key="report", unique_until=timezone.now() + timedelta(days=1)
    )

    engine.purge(timezone.now() - timedelta(days=7))
    assert remaining() == {str(held.pk)}

    with freeze_time(timezone.now() + timedelta(days=2)):
        engine.purge(timezone.now() - timedelta(days=7))
    assert remaining() == set()


def test_a_schedule_run_goes_with_its_workflow_once_the_tick_no_longer_looks_at_its_slot():
    now = timezone.now()
    recent, old = make_workflow(days_ago=6), make_workflow(days_ago=9)
    for workflow, days in ((recent, 6), (old, 9)):
        ScheduleRun.objects.create(
            schedule="nightly",
            slot=now - timedelta(days=days, minutes=5),
            state=ScheduleRunState.STARTED,
            workflow=workflow,
        )
    ScheduleRun.objects.create(schedule="nightly", slot=now, state=ScheduleRunState.SKIPPED)

    report = engine.purge(now - timedelta(days=1))

    assert (report.workflows, report.schedule_runs) == (1, 1)
    assert remaining() == {str(recent.pk)}  # its slot is within the tick's 7-day look-back
    assert sorted(ScheduleRun.objects.values_list("state", flat=True)) == ["SKIPPED", "STARTED"]


def test_a_workflow_reopened_after_it_was_picked_is_not_deleted():
    reopened = make_workflow()
    Workflow.objects.filter(pk=reopened.pk).update(status=WorkflowStatus.PENDING)

    deleted = get_store().delete_finished([reopened.pk])

    assert (deleted.workflows, deleted.nodes) == (0, 0)
    assert Node.objects.filter(workflow=reopened).count() == 2


# -- concurrency (PostgreSQL) ------------------------------------------------------------


@pytest.mark.postgres
def test_two_purges_at_once_delete_every_expired_workflow_once():
    for i in range(40):
        make_workflow(days_ago=10 + i)
    cutoff = timezone.now() - timedelta(days=7)
    barrier = threading.Barrier(2)
    reports: list[retention.Purged] = []

    def purger() -> None:
        try:
            barrier.wait()
            reports.append(engine.purge(cutoff, batch_size=3))
        finally:
            connection.close()

    threads = [threading.Thread(target=purger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r.workflows for r in reports) == 40
    assert sum(r.nodes for r in reports) == 80
    assert remaining() == set() and Node.objects.count() == 0


@pytest.mark.postgres
def test_a_purge_passes_over_a_workflow_being_reopened_and_leaves_it_whole():
    reopened = make_workflow(days_ago=20)
    make_workflow(days_ago=10)  # deleted meanwhile
    locked, purged = threading.Event(), threading.Event()

    def admin_retries() -> None:  # as retry_node does: lock the workflow, re-open it
        try:
            with transaction.atomic():
                Workflow.objects.select_for_update().get(pk=reopened.pk)
                locked.set()
                assert purged.wait(timeout=30)
                Workflow.objects.filter(pk=reopened.pk).update(
                    status=WorkflowStatus.PENDING, finished_at=None
                )
        finally:
            connection.close()

    thread = threading.Thread(target=admin_retries)
    thread.start()
    assert locked.wait(timeout=30)
    report = engine.purge(timezone.now() - timedelta(days=7))
    purged.set()
    thread.join()

    assert report.workflows == 1
    assert remaining() == {str(reopened.pk)}
    assert Node.objects.filter(workflow=reopened).count() == 2
    assert engine.purge(timezone.now() - timedelta(days=7)).workflows == 0


# -- batches -----------------------------------------------------------------------------


@pytest.mark.parametrize(("workflows", "nodes"), [(2, 2), (50, 40)])
def test_a_batch_costs_four_statements_whatever_it_deletes(workflows, nodes):
    for i in range(workflows):
        make_workflow(days_ago=10 + i, nodes=nodes)
    cutoff = timezone.now() - timedelta(days=7)

    assert statements(lambda: retention.purge_batch(cutoff, size=500)) == 4
    assert remaining() == set()
    assert statements(lambda: retention.purge_batch(cutoff, size=500)) == 1  # nothing left


def test_a_batch_stops_adding_workflows_at_its_node_budget(monkeypatch):
    monkeypatch.setattr(retention, "BATCH_NODES", 5)
    small = [make_workflow(days_ago=20 + i, nodes=2) for i in range(3)]
    large = make_workflow(days_ago=30, nodes=8)
    cutoff = timezone.now() - timedelta(days=7)

    first = retention.purge_batch(cutoff)
    second = retention.purge_batch(cutoff)

    assert (first.workflows, first.nodes) == (1, 8)  # alone, though over the budget
    assert (second.workflows, second.nodes) == (2, 4)
    assert remaining() == {str(small[0].pk)} and str(large.pk) not in remaining()


# -- cloudtasks_purge --------------------------------------------------------------------


def test_purge_without_older_than_uses_result_expires(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": timedelta(days=3)}
    kept, gone = make_workflow(days_ago=2), make_workflow(days_ago=4)

    out = StringIO()
    call_command("cloudtasks_purge", stdout=out, stderr=StringIO())

    assert out.getvalue().startswith("deleted 1 workflows (2 nodes) finished before ")
    assert remaining() == {str(kept.pk)} and str(gone.pk) not in remaining()


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_purge_by_hand_on_a_terminal_draws_a_progress_bar():
    for days in range(31, 36):
        make_workflow(days_ago=days, nodes=3)
    out, err = StringIO(), Terminal()

    call_command(
        "cloudtasks_purge", "--older-than", "30", "--batch-size", "2", stdout=out, stderr=err
    )

    frames = err.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[" + "#" * 12 + "-" * 18 + "]  40%  2 of 5 workflows deleted")
    assert frames[-1] == "[" + "#" * 30 + "] 100%  5 of 5 workflows deleted (15 nodes)\n"
    assert out.getvalue().startswith("deleted 5 workflows (15 nodes)")


# -- the system check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (7, []),
        (0.5, []),
        (timedelta(hours=1), []),
        (None, []),
        (0, ["django_cloudtasks.E030"]),
        (timedelta(0), ["django_cloudtasks.E030"]),
        ("7", ["django_cloudtasks.E030"]),
        (True, ["django_cloudtasks.E030"]),
        (86400, ["django_cloudtasks.W030"]),  # seconds, as Celery's result_expires counts
    ],
)
def test_the_check_reports_a_result_expires_the_sweeper_cannot_use(settings, value, ids):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": value}
    assert [m.id for m in check_retention()] == ids
