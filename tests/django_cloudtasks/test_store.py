"""The store: one class per database, and the check that refuses the others."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from django.core import checks
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from django_cloudtasks import chord, group
from django_cloudtasks.limits import FlowKey
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.store import check_database, get_store


def test_the_store_speaks_the_dialect_of_the_database():
    assert get_store().vendor == connection.vendor


def test_the_test_database_passes_the_database_check():
    assert check_database() == []


@pytest.mark.parametrize("vendor", ["mysql", "oracle", "microsoft"])
def test_any_other_database_is_refused_with_e010(monkeypatch, vendor):
    monkeypatch.setattr(connections["default"], "vendor", vendor)
    messages = check_database()
    assert [m.id for m in messages] == ["django_cloudtasks.E010"]
    assert messages[0].level == checks.ERROR
    assert vendor in messages[0].msg and "PostgreSQL or SQLite" in messages[0].msg


def test_the_database_check_is_registered_with_django():
    assert check_database in checks.registry.registry.get_checks()


# -- inserting new rows: streamed (COPY, executemany) or in JSON batches ---------------


def _canvases():
    from tests.testapp.flow_tasks import bill, paced, per_account
    from tests.testapp.tasks import add, identity, on_error, show_queue, tsum

    nested = [add.si(0, 0) | group(add.si(i, j) for i in range(3)) for j in range(2)]
    eta = "2031-01-01T00:00:00+00:00"
    return [
        (add.s(1, 2) | add.s(3).set(countdown=5) | add.s(4).set(eta=eta), {}),
        (group(add.si(i, i) for i in range(7)) | tsum.s(), {"countdown": 30, "queue": "q"}),
        (group(nested) | identity.s(), {"name": "nested"}),
        (
            chord([add.s(1, 1).on_error(on_error.s()), show_queue.s(1).set(queue="q2")], tsum.s()),
            {},
        ),
        (
            group(per_account.si("a", i) for i in range(3)) | group(paced.si(i) for i in range(3)),
            {},
        ),
        (bill.si("x", 5), {"eta": eta}),
        (group([]) | tsum.s(), {}),
    ]


def _persist_all(monkeypatch) -> dict[str, list[tuple]]:
    """Persist every canvas of :func:`_canvases` with the same ids and clock; every row."""
    counter = itertools.count(1)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter)))
    # The workflow's id comes from its field's default (read once, then cached).
    monkeypatch.setattr(
        Workflow._meta.pk, "_get_default", lambda: uuid.UUID(int=10**9 + next(counter))
    )
    with freeze_time("2026-12-02 12:00:00.123456"):
        for expression, options in _canvases():
            expression.apply_async(**options)
    # A trace started by the test process's tracer provider (when another test set one)
    # has a random id; the workflow row is saved the same way by both insert paths.
    Workflow.objects.update(traceparent="")
    rows = {}
    with connection.cursor() as cursor:
        for model in (Workflow, Node, FlowKey):
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")
            rows[model.__name__] = sorted(cursor.fetchall(), key=repr)
    # Clean up for the next run (a test may delete what it made).
    FlowKey.objects.all().delete()
    Workflow.objects.all().delete()
    return rows


@pytest.mark.django_db(transaction=True)
def test_streamed_rows_and_rows_sent_in_json_batches_are_the_same(memory, monkeypatch):
    streamed = _persist_all(monkeypatch)
    store = get_store()
    monkeypatch.setattr(store, "insert", store.insert_batches)
    monkeypatch.setattr(store, "batch_size", 2)  # several batches for the larger canvases
    batched = _persist_all(monkeypatch)
    assert len(streamed["Node"]) == 39
    assert streamed == batched


@pytest.mark.django_db(transaction=True)
def test_a_stream_is_one_statement_and_json_batches_one_per_batch(memory, monkeypatch):
    from tests.testapp.tasks import quiet_add as add

    def inserts() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            group(add.si(i, i) for i in range(11)).apply_async()
        return [q["sql"].split("(")[0].strip() for q in captured if "_node" in q["sql"]]

    table = connection.ops.quote_name(Node._meta.db_table)
    stream = "COPY" if connection.vendor == "postgresql" else "? times: INSERT INTO"
    assert inserts() == [f"{stream} {table}"]
    store = get_store()
    monkeypatch.setattr(store, "insert", store.insert_batches)
    monkeypatch.setattr(store, "batch_size", 5)
    assert inserts() == [f"INSERT INTO {table}"] * 3  # 12 nodes: the members and the join


@pytest.mark.parametrize(
    "value",
    [[1, 2.5, None, True], {"a": {"b": [1e100]}}, "é\u2028\x00", 7, {}, [], {1: "x"}, ["ü"]],
)
def test_json_columns_are_encoded_as_json_dumps_encodes_them(value):
    from django_cloudtasks.store.insert import _dumps

    assert _dumps(value) == json.dumps(value)


def test_json_columns_refuse_what_json_dumps_refuses():
    from django_cloudtasks.store.insert import _dumps

    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular"):
        _dumps(looped)
    with pytest.raises(TypeError):
        _dumps({"a": object()})
    assert _dumps([1]) == "[1]"  # and it still works afterwards


# -- claiming: a bounded number of rows read, whatever the workflow's size -------------


def _rows_read(plan: dict) -> int:
    """The rows a plan node and those under it produced or read and threw away."""
    loops = plan.get("Actual Loops", 1)
    own = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    own += plan.get("Rows Removed by Index Recheck", 0)
    return own * loops + sum(_rows_read(p) for p in plan.get("Plans", []))


def _forget_statistics(cursor) -> None:
    """Make the node table look new to the planner: no statistics, size unknown."""
    cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'django_cloudtasks_node'::regclass")
    cursor.execute(
        "UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid IN "
        "(SELECT 'django_cloudtasks_node'::regclass UNION SELECT indexrelid FROM pg_index "
        "WHERE indrelid = 'django_cloudtasks_node'::regclass)"
    )


def _plan_of_a_claim(statistics: str, claim) -> tuple[Node, dict]:
    """Run ``claim()`` (a store call that claims one node) with the node table's
    statistics as given, then the same statement again, explained: what it read."""
    with connection.cursor() as cursor:
        if statistics == "analyzed":
            cursor.execute("ANALYZE django_cloudtasks_node")
        else:
            _forget_statistics(cursor)
        with CaptureQueriesContext(connection) as captured:
            claimed = claim()
        [statement] = captured.captured_queries
        # The first run took the node: put it back so that the second takes it again.
        Node.objects.filter(pk=claimed.pk).update(state="QUEUED")
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement['sql']}")
        [[[explained]]] = cursor.fetchall()
    return claimed, explained


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("statistics", ["analyzed", "none yet"])
def test_claiming_a_group_member_reads_a_few_rows_whatever_the_size_of_its_group(
    memory, statistics
):
    from tests.testapp.tasks import quiet_add

    result = group(quiet_add.si(i, i) for i in range(2_000)).apply_async()
    member = Node.objects.filter(workflow_id=result.workflow_id, index=7).get()
    _, explained = _plan_of_a_claim(
        statistics,
        lambda: get_store().claim(member.pk, None, None, member.created_at, member.created_at),
    )
    # The member and the join it counts on, by their keys: not the group's 2,000 nodes.
    assert _rows_read(explained["Plan"]) <= 10, json.dumps(explained, indent=1)


def _group_with_its_top_taken(size: int):
    """A group of ``size`` members whose last 50 are taken already: a steal must look
    under them. Returns the workflow's id."""
    from tests.testapp.tasks import quiet_add

    workflow_id = group(quiet_add.si(i, i) for i in range(size)).apply_async().workflow_id
    taken = Node.objects.filter(workflow_id=workflow_id, kind="task", index__gte=size - 50)
    taken.update(state="STARTED")
    return workflow_id


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("statistics", ["analyzed", "none yet"])
def test_stealing_a_queued_member_reads_at_most_its_window(memory, statistics):
    from django.utils import timezone

    from django_cloudtasks.store import STEAL_WINDOW

    size = 3 * STEAL_WINDOW
    workflow_id = _group_with_its_top_taken(size)
    origin = Node.objects.get(workflow_id=workflow_id, index=0)
    now = timezone.now()
    stolen, explained = _plan_of_a_claim(
        statistics, lambda: get_store().steal(workflow_id, "", size, now, now, origin.pk)
    )
    assert stolen.index == size - 51
    assert stolen.state == "STARTED" and stolen.inline_origin == origin.pk
    # Not the group's 768 queued members: the rows under its start, and the one taken.
    assert _rows_read(explained["Plan"]) <= STEAL_WINDOW + 10, json.dumps(explained, indent=1)


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("statistics", ["analyzed", "none yet"])
def test_a_record_that_steals_reads_at_most_the_window_under_its_join(memory, statistics):
    from django.db.models import F

    from django_cloudtasks import engine
    from django_cloudtasks.store import STEAL_WINDOW

    size = 3 * STEAL_WINDOW
    workflow_id = _group_with_its_top_taken(size)
    first = Node.objects.get(workflow_id=workflow_id, index=0)
    with connection.cursor() as cursor:
        if statistics == "analyzed":
            cursor.execute("ANALYZE django_cloudtasks_node")
        else:
            _forget_statistics(cursor)
        member = get_store().claim(first.pk, None, None, first.created_at, first.created_at)
        with CaptureQueriesContext(connection) as captured:
            succeeded = engine.succeed(member, 0, member.attempts, member.pk, steals=True)
        [statement] = [q["sql"] for q in captured if "stolen AS" in q["sql"]]
        stolen = succeeded.stolen
        assert stolen is not None and stolen.index == size - 51
        assert stolen.state == "STARTED" and stolen.inline_origin == member.pk
        # Undo the statement (the member, its count on the join, the steal), then explain it.
        Node.objects.filter(pk=member.pk).update(state="STARTED")
        Node.objects.filter(pk=stolen.pk).update(state="QUEUED")
        Node.objects.filter(workflow_id=workflow_id, index=member.children[0]).update(
            pending_parents=F("pending_parents") + 1
        )
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}")
        [[[explained]]] = cursor.fetchall()
    # The steal reads the window under the join, not the group's queued members.
    [steal] = [p for p in explained["Plan"]["Plans"] if p.get("Subplan Name") == "CTE stolen"]
    assert _rows_read(steal) <= STEAL_WINDOW + 10, json.dumps(steal, indent=1)
