"""Concurrency per key and bounded fan-out: limits held in the database, across servers.

The concurrency tests deliver from several threads, each with its own database
connection, and measure what ran at once from the tasks' own start/end log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, connections

from django_cloudtasks import chord, engine, group, task
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.dispatch import sweep
from django_cloudtasks.models import FlowKey, Node, Workflow
from django_cloudtasks.registry import registry
from django_cloudtasks.runner import deliver
from django_cloudtasks.transports.memory import MemoryTransport
from tests.testapp import flow_tasks
from tests.testapp.flow_tasks import counting_member, one_per_account, per_account
from tests.testapp.tasks import tsum

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_log():
    flow_tasks.clear()
    yield
    flow_tasks.clear()


def latest_workflow() -> Workflow:
    return Workflow.objects.order_by("-created_at").first()


def work_off(memory: MemoryTransport, workflow_id, workers: int) -> None:
    """Deliver what is sent from ``workers`` threads until the workflow finishes."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                dispatch = memory.take()
                if dispatch is None:
                    time.sleep(0.001)
                    continue
                deliver(dispatch.node_id, retries=dispatch.retries, early=True)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(30_000):
            status = Workflow.objects.filter(pk=workflow_id).values_list("status", flat=True)[0]
            if status != WorkflowStatus.PENDING or errors:
                break
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


def test_three_keys_of_fifty_tasks_never_run_more_than_two_at_once_per_key_in_turns(memory):
    calls = [per_account.s(account, i) for i in range(50) for account in ("a", "b", "c")]
    result = group(calls).apply_async()
    work_off(memory, latest_workflow().pk, workers=9)

    assert result.get(timeout=0) == [i for i in range(50) for _ in range(3)]
    most = flow_tasks.most_at_once()
    assert most == {"acct:a": 2, "acct:b": 2, "acct:c": 2}
    # The keys run side by side: until a key is done, it starts within every stretch
    # of twenty starts, whatever the others do. (SQLite serialises writers with a busy
    # wait, which lets one connection wait longer than the others: only PostgreSQL's
    # row locks queue them in turn.)
    order = [key for key, _item in flow_tasks.starts()]
    for key in most:
        positions = [i for i, k in enumerate(order) if k == key]
        gaps = [b - a for a, b in zip([-1, *positions], positions, strict=False)]
        if connection.vendor == "postgresql":
            assert max(gaps) <= 20, (key, gaps)
    for key in most:
        assert sorted(item for k, item in flow_tasks.starts() if k == key) == list(range(50))
    assert list(FlowKey.objects.values_list("running", "waiting")) == [(0, 0)] * 3


def test_a_key_serves_its_line_first_come_first_served(memory):
    for i in range(6):
        one_per_account.delay("f", i)
    memory.drain()

    assert flow_tasks.starts() == [("fn:f", i) for i in range(6)]


def test_a_key_function_of_the_arguments_limits_each_account_to_one_at_a_time(memory):
    result = group(one_per_account.s(account, i) for i in range(20) for account in "xy").delay()
    work_off(memory, latest_workflow().pk, workers=6)

    assert len(result.get(timeout=0)) == 40
    assert flow_tasks.most_at_once() == {"fn:x": 1, "fn:y": 1}


def test_a_group_of_a_thousand_bounded_to_twenty_never_has_more_in_flight(memory):
    result = group(counting_member.s(i) for i in range(1000)).set(max_concurrency=20).delay()
    assert Node.objects.filter(state=State.QUEUED).count() == 20
    assert Node.objects.filter(state=State.WAITING).count() == 980
    work_off(memory, latest_workflow().pk, workers=24)

    assert result.get(timeout=0) == list(range(1000))
    # Each member counted its group's members sent or running as it started.
    assert max(flow_tasks.IN_FLIGHT) == 20
    assert flow_tasks.most_at_once()["member"] <= 20


def test_a_bounded_group_joins_into_its_chord_body_as_an_unbounded_one_does(memory):
    bounded = chord(group(counting_member.s(i) for i in range(30)).set(max_concurrency=3), tsum.s())
    result = bounded.apply_async()
    memory.drain()

    assert result.get(timeout=0) == sum(range(30))
    assert max(flow_tasks.IN_FLIGHT) == 3


def test_two_runs_of_a_bounded_group_are_bounded_each_on_their_own(memory):
    expr = group(counting_member.s(i) for i in range(6)).set(max_concurrency=2)
    expr.delay()
    expr.delay()

    assert Node.objects.filter(state=State.QUEUED).count() == 4
    memory.drain()
    assert max(flow_tasks.IN_FLIGHT) == 2


