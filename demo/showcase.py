"""The showcase: Celery-style workflows, then the original README's CloudChainManager examples.

Every scenario goes through the real path: the cloudtasks transport creates Cloud
Tasks on the emulator, which calls the Django server over HTTP, which runs the task
and enqueues what comes next. The checks read the database and the emulator's record
of deliveries.
"""

from __future__ import annotations

import io
import itertools
import json
import urllib.request
from datetime import datetime
from typing import Any

from django.core.management import call_command
from django.utils import timezone
from google.api_core import exceptions as gexc

from demo.scenario import Run, Scenario, Steps, Unexpected, Wait, expect, scenario
from demo.services import LOOPBACK
from demo.tasks import add, divide, report_failure, tsum
from django_cloudtasks import group
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.dispatch import dispatch_for
from django_cloudtasks.manager import CloudChainManager
from django_cloudtasks.models import Node, ScheduleRun
from django_cloudtasks.schedules.cloud import SchedulerJobs
from django_cloudtasks.transports import get_transport
from django_cloudtasks.transports.cloudtasks import CloudTasksTransport


def _value(result: Any, expected: Any) -> Any:
    value = result.get(timeout=0)
    expect(value == expected, f"expected {expected!r}, got {value!r}")
    return value


def _nodes(result: Any) -> list[Node]:
    return result.workflow.nodes()


def _seconds(later: datetime | None, earlier: datetime | None) -> float:
    expect(later is not None and earlier is not None, "a node has no start time")
    assert later is not None and earlier is not None
    return (later - earlier).total_seconds()


def _peak_concurrency(nodes: list[Node]) -> int:
    events = sorted(
        [(n.started_at, 1) for n in nodes if n.started_at]
        + [(n.finished_at, -1) for n in nodes if n.finished_at]
    )
    peak = running = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def _expect_errback_ran_once(run: Run, result: Any, handler: str) -> Node:
    errbacks = [n for n in _nodes(result) if n.kind == NodeKind.ERRBACK]
    expect(len(errbacks) == 1, f"expected one error callback, found {len(errbacks)}")
    errback = errbacks[0]
    expect(errback.task_name == handler, f"the error callback is {errback.task_name!r}")
    expect(errback.state == State.SUCCESS, f"the error callback ended {errback.state}")
    delivered = [r for r in run.deliveries(errback) if r.succeeded]
    expect(len(delivered) == 1, f"the error callback was delivered {len(delivered)} times")
    return errback


def _expect_nothing_ran(run: Run, result: Any) -> list[Node]:
    nodes = _nodes(result)
    expect(result.workflow.status == WorkflowStatus.REVOKED, "the workflow is not REVOKED")
    states = sorted({n.state for n in nodes})
    expect(states == [State.REVOKED], f"expected every node REVOKED, found {states}")
    expect(not any(n.started_at for n in nodes), "a revoked node started")
    delivered = [r for n in nodes for r in run.deliveries(n)]
    expect(not delivered, f"Cloud Tasks delivered {len(delivered)} revoked nodes")
    transport = get_transport()
    assert isinstance(transport, CloudTasksTransport)
    for node in nodes:
        if node.ready_at is not None:  # it had been sent: its Cloud Task must be gone
            try:
                transport.client.get_task(name=transport.task_path(dispatch_for(node)))
            except gexc.NotFound:
                continue
            raise Unexpected(f"the Cloud Task of revoked node {node.pk} still exists")
    return nodes


# -- Celery-style ------------------------------------------------------------------------


@scenario("chain, result injection", "(add.s(4, 5) | add.s(b=10)).delay()")
def chain_with_result_injection(run: Run) -> Steps:
    result = run.watch((add.s(4, 5) | add.s(b=10)).delay())
    yield run.settled()
    _value(result, 19)
    return "19: add(4, 5) = 9 became the first argument of add(9, b=10), as in Celery"


@scenario("chord of 20", "(group(add.s(i, i) for i in range(20)) | tsum.s()).delay()")
def chord_of_twenty(run: Run) -> Steps:
    result = run.watch((group(add.s(i, i) for i in range(20)) | tsum.s()).delay())
    yield run.settled()
    _value(result, 380)
    adds = [n for n in _nodes(result) if n.task_name == "add"]
    expect(len(adds) == 20, f"expected 20 adds, found {len(adds)}")
    expect(all(n.state == State.SUCCESS for n in adds), "an add did not succeed")
    return (
        f"380: the 20 adds ran in parallel (up to {_peak_concurrency(adds)} at once), "
        "then tsum once on their 20 results, in order"
    )


