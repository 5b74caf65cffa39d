"""A workflow's progress: nodes done out of all, counted by state, in one query."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_cloudtasks import chord, engine, group
from django_cloudtasks.constants import State
from django_cloudtasks.results import AsyncResult, WorkflowResult
from django_cloudtasks.runner import deliver
from tests.testapp.tasks import add, fail, quiet_add, quiet_sum, tsum

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_chord_half_way_reports_what_is_done_and_what_waits(memory):
    result = chord([add.si(i, i) for i in range(4)], tsum.s()).apply_async()
    memory.drain(limit=2)
    progress = WorkflowResult(result.workflow_id).progress()
    # four members, the group join and the body
    assert (progress.done, progress.total) == (2, 6)
    assert progress.counts == {"SUCCESS": 2, "QUEUED": 2, "PENDING": 2}
    assert progress.fraction == pytest.approx(2 / 6)
    assert progress.running == 0

    memory.drain()
    progress = WorkflowResult(result.workflow_id).progress()
    assert (progress.done, progress.total, progress.fraction) == (6, 6, 1.0)
    assert progress.counts == {"SUCCESS": 6}


def test_a_failed_workflow_counts_its_failed_nodes_as_done(memory):
    result = (group(add.si(1, 1), fail.si()) | tsum.s()).apply_async()
    memory.drain()
    progress = WorkflowResult(result.workflow_id).progress()
    assert progress.done == progress.total == 4
    assert progress.counts == {"SUCCESS": 1, "FAILURE": 3}  # the join and the body fail too


def test_as_json_lists_every_state(memory):
    result = (add.s(1, 1) | add.s(1)).apply_async()
    data = WorkflowResult(result.workflow_id).progress().as_json()
    assert data["done"] == 0 and data["total"] == 2 and data["fraction"] == 0.0
    assert set(data["counts"]) == set(State.values)
    assert data["counts"]["QUEUED"] == 1 and data["counts"]["PENDING"] == 1


def test_an_unknown_workflow_has_no_nodes():
    progress = WorkflowResult("00000000-0000-0000-0000-000000000000").progress()
    assert (progress.done, progress.total, progress.fraction) == (0, 0, 1.0)


# A join of more than 250 members counts them on shard nodes of 250, which count too.
@pytest.mark.parametrize(("size", "total"), [(10, 11), (10_000, 10_041)])
def test_progress_costs_one_query_whatever_the_size(memory, size, total, django_assert_num_queries):
    result = (group(quiet_add.si(i, i) for i in range(size - 1)) | quiet_sum.s()).apply_async()
    memory.drain(limit=3)
    workflow = WorkflowResult(result.workflow_id)
    with django_assert_num_queries(1) as captured:
        progress = workflow.progress()
    assert (progress.done, progress.total) == (3, total)
    assert "GROUP BY" in captured.captured_queries[0]["sql"]


@pytest.mark.postgres
def test_the_count_is_answered_by_the_workflow_state_index_alone(memory):
    result = group(quiet_add.si(i, i) for i in range(200)).apply_async()
    workflow = WorkflowResult(result.workflow_id)
    with CaptureQueriesContext(connection) as captured:
        workflow.progress()
    [query] = captured.captured_queries
    with connection.cursor() as cursor:
        # Where the planner may only use an index, this one answers without the rows.
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
        try:
            cursor.execute(f"EXPLAIN {query['sql']}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")
    assert "Index Only Scan using ct_node_workflow_state" in plan, plan


@pytest.mark.postgres
def test_progress_stays_exact_while_workers_complete_a_group_concurrently(memory):
    size = 120
    result = chord([quiet_add.si(i, i) for i in range(size)], quiet_sum.s()).apply_async()
    workflow = WorkflowResult(result.workflow_id)
    total = size + 2
    finished = threading.Event()
    seen: list[tuple[int, int]] = []

    def watch() -> None:
        try:
            while not finished.is_set():
                progress = workflow.progress()
                seen.append((progress.done, progress.total))
        finally:
            connections.close_all()

    def work() -> None:
        try:
            while (dispatch := memory.take()) is not None:
                assert deliver(dispatch.node_id, retries=dispatch.retries).status == 200
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=9) as pool:
        watcher = pool.submit(watch)
        workers = [pool.submit(work) for _ in range(8)]
        for job in workers:
            job.result()
        while memory.pending:  # the body, sent by the member that closed the group
            work()
        finished.set()
        watcher.result()

    assert result.get(timeout=0) == sum(2 * i for i in range(size))
    final = workflow.progress()
    assert (final.done, final.total) == (total, total)
    assert final.counts == {"SUCCESS": total}
    assert seen, "the watcher read the progress at least once"
    dones = [done for done, _ in seen]
    assert all(t == total for _, t in seen)
    assert dones == sorted(dones), "done never goes back"
    assert all(0 <= d <= total for d in dones)


def test_async_result_info_is_the_meta_a_running_task_reported(memory):
    result = add.s(1, 1).apply_async()
    memory.take()
    node = engine.claim(result.id, None, None, timezone.now(), early=True)
    assert node is not None
    engine.record_progress(node.pk, "PROGRESS", {"current": 3, "total": 10})
    assert AsyncResult(result.id).state == "PROGRESS"
    assert AsyncResult(result.id).info == {"current": 3, "total": 10}