def test_a_limit_set_on_a_signature_applies_across_workflows(memory):
    for i in range(5):
        tsum.s([i]).set(concurrency_key="reports", max_concurrency=2).delay()

    assert Node.objects.filter(state=State.QUEUED).count() == 2
    assert Node.objects.filter(state=State.WAITING).count() == 3
    memory.drain()
    assert Node.objects.filter(state=State.SUCCESS).count() == 5


def test_a_failure_gives_its_slot_to_the_next_in_line(memory):
    from tests.testapp.tasks import fail

    fail.s().set(concurrency_key="k", max_concurrency=1).delay()
    waiting = tsum.s([1]).set(concurrency_key="k", max_concurrency=1).delay()
    assert Node.objects.get(pk=waiting.id).state == State.WAITING

    memory.drain()
    assert waiting.get(timeout=0) == 1


def test_revoking_a_waiting_node_takes_it_out_of_its_line(memory):
    _first, second, third = (one_per_account.delay("z", i) for i in range(3))
    assert FlowKey.objects.get(key="fn:z").waiting == 2

    second.revoke()

    assert FlowKey.objects.get(key="fn:z").waiting == 1
    memory.drain()
    assert [item for _key, item in flow_tasks.starts()] == [0, 2]
    assert third.get(timeout=0) == 2
    assert Node.objects.get(pk=second.id).state == State.REVOKED


def test_revoking_a_running_node_frees_its_slot_when_its_run_ends(memory):
    first = one_per_account.delay("r", 0)
    second = one_per_account.delay("r", 1)
    memory.clear()
    running = engine.claim(first.id, None, None, first_now(), early=True)
    assert running is not None

    first.revoke()
    assert Node.objects.get(pk=second.id).state == State.WAITING

    engine.succeed(running, 0, running.attempts)
    assert Node.objects.get(pk=second.id).state == State.QUEUED
    assert [d.node_id for d in memory.pending] == [second.id]


def test_a_revoked_node_whose_server_died_frees_its_slot_once_its_lease_expired(memory):
    first = one_per_account.delay("d", 0)
    second = one_per_account.delay("d", 1)
    memory.clear()
    running = engine.claim(first.id, None, None, first_now(), early=True)
    first.revoke()
    assert engine.sweep_flow(grace=0).released == 0

    later = running.lease_until + (running.lease_until - running.started_at)
    assert engine.sweep_flow(now=later, grace=0).released == 1
    assert Node.objects.get(pk=second.id).state == State.QUEUED
    assert engine.sweep_flow(now=later, grace=0).released == 0
    memory.drain()
    assert second.get(timeout=0) == 1


def test_a_node_retried_by_hand_takes_a_slot_again_or_waits(memory):
    from tests.testapp.tasks import fail

    failed = fail.s().set(concurrency_key="h", max_concurrency=1).delay()
    memory.drain()
    blocker = tsum.s([1]).set(concurrency_key="h", max_concurrency=1).delay()

    engine.retry_node(failed.id)

    assert Node.objects.get(pk=failed.id).state == State.WAITING
    memory.drain()
    assert blocker.get(timeout=0) == 1
    assert Node.objects.get(pk=failed.id).state == State.FAILURE  # it ran, and failed again
    assert FlowKey.objects.get(key="h").running == 0


def test_a_task_level_limit_without_a_key_counts_per_task(memory):
    @task(name="flow_per_task", max_concurrency=1)
    def per_task(x):
        return x

    try:
        handles = [per_task.delay(i) for i in range(3)]
        assert FlowKey.objects.get(key="task:flow_per_task").waiting == 2
        memory.drain()
        assert [h.get(timeout=0) for h in handles] == [0, 1, 2]
    finally:
        registry.unregister("flow_per_task")


def test_the_sweeper_recounts_a_key_whose_counters_were_changed_by_hand(memory):
    for i in range(3):
        one_per_account.delay("s", i)
    FlowKey.objects.filter(key="fn:s").update(running=1)  # as if one holder's row was lost
    Node.objects.filter(flow_key="fn:s", state=State.QUEUED).update(state=State.SUCCESS)
    memory.clear()

    assert engine.sweep_flow().sent == 0  # the key's line moved moments ago
    later = first_now() + timedelta(minutes=10)
    assert engine.sweep_flow(now=later).sent == 1
    assert len(memory.pending) == 1


def first_now():
    from django.utils import timezone

    return timezone.now()