@scenario("delayed task (countdown=3)", "add.apply_async((2, 3), countdown=3)")
def delayed_task(run: Run) -> Steps:
    submitted = timezone.now()
    result = run.watch(add.apply_async((2, 3), countdown=3))
    yield run.after(1.5)
    # Celery's vocabulary calls it PENDING; the finer state tells it is scheduled.
    state, detailed = result.state, result.detailed_state
    expect(
        (state, detailed) == (State.PENDING, State.SCHEDULED),
        f"expected PENDING (SCHEDULED) after 1.5s, found {state} ({detailed})",
    )
    yield run.settled()
    _value(result, 5)
    (node,) = _nodes(result)
    delivered = [r for r in run.deliveries(node) if r.succeeded]
    expect(len(delivered) == 1, f"it was delivered {len(delivered)} times, not once")
    waited = delivered[0].started_at - submitted.timestamp()
    expect(waited >= 3, f"it was delivered {waited:.2f}s after submission, before its countdown")
    return (
        f"5: PENDING (detailed_state SCHEDULED) at 1.5s, delivered by Cloud Tasks "
        f"{waited:.1f}s after submission"
    )


@scenario(
    "failing task + error callback",
    "(add.s(1, 2) | divide.s(0).on_error(report_failure.s()) | add.s(5)).delay()",
)
def failing_task(run: Run) -> Steps:
    result = run.watch((add.s(1, 2) | divide.s(0).on_error(report_failure.s()) | add.s(5)).delay())
    yield run.settled()
    expect(result.workflow.status == WorkflowStatus.FAILURE, "the workflow did not fail")
    expect(result.state == State.FAILURE, f"the last step is {result.state}, not FAILURE")
    try:
        result.get(timeout=0)
    except ZeroDivisionError as exc:
        error = exc
    else:
        raise Unexpected("get() did not raise the task's ZeroDivisionError")
    errback = _expect_errback_ran_once(run, result, report_failure.name)
    return (
        f"get() raised ZeroDivisionError({str(error)!r}); add(_, 5) was marked FAILURE too; "
        f"report_failure ran once: {errback.result!r}"
    )


@scenario(
    "revoked chain",
    "res = (add.s(1, 1) | add.s(2) | add.s(3)).apply_async(countdown=4); res.workflow.revoke()",
)
def revoked_chain(run: Run) -> Steps:
    result = run.watch((add.s(1, 1) | add.s(2) | add.s(3)).apply_async(countdown=4))
    yield run.after(1.5)
    revoked = result.workflow.revoke()
    expect(len(revoked) == 3, f"revoke() revoked {len(revoked)} nodes, not 3")
    yield run.after(6)  # two seconds past the countdown: nothing may have run
    _expect_nothing_ran(run, result)
    return "REVOKED at 1.5s: 3 nodes revoked, the Cloud Task deleted, nothing ran by 6s"


# -- the original README's CloudChainManager examples -------------------------------------


@scenario("README: single task", 'add_task("sum", {"a": 4, "b": 5}); run()')
def readme_single_task(run: Run) -> Steps:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 4, "b": 5})
    result = run.watch(chain_mgr.run())
    yield run.settled()
    _value(result, 9)
    return "9"


@scenario("README: chain", 'add_task("sum", {"a": 4, "b": 5}); add_task("sum", {"b": 10})')
def readme_chain(run: Run) -> Steps:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 4, "b": 5})
    chain_mgr.add_task("sum", {"b": 10})  # auto-inject result from previous task into 'a'
    result = run.watch(chain_mgr.run())
    yield run.settled()
    _value(result, 19)
    return "19: the first result, 9, was injected into a"


@scenario(
    "README: group, then delay",
    'add_group([sum(3, 3), sum(7, 2)]); add_task("sum", {"a": 4, "b": 5}, delay_seconds=2)',
)
def readme_group_then_delay(run: Run) -> Steps:
    chain_mgr = CloudChainManager()
    chain_mgr.add_group(
        [
            {"endpoint_path": "sum", "payload": {"a": 3, "b": 3}},
            {"endpoint_path": "sum", "payload": {"a": 7, "b": 2}},
        ]
    )
    chain_mgr.add_task("sum", {"a": 4, "b": 5}, delay_seconds=2)  # the README says 30
    result = run.watch(chain_mgr.run())
    yield run.settled()
    _value(result, 9)
    first, second, last = [n for n in _nodes(result) if n.kind == NodeKind.TASK]
    expect([first.result, second.result] == [6, 9], "the group did not give [6, 9]")
    waited = _seconds(last.started_at, last.ready_at)
    expect(waited >= 2, f"the last step started {waited:.2f}s after the group, not 2s")
    return f"9: the group gave [6, 9], the last step started {waited:.1f}s after it (README: 30s)"


