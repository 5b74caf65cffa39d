"""The management commands: status, purge, sweep, queues and the emulator."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from django_cloudtasks import chord, group
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.emulator import CloudTasksEmulator
from django_cloudtasks.emulator.client import emulator_client
from django_cloudtasks.exceptions import EnqueueError
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.transports import reset_transport
from tests.testapp.tasks import add, fail, identity, on_error, tsum

ROOT = Path(__file__).resolve().parents[2]
PARENT = "projects/test-project/locations/us-central1"


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# -- cloudtasks_status -------------------------------------------------------------------


@pytest.fixture
def failed_chain(memory):
    """A chain with a chord whose last-but-one task fails and has an error callback."""
    expr = (
        add.s(1, 2)
        | chord([add.s(i) for i in range(3)], tsum.s())
        | fail.s().on_error(on_error.s())
        | identity.s()
    )
    result = expr.delay()
    memory.drain()
    return result.workflow_id


@pytest.mark.django_db(transaction=True)
def test_status_shows_a_finished_workflow_as_a_tree_with_states_and_the_failure(failed_chain):
    lines = run_command("cloudtasks_status", failed_chain).splitlines()

    assert lines[0].startswith(f"Workflow {failed_chain}")
    assert lines[1].startswith("Status FAILURE, 9 nodes (2 FAILURE, 7 SUCCESS)")
    assert "took" in lines[2]
    tree = [re.sub(r"  [A-Z]+(  .*)?$", "", line) for line in lines[3:]]
    assert tree == [
        "|-- 0 add(1, 2)",
        "|-- 1 chord",
        "|   |-- header group of 3",
        "|   |   |-- 0 add(0)",
        "|   |   |-- 1 add(1)",
        "|   |   `-- 2 add(2)",
        "|   `-- body tsum()",
        "|-- 2 fail()",
        "|   `-- on error: on_error()",
        "`-- 3 identity()",
    ]
    by_task = {label.split("-- ")[-1]: line for label, line in zip(tree, lines[3:], strict=True)}
    assert "  SUCCESS  " in by_task["0 add(1, 2)"]
    assert by_task["header group of 3"].endswith("SUCCESS")
    assert "FAILURE" in by_task["2 fail()"]
    assert "error: ValueError: failing on purpose with [12]" in by_task["2 fail()"]
    assert "SUCCESS" in by_task["on error: on_error()"]
    assert "not run, upstream failed: ValueError" in by_task["3 identity()"]


@pytest.mark.django_db(transaction=True)
def test_status_shows_waiting_nodes_of_a_running_workflow(memory):
    result = group(add.si(1, 1), add.si(2, 2) | identity.s()).delay()

    out = run_command("cloudtasks_status", result.id)  # a node id finds its workflow

    assert "Status PENDING, 4 nodes (2 PENDING, 2 QUEUED)" in out
    assert "group of 2  PENDING  waiting on 2 of 2 parents" in out
    assert "0 add(1, 1)  QUEUED  ready for" in out
    assert "`-- 1 chain" in out
    assert "1 identity()  PENDING  waiting on 1 of 1 parents" in out


@pytest.mark.django_db(transaction=True)
def test_status_shows_a_few_members_of_a_large_group_and_counts_the_rest(memory):
    result = (group(add.si(i, i) for i in range(30)) | tsum.s()).delay()
    memory.drain(limit=12)

    lines = run_command("cloudtasks_status", result.workflow_id, "--members", "5").splitlines()

    members = [line for line in lines if line.startswith("|   |-- ")]
    assert len(members) == 5
    assert "|   `-- ... 25 more (18 QUEUED, 7 SUCCESS)" in lines
    assert lines[-1].startswith("`-- body tsum()  PENDING  waiting on 1 of 1 parents")
    everything = run_command("cloudtasks_status", result.workflow_id, "--members", "0")
    assert everything.count("add(") == 30


@pytest.mark.django_db(transaction=True)
def test_status_json_gives_the_tree_with_node_details(failed_chain):
    data = json.loads(run_command("cloudtasks_status", failed_chain, "--json"))

    assert data["id"] == failed_chain
    assert data["status"] == WorkflowStatus.FAILURE
    assert data["counts"] == {"SUCCESS": 7, "FAILURE": 2}
    root = data["tree"]
    assert root["kind"] == "chain"
    assert [c["kind"] for c in root["children"]] == ["task", "chord", "task", "task"]
    join = root["children"][1]["children"][0]
    assert join["kind"] == "group" and join["path"] == "1.header"
    assert [m["args"] for m in join["children"]] == [[0], [1], [2]]
    failed = root["children"][2]
    assert failed["task_name"] == "fail" and failed["state"] == State.FAILURE
    assert failed["error"]["type"] == "ValueError"
    assert "failing on purpose" in failed["error"]["message"]
    assert failed["duration"] is not None and failed["duration"] >= 0
    assert [e["task_name"] for e in failed["errbacks"]] == ["on_error"]
    assert failed["errbacks"][0]["state"] == State.SUCCESS


@pytest.mark.django_db(transaction=True)
def test_status_without_an_id_counts_workflows_and_nodes(failed_chain, memory):
    add.delay(1, 1)  # one more, not run

    out = run_command("cloudtasks_status")

    assert "Workflows: 2" in out
    assert "  PENDING           1" in out
    assert "  FAILURE           1" in out
    assert "Nodes: 10" in out
    assert "  SUCCESS           7" in out
    assert "  QUEUED            1" in out
    data = json.loads(run_command("cloudtasks_status", "--json"))
    assert data["workflows"] == {"PENDING": 1, "SUCCESS": 0, "FAILURE": 1, "REVOKED": 0}
    assert data["nodes"]["FAILURE"] == 2
    assert data["stuck"] == 0 and data["parked"] == 0


@pytest.mark.django_db
def test_status_of_an_unknown_or_malformed_id_is_an_error():
    unknown = str(uuid.uuid4())
    with pytest.raises(CommandError, match=f"no workflow or node has the id {unknown}"):
        call_command("cloudtasks_status", unknown)
    with pytest.raises(CommandError, match="is not a workflow id"):
        call_command("cloudtasks_status", "nope")


# -- cloudtasks_purge --------------------------------------------------------------------


def make_workflow(status: str, finished_days_ago: float | None, nodes: int = 2) -> Workflow:
    now = timezone.now()
    finished = None if finished_days_ago is None else now - timedelta(days=finished_days_ago)
    workflow = Workflow.objects.create(
        status=status, created_at=now - timedelta(days=400), finished_at=finished, size=nodes
    )
    Node.objects.bulk_create(
        Node(workflow=workflow, index=i, task_name="add") for i in range(nodes)
    )
    return workflow


@pytest.mark.django_db(transaction=True)
def test_purge_deletes_only_finished_workflows_older_than_the_limit(failed_chain):
    Workflow.objects.filter(pk=failed_chain).update(finished_at=timezone.now() - timedelta(days=9))
    old = [
        make_workflow(WorkflowStatus.SUCCESS, 40),
        make_workflow(WorkflowStatus.FAILURE, 31),
        make_workflow(WorkflowStatus.REVOKED, 100),
    ]
    kept = [
        make_workflow(WorkflowStatus.SUCCESS, 5),
        make_workflow(WorkflowStatus.PENDING, None),  # created long ago, still running
    ]

    out = run_command("cloudtasks_purge", "--older-than", "30")

    assert out.startswith("deleted 3 workflows (6 nodes) finished before ")
    assert set(Workflow.objects.values_list("pk", flat=True)) == {w.pk for w in kept} | {
        uuid.UUID(failed_chain)
    }
    assert not Node.objects.filter(workflow__in=old).exists()

    out = run_command("cloudtasks_purge", "--older-than", "7")  # with an error callback row

    assert out.startswith("deleted 1 workflows (9 nodes)")
    assert set(Workflow.objects.values_list("pk", flat=True)) == {w.pk for w in kept}
    assert Node.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_purge_in_batches_deletes_every_old_workflow():
    for days in (31, 32, 33, 34, 35):
        make_workflow(WorkflowStatus.SUCCESS, days, nodes=3)
    make_workflow(WorkflowStatus.PENDING, None)

    out = run_command("cloudtasks_purge", "--older-than", "30", "--batch-size", "2")

    assert out.startswith("deleted 5 workflows (15 nodes)")
    assert list(Workflow.objects.values_list("status", flat=True)) == [WorkflowStatus.PENDING]


@pytest.mark.django_db(transaction=True)
def test_purge_dry_run_counts_and_deletes_nothing():
    for days in (31, 60):
        make_workflow(WorkflowStatus.FAILURE, days)
    make_workflow(WorkflowStatus.SUCCESS, 1)

    out = run_command("cloudtasks_purge", "--older-than", "30", "--dry-run")

    assert out.startswith("would delete 2 workflows (4 nodes) finished before ")
    assert Workflow.objects.count() == 3 and Node.objects.count() == 6


@pytest.mark.parametrize(
    "args",
    [["--older-than", "-1"], ["--older-than", "x"], ["--older-than", "1", "--batch-size", "0"]],
)
def test_purge_refuses_a_bad_limit(args):
    with pytest.raises(CommandError):
        call_command("cloudtasks_purge", *args)


def test_purge_without_a_limit_needs_result_expires(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "RESULT_EXPIRES": None}
    with pytest.raises(CommandError, match="retention is off"):
        call_command("cloudtasks_purge")


# -- cloudtasks_sweep --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sweep_resends_a_node_whose_dispatch_was_lost(memory):
    result = add.delay(2, 3)
    memory.clear()  # the dispatch never reached Cloud Tasks
    Node.objects.filter(pk=result.id).update(ready_at=timezone.now() - timedelta(minutes=10))

    assert (
        run_command("cloudtasks_sweep", "--grace", "900")
        == "resent 0, unparked 0, parked 0, failed 0\n"
    )
    assert memory.sent == []

    assert run_command("cloudtasks_sweep") == "resent 1, unparked 0, parked 0, failed 0\n"
    assert [d.node_id for d in memory.sent] == [result.id]
    memory.drain()
    assert result.get(timeout=5) == 5


@pytest.mark.django_db(transaction=True)
def test_sweep_sends_parked_nodes_now_within_reach(memory):
    result = add.apply_async((1, 1), countdown=40 * 24 * 3600)
    assert memory.sent == [] and Node.objects.get(pk=result.id).parked
    Node.objects.filter(pk=result.id).update(eta=timezone.now() + timedelta(days=2))

    assert run_command("cloudtasks_sweep") == "resent 0, unparked 1, parked 0, failed 0\n"
    assert [d.node_id for d in memory.sent] == [result.id]


@pytest.mark.django_db(transaction=True)
def test_sweep_exits_1_when_sending_fails(memory, monkeypatch):
    result = add.delay(2, 3)
    Node.objects.filter(pk=result.id).update(ready_at=timezone.now() - timedelta(minutes=10))

    def outage(dispatches):
        raise EnqueueError("Cloud Tasks is down")

    monkeypatch.setattr(memory, "send", outage)
    out = StringIO()
    with pytest.raises(CommandError, match="1 nodes could not be sent") as caught:
        call_command("cloudtasks_sweep", stdout=out)
    assert caught.value.returncode == 1
    assert out.getvalue() == "resent 0, unparked 0, parked 0, failed 1\n"


@pytest.mark.django_db(transaction=True)
def test_sweep_counts_each_node_where_it_went(memory, monkeypatch):
    lost = [add.delay(i, i) for i in range(3)]
    far = add.apply_async((9, 9), countdown=40 * 24 * 3600)
    memory.clear()
    Node.objects.filter(pk=far.id).update(parked=False)  # as if its park was lost
    Node.objects.update(ready_at=timezone.now() - timedelta(minutes=10))
    refused = lost[0].id
    real_send = memory.send

    def partial_outage(dispatches):
        real_send([d for d in dispatches if d.node_id != refused])
        raise EnqueueError("one task was refused", [refused])

    monkeypatch.setattr(memory, "send", partial_outage)
    out = StringIO()
    with pytest.raises(CommandError, match="1 nodes could not be sent"):
        call_command("cloudtasks_sweep", stdout=out)

    assert out.getvalue() == "resent 2, unparked 0, parked 1, failed 1\n"
    assert sorted(d.node_id for d in memory.sent) == sorted(r.id for r in lost[1:])
    assert Node.objects.get(pk=far.id).parked


# -- cloudtasks_queues -------------------------------------------------------------------


@pytest.fixture
def strict_emulator(settings):
    """A client of an emulator that creates no queue by itself, which the settings point at.

    It keeps sub-second backoffs (a testing option) so that the settings read back as
    given; Cloud Tasks truncates them to whole seconds.
    """
    emulator = CloudTasksEmulator(subsecond_backoffs=True).start()
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "EMULATOR_HOST": emulator.address}
    reset_transport()
    client = emulator_client(emulator.address)
    yield client
    client.transport.close()
    reset_transport()
    emulator.stop()


QUEUES = {
    "default": {
        "max_dispatches_per_second": 50,
        "max_concurrent_dispatches": 100,
        "max_attempts": 20,
        "min_backoff": 0.5,
        "max_backoff": 60,
        "max_doublings": 4,
    },
    "bulk": {"max_dispatches_per_second": 5, "max_retry_duration": 3600},
}


def test_queues_creates_the_configured_queues_with_their_settings(strict_emulator, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": QUEUES}

    out = run_command("cloudtasks_queues")

    assert f"{PARENT}/queues/default: created (max_dispatches_per_second=50, " in out
    assert f"{PARENT}/queues/bulk: created (" in out
    default = strict_emulator.get_queue(name=f"{PARENT}/queues/default")
    assert default.rate_limits.max_dispatches_per_second == 50
    assert default.rate_limits.max_concurrent_dispatches == 100
    assert default.retry_config.max_attempts == 20
    assert default.retry_config.min_backoff == timedelta(seconds=0.5)
    assert default.retry_config.max_backoff == timedelta(seconds=60)
    assert default.retry_config.max_doublings == 4
    bulk = strict_emulator.get_queue(name=f"{PARENT}/queues/bulk")
    assert bulk.rate_limits.max_dispatches_per_second == 5
    assert bulk.retry_config.max_retry_duration == timedelta(hours=1)


def test_queues_updates_only_what_changed_and_leaves_the_rest(strict_emulator, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": QUEUES}
    run_command("cloudtasks_queues")
    changed = {**QUEUES, "default": {**QUEUES["default"], "max_attempts": 5, "max_backoff": 30}}
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": changed}

    out = run_command("cloudtasks_queues")

    assert f"{PARENT}/queues/default: updated (max_attempts 20 -> 5, max_backoff 60 -> 30)" in out
    assert f"{PARENT}/queues/bulk: unchanged" in out
    default = strict_emulator.get_queue(name=f"{PARENT}/queues/default")
    assert default.retry_config.max_attempts == 5
    assert default.retry_config.max_backoff == timedelta(seconds=30)
    assert default.retry_config.min_backoff == timedelta(seconds=0.5)
    assert default.rate_limits.max_dispatches_per_second == 50
    assert "unchanged" in run_command("cloudtasks_queues").splitlines()[0]


def test_queues_dry_run_reports_and_changes_nothing(strict_emulator, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": QUEUES}

    out = run_command("cloudtasks_queues", "--dry-run")

    assert f"{PARENT}/queues/default: would create (" in out
    assert f"{PARENT}/queues/bulk: would create (" in out
    with pytest.raises(gexc.NotFound):
        strict_emulator.get_queue(name=f"{PARENT}/queues/default")


def test_queues_creates_the_default_queue_without_a_queues_setting(strict_emulator):
    out = run_command("cloudtasks_queues")

    assert out == f"{PARENT}/queues/default: created (service defaults)\n"
    queues = strict_emulator.list_queues(parent=PARENT)
    assert [q.name for q in queues] == [f"{PARENT}/queues/default"]


@pytest.mark.parametrize(
    "queues, message",
    [
        ({"default": {"max_atempts": 3}}, "unknown settings max_atempts"),
        ({"default": {"max_attempts": "3"}}, "not a number"),
        ({"bad/name": {}}, "is not a queue id"),
    ],
)
def test_queues_refuses_invalid_settings_before_calling_the_service(
    strict_emulator, settings, queues, message
):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": queues}
    with pytest.raises(CommandError, match=message):
        call_command("cloudtasks_queues")
    assert list(strict_emulator.list_queues(parent=PARENT)) == []


def test_queues_reports_a_queue_the_service_refuses_and_exits_1(strict_emulator, settings):
    settings.CLOUDTASKS = {
        **settings.CLOUDTASKS,
        "QUEUES": {"default": {}, "fast": {"max_dispatches_per_second": 10_000}},
    }
    err = StringIO()
    with pytest.raises(CommandError, match="1 queues could not be set up: fast") as caught:
        call_command("cloudtasks_queues", stdout=StringIO(), stderr=err)
    assert caught.value.returncode == 1
    assert "queues/fast: failed: " in err.getvalue()
    names = [q.name for q in strict_emulator.list_queues(parent=PARENT)]
    assert names == [f"{PARENT}/queues/default"]


# -- cloudtasks_emulator -----------------------------------------------------------------


def test_the_emulator_command_serves_the_api_until_sigterm():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "cloudtasks_emulator",
            "--port",
            "0",
            "--queue",
            f"{PARENT}/queues/ready",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    try:
        first = lines.get(timeout=30)
        assert first.startswith("Cloud Tasks emulator listening on 127.0.0.1:")
        address = first.rsplit(" ", 1)[-1].strip()
        client = emulator_client(address)
        try:
            names = [q.name for q in client.list_queues(parent=PARENT)]
            assert names == [f"{PARENT}/queues/ready"]
            assert isinstance(client.get_queue(name=names[0]), tasks_v2.Queue)
        finally:
            client.transport.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    process.stderr.close()
    remaining = []
    while not lines.empty():
        remaining.append(lines.get())
    assert remaining[-1].strip() == "Cloud Tasks emulator stopped"


def test_the_emulator_command_fails_cleanly_on_a_taken_port():
    with CloudTasksEmulator() as running:
        port = running.address.rsplit(":", 1)[-1]
        with pytest.raises(CommandError) as caught:
            call_command("cloudtasks_emulator", "--port", port)
    assert caught.value.returncode == 1


@pytest.mark.django_db(transaction=True)
def test_status_finds_a_workflow_by_the_short_id_the_admin_shows(failed_chain):
    node = Node.objects.filter(workflow_id=failed_chain).order_by("index").last()
    by_workflow = run_command("cloudtasks_status", failed_chain[:8])
    assert by_workflow.startswith(f"Workflow {failed_chain}:")
    assert run_command("cloudtasks_status", str(node.pk)[:8]) == by_workflow
    assert run_command("cloudtasks_status", failed_chain[:13]) == by_workflow  # with the dash


@pytest.mark.django_db(transaction=True)
def test_status_of_a_short_id_several_workflows_share_is_an_error():
    first = Workflow.objects.create(id=uuid.UUID("abcd1234" + "0" * 24), name="first")
    Workflow.objects.create(id=uuid.UUID("abcd1234" + "1" * 24), name="second")

    with pytest.raises(CommandError, match="several workflows match 'abcd1234'"):
        call_command("cloudtasks_status", "abcd1234")
    assert run_command("cloudtasks_status", "abcd12340").startswith(f"Workflow {first.pk}: first")
    with pytest.raises(CommandError, match="no workflow or node has an id starting with ffff"):
        call_command("cloudtasks_status", "ffff")
    with pytest.raises(CommandError, match="at least 4 hex digits"):
        call_command("cloudtasks_status", "abc")


@pytest.mark.django_db(transaction=True)
def test_status_never_hides_a_failed_member_behind_the_count(memory):
    members = [add.si(i, i) for i in range(30)]
    members[3] = fail.si(3)
    members[25] = fail.si(25)
    result = (group(members) | tsum.s()).delay()
    memory.drain()

    lines = run_command("cloudtasks_status", result.workflow_id, "--members", "5").splitlines()

    members_shown = [line for line in lines if line.startswith(("|   |-- ", "|   `-- "))]
    assert len(members_shown) == 7  # five, the failed one beyond them, and the count
    assert any(line.startswith("|   |-- 3 fail(3)  FAILURE") for line in members_shown)
    assert any(line.startswith("|   |-- 25 fail(25)  FAILURE") for line in members_shown)
    assert members_shown[-1] == "|   `-- ... 24 more (24 SUCCESS)"


@pytest.mark.django_db(transaction=True)
def test_purge_shows_its_progress_and_running_total_on_stderr():
    for days in (31, 32, 33, 34, 35):
        make_workflow(WorkflowStatus.SUCCESS, days, nodes=3)
    out, err = StringIO(), StringIO()

    call_command(
        "cloudtasks_purge", "--older-than", "30", "--batch-size", "2", stdout=out, stderr=err
    )

    assert err.getvalue().splitlines() == [
        "  2 of 5 workflows deleted (6 nodes) so far",
        "  4 of 5 workflows deleted (12 nodes) so far",
        "  5 of 5 workflows deleted (15 nodes) so far",
    ]
    assert out.getvalue().startswith("deleted 5 workflows (15 nodes)")


def test_queues_creates_every_queue_a_task_names(strict_emulator, settings):
    from django_cloudtasks import task
    from django_cloudtasks.registry import registry

    @task(name="commands_mailer", queue="emails")
    def mailer():
        return None

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUES": {"bulk": {}}}
    try:
        out = run_command("cloudtasks_queues")
    finally:
        registry.unregister("commands_mailer")

    assert f"{PARENT}/queues/emails: created (service defaults)" in out
    queues = {q.name for q in strict_emulator.list_queues(parent=PARENT)}
    assert queues == {f"{PARENT}/queues/{q}" for q in ("default", "bulk", "emails")}