def test_a_holder_killed_mid_run_gives_its_slot_on_once_its_lease_expired(memory):
    from tests.testapp.flow_tasks import holder
    from tests.testapp.models import Execution

    first = holder.delay("k", "first", 60)
    second = holder.delay("k", "second")
    memory.clear()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CLOUDTASKS_TEST_SERVER": "1",
        "CLOUDTASKS_TEST_OVERRIDES": json.dumps({"DISPATCH_DEADLINE": 1}),
    }
    script = (
        "import sys, django; django.setup(); "
        "from django_cloudtasks.runner import deliver; deliver(sys.argv[1], early=True)"
    )
    server = subprocess.Popen([sys.executable, "-c", script, first.id], cwd=ROOT, env=env)
    try:
        for _ in range(2000):
            if Execution.objects.filter(task="holder").exists() or server.poll() is not None:
                break
            time.sleep(0.01)
        assert list(Execution.objects.values_list("value", flat=True)) == [["first", "start"]]
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    assert Node.objects.get(pk=second.id).state == State.WAITING

    # Once the dead run's lease (2 s) expired, the sweeper hands the node to a new
    # delivery; when that run ends, the slot goes to the next in line.
    for _ in range(1000):
        if sweep(grace=0).resent:
            break
        time.sleep(0.01)
    memory.drain()

    assert second.get(timeout=0) == "second"
    assert list(Execution.objects.order_by("id").values_list("value", flat=True)) == [
        ["first", "start"],
        ["first", "start"],
        ["first", "end"],
        ["second", "start"],
        ["second", "end"],
    ]
    assert FlowKey.objects.get(key="hold:k").running == 0


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"max_concurrency": 0}, ValueError, "at least 1"),
        ({"max_concurrency": "3"}, TypeError, "must be an int"),
        ({"concurrency_key": "acct:{x}"}, TypeError, "needs max_concurrency"),
        ({"concurrency_key": 7, "max_concurrency": 1}, TypeError, "template string"),
        ({"rate_limit": "ten a minute"}, ValueError, "does not parse"),
        ({"rate_limit": "0/s"}, ValueError, "positive"),
        ({"rate_limit": ["10/m"]}, TypeError, "'10/m'"),
    ],
)
def test_a_limit_that_cannot_work_is_refused_when_the_task_is_declared(arguments, error, words):
    with pytest.raises(error, match=words):

        @task(name="flow_refused", **arguments)
        def refused(x):
            return x

    assert "flow_refused" not in registry


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"max_concurrency": 0}, ValueError, "at least 1"),
        ({"max_concurrency": True}, TypeError, "must be an int"),
        ({"rate_limit": "5/d"}, ValueError, "does not parse"),
        ({"concurrency_key": ""}, TypeError, "non-empty string"),
    ],
)
def test_a_limit_that_cannot_work_is_refused_when_set_on_a_signature(options, error, words):
    with pytest.raises(error, match=words):
        tsum.s([1]).set(**options)


def test_a_key_function_that_raises_is_a_clear_error_at_apply_async(memory):
    @task(name="flow_raising_key", concurrency_key=lambda x: 1 / x, max_concurrency=1)
    def raising_key(x):
        return x

    try:
        with pytest.raises(ValueError, match=r"concurrency_key of flow_raising_key.*\(0\)"):
            raising_key.delay(0)
        assert Workflow.objects.count() == 0
    finally:
        registry.unregister("flow_raising_key")


def test_a_key_function_that_returns_no_string_is_a_clear_error_at_apply_async(memory):
    @task(name="flow_number_key", concurrency_key=lambda x: x, max_concurrency=1)
    def number_key(x):
        return x

    try:
        with pytest.raises(TypeError, match="must be a non-empty string, got 5"):
            number_key.delay(5)
    finally:
        registry.unregister("flow_number_key")


def test_a_key_naming_the_parents_result_is_a_clear_error_at_apply_async(memory):
    # The key is computed when the workflow is stored, before the parent has run.
    with pytest.raises(ValueError, match="KeyError\\('account'\\)"):
        (tsum.s([1]) | per_account.s(item=1)).delay()


def test_a_group_bound_over_a_task_with_its_own_key_is_refused(memory):
    with pytest.raises(ValueError, match="one concurrency limit"):
        group(per_account.s("a", i) for i in range(3)).set(max_concurrency=2).delay()


def test_chunks_bounded_to_two_send_two_parts_at_a_time(memory):
    from tests.testapp.tasks import add

    result = add.chunks([(i, i) for i in range(10)], 2).set(max_concurrency=2).delay()

    assert Node.objects.filter(state=State.QUEUED).count() == 2
    assert Node.objects.filter(state=State.WAITING).count() == 3
    memory.drain()
    assert result.get(timeout=0) == [[2 * i, 2 * i + 2] for i in range(0, 10, 2)]


# -- what operators see -----------------------------------------------------------------