@scenario("README: delay", 'add_task("sum", {"a": 2, "b": 1}, delay_seconds=2)')
def readme_delay(run: Run) -> Steps:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 2, "b": 1}, delay_seconds=2)  # the README says 300
    result = run.watch(chain_mgr.run())
    yield run.settled()
    _value(result, 3)
    (node,) = _nodes(result)
    waited = _seconds(node.started_at, node.ready_at)
    expect(waited >= 2, f"it started {waited:.2f}s after submission, not 2s")
    return f"3, started {waited:.1f}s after submission (README: 300s)"


@scenario(
    "README: error callback",
    'add_task("faulty_task", {"a": 1, "b": 2}, error_callback="my_error_handler")',
)
def readme_error_callback(run: Run) -> Steps:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("faulty_task", {"a": 1, "b": 2}, error_callback="my_error_handler")
    result = run.watch(chain_mgr.run())
    yield run.settled()
    expect(result.state == State.FAILURE, f"faulty_task ended {result.state}, not FAILURE")
    error = result.result
    expect(isinstance(error, ValueError), f"expected a ValueError, got {error!r}")
    _expect_errback_ran_once(run, result, "my_error_handler")
    return f"faulty_task raised ValueError({str(error)!r}); my_error_handler ran once"


@scenario("README: grouping chains", "c3.add_chain_group(c1, c2); c3.run()")
def readme_chain_group(run: Run) -> Steps:
    c1 = CloudChainManager()
    c1.add_task("sum", {"a": 4, "b": 5})
    c2 = CloudChainManager()
    c2.add_task("sum", {"a": 2, "b": 5})
    c3 = CloudChainManager()
    c3.add_chain_group(c1, c2)
    result = run.watch(c3.run())
    yield run.settled()
    _value(result, [9, 7])
    return "[9, 7]: one result per chain, in order"


@scenario("README: revoke endpoint", "GET /cloudtasks/revoke/?chain=<CHAIN_ID>")
def readme_revoke_endpoint(run: Run) -> Steps:
    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 1, "b": 1}, delay_seconds=4)
    chain_mgr.add_task("sum", {"b": 1})
    result = run.watch(chain_mgr.run())
    yield run.after(1.5)
    request = urllib.request.Request(
        f"{conf.run_url_base}/cloudtasks/revoke/?chain={result.workflow_id}",
        headers={"Authorization": f"Bearer {conf.AUTH_TOKEN}"},
    )
    with LOOPBACK.open(request, timeout=10) as response:
        answer = json.load(response)
    expect(answer.get("count") == 2, f"the endpoint answered {answer}")
    yield run.after(6)
    _expect_nothing_ran(run, result)
    return "the endpoint revoked 2 tasks over HTTP; nothing ran by 6s"


# -- Celery beat's replacement -----------------------------------------------------------


@scenario(
    "schedule on Cloud Scheduler (a minute lasts 2s)",
    'SCHEDULES = {"heartbeat": {"task": "add", "cron": "* * * * *"}}; cloudtasks_schedules sync',
)
def schedule_fires(run: Run) -> Steps:
    call_command("cloudtasks_schedules", "sync", stdout=io.StringIO())
    runs = ScheduleRun.objects.filter(schedule="heartbeat")

    def finished() -> list[ScheduleRun]:
        return list(runs.filter(workflow__status=WorkflowStatus.SUCCESS).order_by("slot"))

    yield Wait("three slots to run", lambda: len(finished()) >= 3, timeout=20)
    jobs = SchedulerJobs()
    try:
        jobs.set_paused("heartbeat", True)  # stop firing for the rest of the demo
    finally:
        jobs.close()
    done = finished()
    run.workflow_ids.extend(str(r.workflow_id) for r in done)
    results = [Node.objects.get(workflow_id=str(item.workflow_id)).result for item in done]
    expect(results == [42] * len(done), f"the runs gave {results}, not 42 each")
    calls = [e for e in run.scheduler_history() if e.succeeded]
    slots = sorted({e.schedule_time for e in calls})
    expect(len(slots) == len(calls), "Cloud Scheduler called a slot twice")
    recorded = dict(runs.values_list("slot", "state"))
    unrecorded = [s for s in slots if s not in recorded]
    expect(not unrecorded, f"calls for {unrecorded} left no run")
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(slots)}
    expect(gaps <= {60.0}, f"slots are not one minute apart: {sorted(gaps)}")
    skipped = sum(1 for state in recorded.values() if state == "SKIPPED")
    return (
        f"{len(done)} slots a (fast) minute apart each started one workflow, add(20, 22) = 42"
        + (f"; {skipped} skipped while the previous one ran" if skipped else "")
        + "; then the job was paused"
    )


SHOWCASE: list[Scenario] = [
    chain_with_result_injection,
    chord_of_twenty,
    delayed_task,
    failing_task,
    revoked_chain,
    readme_single_task,
    readme_chain,
    readme_group_then_delay,
    readme_delay,
    readme_error_callback,
    readme_chain_group,
    readme_revoke_endpoint,
    schedule_fires,
]