def test_cloudtasks_status_shows_each_key_with_its_running_and_waiting_nodes(memory):
    from io import StringIO

    from django.core.management import call_command

    for i in range(3):
        per_account.delay("st", i)
    tsum.s([1]).set(rate_limit="6/m").delay()
    tsum.s([2]).set(rate_limit="6/m").delay()

    out = StringIO()
    call_command("cloudtasks_status", stdout=out)
    text = out.getvalue()
    assert re.search(r"^  WAITING +1$", text, re.MULTILINE)
    assert "Flow-control keys in use: 2" in text
    line = next(row for row in text.splitlines() if "acct:st" in row)
    assert line.split() == ["acct:st", "2", "1", "2", "-"]
    paced = next(row for row in text.splitlines() if "task:tsum" in row)
    assert "0.1/s, next start in" in paced

    data = json.loads(_status_json())
    keys = {k["key"]: k for k in data["keys"]}
    assert keys["acct:st"]["running"] == 2 and keys["acct:st"]["waiting"] == 1
    assert keys["task:tsum"]["next_start_in"] > 0


def _status_json() -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("cloudtasks_status", "--json", stdout=out)
    return out.getvalue()


def test_the_admin_lists_the_keys_and_links_to_their_waiting_nodes(admin_client, memory):
    from django.urls import reverse

    for i in range(3):
        per_account.delay("adm", i)

    page = admin_client.get(reverse("admin:django_cloudtasks_flowkey_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "acct:adm" in text
    nodes = reverse("admin:django_cloudtasks_node_changelist")
    waiting = admin_client.get(f"{nodes}?flow_key=acct:adm&state=WAITING")
    assert waiting.status_code == 200
    assert waiting.context["cl"].result_count == 1
    assert admin_client.get(reverse("admin:django_cloudtasks_flowkey_add")).status_code == 403


# -- a slot through retries, revocation and the other transports -------------------------


def test_a_retry_keeps_its_slot_through_its_backoff(memory):
    from tests.testapp.tasks import flaky

    first = flaky.s(1).set(concurrency_key="retry", max_concurrency=1).delay()
    second = tsum.s([3]).set(concurrency_key="retry", max_concurrency=1).delay()
    memory.drain(limit=1)  # the first attempt asks for a retry

    assert Node.objects.get(pk=first.id).state == State.RETRY
    assert Node.objects.get(pk=second.id).state == State.WAITING
    memory.drain()
    assert first.get(timeout=0) == 1
    assert second.get(timeout=0) == 3


def test_a_task_that_ignores_itself_gives_its_slot_back(memory):
    from tests.testapp.tasks import ignores

    ignores.s().set(concurrency_key="ign", max_concurrency=1).delay()
    second = tsum.s([4]).set(concurrency_key="ign", max_concurrency=1).delay()
    memory.drain()

    assert second.get(timeout=0) == 4
    assert FlowKey.objects.get(key="ign").running == 0


def test_revoking_a_bounded_group_empties_its_key(memory):
    result = group(counting_member.s(i) for i in range(10)).set(max_concurrency=3).delay()
    other = tsum.s([5]).set(concurrency_key="other", max_concurrency=1).delay()

    result.revoke()

    run_key = FlowKey.objects.exclude(key="other").get()
    assert (run_key.running, run_key.waiting) == (0, 0)
    assert Node.objects.filter(task_name="counting_member", state=State.REVOKED).count() == 10
    memory.drain()
    assert flow_tasks.IN_FLIGHT == []
    assert other.get(timeout=0) == 5


def test_a_bounded_group_runs_under_the_eager_transport(eager):
    result = group(counting_member.s(i) for i in range(12)).set(max_concurrency=4).delay()

    assert result.get(timeout=0) == list(range(12))
    assert max(flow_tasks.IN_FLIGHT) <= 4


def test_a_limited_successor_is_not_run_inline_past_its_line(memory, settings):
    from django_cloudtasks.transports import get_transport

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": 30}
    memory = get_transport()  # the settings changed: a new memory transport
    chained = (tsum.si([1]) | per_account.si(1, 0)).delay()
    holders = [per_account.delay(1, i) for i in (1, 2)]
    memory.drain(limit=1)  # tsum: its successor's key is full, so it waits

    assert Node.objects.get(pk=chained.id).state == State.WAITING
    memory.drain()
    assert chained.get(timeout=0) == 0
    assert [h.get(timeout=0) for h in holders] == [1, 2]


def test_a_limited_task_that_replaces_itself_gives_its_slot_back_while_it_waits(memory):
    from tests.testapp.tasks import replaced_by_add

    replaced = replaced_by_add.s(5).set(concurrency_key="rep", max_concurrency=1).delay()
    waiting = tsum.s([6]).set(concurrency_key="rep", max_concurrency=1).delay()
    memory.drain(limit=1)  # replaced_by_add runs and hands its place to add(5, 1)

    assert Node.objects.get(pk=waiting.id).state == State.QUEUED
    memory.drain()
    assert replaced.get(timeout=0) == 6
    assert waiting.get(timeout=0) == 6
    assert FlowKey.objects.get(key="rep").running == 0
