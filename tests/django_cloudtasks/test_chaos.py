"""The chaos run: a few hundred workflows finish right while the infrastructure fails.

Everything runs on loopback: the Cloud Tasks emulator behind a gRPC proxy that fails
CreateTask calls, several ``runserver`` processes behind an HTTP proxy that answers
5xx, duplicates and delays deliveries, and PostgreSQL. While the workflows run, the
test kills server processes (SIGKILL), terminates the app's database connections
and restarts the emulator empty. Then it sweeps and checks, from the execution log
the task bodies write, that every workflow ended as it should, that no node is left
unfinished, and that a body ran again only after a crash of an attempt of that node.

Opt in with ``CLOUDTASKS_CHAOS=1`` on PostgreSQL (``.ci/run`` does); it takes about
two minutes. ``CLOUDTASKS_CHAOS_WORKFLOWS`` sets how many workflows (default 350).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from django.db import connection
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from django_cloudtasks import chain, chord, group
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.dispatch import sweep
from django_cloudtasks.emulator import CloudTasksEmulator
from django_cloudtasks.exceptions import EnqueueError
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.results import WorkflowResult
from django_cloudtasks.transports import reset_transport
from tests.django_cloudtasks.test_crash import ROOT, Server, free_port
from tests.testapp.chaos_tasks import (
    chaos_errback,
    chaos_fail,
    chaos_flaky,
    chaos_step,
    chaos_sum,
)

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        os.environ.get("CLOUDTASKS_CHAOS") != "1",
        reason="the chaos run takes about two minutes: set CLOUDTASKS_CHAOS=1 and run it "
        "on PostgreSQL (.ci/run does)",
    ),
]

QUEUE = "projects/test-project/locations/us-central1/queues/default"
WORKFLOWS = int(os.environ.get("CLOUDTASKS_CHAOS_WORKFLOWS", "350"))
SERVERS = 3
#: Seconds during which faults are injected, and the most the whole run may take.
FAULT_SECONDS, RUN_SECONDS = 45.0, 240.0
#: A claimed node's lease is DISPATCH_DEADLINE + min(30 s, DISPATCH_DEADLINE).
DISPATCH_DEADLINE = 10
SWEEP_GRACE = 5.0
#: How early a countdown may run (the claim's clock-skew allowance).
SKEW = 5.0
APP_NAME = "cloudtasks-chaos-server"
REPORT = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- chaos-run:begin -->", "<!-- chaos-run:end -->"


@dataclass
class Faults:
    """What was injected and what the proxies saw, counted across threads."""

    counts: Counter[str] = field(default_factory=Counter)
    #: Per node: attempts whose answer was lost to a crash (connection dropped, 500).
    crashes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    on: bool = True

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def roll(self, chance: float) -> bool:
        with self.lock:
            return self.on and self.rng.random() < chance

    def pick(self, items: list[Any]) -> Any:
        with self.lock:
            return self.rng.choice(items)


# -- the gRPC proxy in front of the emulator ----------------------------------------------


class FlakyCloudTasks(grpc.GenericRpcHandler):
    """Forwards every call to the emulator; fails some CreateTask calls.

    UNAVAILABLE before forwarding (nothing created); DEADLINE_EXCEEDED after it (the
    task exists, the client does not know): the client retries both.
    """

    def __init__(self, target: str, faults: Faults) -> None:
        self.channel = grpc.insecure_channel(target)
        self.faults = faults

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        forward = self.channel.unary_unary(method)
        creates = method.endswith("/CreateTask")

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if creates and self.faults.roll(0.04):
                self.faults.add("CreateTask UNAVAILABLE")
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected: unavailable")
            try:
                response = forward(request, timeout=20)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
            if creates and self.faults.roll(0.03):
                self.faults.add("CreateTask DEADLINE_EXCEEDED (task created)")
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "injected: deadline exceeded")
            return response

        return grpc.unary_unary_rpc_method_handler(handle)


@contextmanager
def grpc_proxy(target: str, faults: Faults) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((FlakyCloudTasks(target, faults),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(1).wait()


# -- the HTTP proxy in front of the servers -----------------------------------------------


class Gateway(ThreadingHTTPServer):
    """A load balancer that misbehaves: 5xx, duplicated and delayed deliveries."""

    daemon_threads = True

    def __init__(self, ports: list[int], faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.ports, self.faults = ports, faults


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        faults = self.server.faults
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        node = _node_of(body)
        if faults.roll(0.03):
            faults.add("proxy 503 before the server")
            return self._answer(503, b"injected")
        if faults.roll(0.05):
            faults.add("delivery delayed (0.2-1.5 s)")
            time.sleep(0.2 + 1.3 * faults.rng.random())
        if faults.roll(0.05):
            faults.add("delivery duplicated")
            threading.Thread(target=self._forward, args=(body, headers, node), daemon=True).start()
        status, answer = self._forward(body, headers, node)
        if status == 200 and faults.roll(0.03):
            faults.add("proxy 502 after the server answered")
            return self._answer(502, b"injected")
        self._answer(status, answer)

    def _forward(self, body: bytes, headers: dict[str, str], node: str) -> tuple[int, bytes]:
        faults = self.server.faults
        port = faults.pick(self.server.ports)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            try:
                conn.connect()
            except OSError:
                faults.add("no server listening (502)")
                return 502, b"no server"
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                with faults.lock:
                    faults.crashes[node] += 1
                faults.add("attempts cut off by a crash (connection lost)")
                return 502, b"connection lost"
            if response.status >= 500:
                with faults.lock:
                    faults.crashes[node] += 1
                faults.add(f"server answers {response.status}")
            return response.status, answer
        finally:
            conn.close()

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _node_of(body: bytes) -> str:
    with suppress(ValueError, AttributeError):
        return str(json.loads(body).get("node"))
    return ""


# -- the workflows ------------------------------------------------------------------------


@dataclass
class Submitted:
    """A workflow submitted by the run, and what it must end as."""

    kind: str
    workflow_id: str
    expected: Any = None
    submitted_at: float = 0.0
    countdown: float = 0.0


def submit(kind: str, i: int) -> Submitted:
    """Start one workflow of ``kind``; a failed send still counts, as the sweeper sends it."""
    now = time.time()
    expr, expected, countdown = workflow_of(kind, i)
    try:
        r = expr.apply_async()
    except EnqueueError as exc:  # saved all the same: the error carries its handle
        assert exc.result is not None, f"no handle on {exc!r}"
        r = exc.result
    if kind == "revoke":
        WorkflowResult(r.workflow_id).revoke()
    return Submitted(kind, r.workflow_id, expected, now, countdown)


def workflow_of(kind: str, i: int) -> tuple[Any, Any, float]:
    """The expression of a workflow of ``kind``, its expected outcome and its countdown."""
    if kind == "chain":
        return chaos_step.si(i) | chaos_step.s(2) | chaos_step.s(3), i + 6, 0
    if kind == "chord":
        return chord([chaos_step.si(i, k) for k in range(4)], chaos_sum.s()), 4 * i + 6, 0
    if kind == "nested groups":
        expr = group(
            chaos_step.si(i),
            chain(chaos_step.si(i), group(chaos_step.s(), chaos_step.s(10))),
        )
        return expr, [i + 1, [i + 2, i + 11]], 0
    if kind == "countdown":
        return chaos_step.si(i).set(countdown=8) | chaos_step.s(), i + 2, 8
    if kind == "retries":
        return chaos_flaky.si(i) | chaos_step.s(), i + 1, 0
    if kind == "error callback":
        failing = chaos_fail.s().on_error(chaos_errback.s())
        return chaos_step.si(i) | failing | chaos_step.s(), "ValueError", 0
    assert kind == "revoke"
    return chaos_step.si(i).set(countdown=30) | chaos_step.s(), None, 0


KINDS = ["chain", "chord", "nested groups", "countdown", "retries", "error callback", "revoke"]


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the run ------------------------------------------------------------------------------


def test_workflows_finish_right_while_the_infrastructure_fails(settings, tmp_path):
    faults = Faults()
    log = tmp_path / "executions.jsonl"
    emulator_port = free_port()
    gateway_ports = [free_port() for _ in range(SERVERS)]
    gateway = Gateway(gateway_ports, faults)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    gateway_url = f"http://127.0.0.1:{gateway.server_address[1]}"
    emulators = [start_emulator(emulator_port)]
    started = time.monotonic()
    with grpc_proxy(f"127.0.0.1:{emulator_port}", faults) as cloud_tasks:
        overrides = {
            "TRANSPORT": "cloudtasks",
            "EMULATOR_HOST": cloud_tasks,
            "BASE_URL": gateway_url,
            "DISPATCH_DEADLINE": DISPATCH_DEADLINE,
            "INLINE_SECONDS": 0,
            "SWEEP_GRACE": SWEEP_GRACE,
        }
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, **overrides}
        reset_transport()
        os.environ["CLOUDTASKS_CHAOS_LOG"] = str(log)
        servers = [
            Server(port, overrides, tmp_path / f"server-{n}.log")
            for n, port in enumerate(gateway_ports)
        ]
        with _environ(PGAPPNAME=APP_NAME):
            for server in servers:
                server.start()
        try:
            submitted = run_with_faults(faults, servers, emulators, emulator_port)
            settle(faults, started, submitted)
        finally:
            faults.on = False
            for server in servers:
                server.stop()
            gateway.shutdown()
            reset_transport()
            emulators[-1].stop()
            os.environ.pop("CLOUDTASKS_CHAOS_LOG", None)
    outcomes = check(submitted, read_log(log), faults)
    table = report(faults, outcomes, time.monotonic() - started)
    print("\n" + table)
    write_report(table)


def start_emulator(port: int) -> CloudTasksEmulator:
    """An emulator on ``port`` whose queue retries quickly and without end."""
    # Testing options: sub-second backoffs as configured, and attempts cut at the
    # short deadline the leases are computed from (Cloud Tasks' floor is 15 s).
    emu = CloudTasksEmulator(
        port=port,
        tombstone_seconds=600,
        subsecond_backoffs=True,
        dispatch_deadline_cap=DISPATCH_DEADLINE,
    )
    emu.state.create_queue(
        "projects/test-project/locations/us-central1",
        tasks_v2.Queue(
            name=QUEUE,
            retry_config=tasks_v2.RetryConfig(
                max_attempts=-1,
                min_backoff=duration_pb2.Duration(nanos=200_000_000),
                max_backoff=duration_pb2.Duration(seconds=2),
            ),
        ),
    )
    return emu.start()


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_with_faults(
    faults: Faults, servers: list[Server], emulators: list[CloudTasksEmulator], port: int
) -> list[Submitted]:
    """Submit the workflows while injecting faults at random, for FAULT_SECONDS."""
    rng = random.Random(99)
    kinds = [KINDS[n % len(KINDS)] for n in range(WORKFLOWS)]
    rng.shuffle(kinds)
    submitted: list[Submitted] = []
    until = time.monotonic() + FAULT_SECONDS
    spacing = FAULT_SECONDS * 0.6 / max(1, WORKFLOWS)
    restarted = False
    next_fault = time.monotonic() + 2
    while time.monotonic() < until or kinds:
        if kinds:
            kind = kinds.pop()
            submitted.append(submit(kind, len(submitted)))
            time.sleep(spacing)
        else:
            time.sleep(0.2)
        now = time.monotonic()
        if now < next_fault:
            continue
        next_fault = now + rng.uniform(1.0, 3.0)
        fault = rng.choice(["kill", "kill", "terminate", "terminate", "restart"])
        if fault == "kill":
            victim = rng.choice(servers)
            if victim.process is not None and victim.process.poll() is None:
                victim.kill()
                faults.add("server process SIGKILLed (and restarted)")
                with _environ(PGAPPNAME=APP_NAME):
                    victim.start()
        elif fault == "terminate":
            for _ in range(5):  # the servers hold a connection only while they answer
                terminated = terminate_app_connections()
                faults.add("app database connections terminated (pg_terminate_backend)", terminated)
                time.sleep(0.05)
        elif not restarted and now > until - FAULT_SECONDS / 2:
            restarted = True
            old = emulators[-1]
            lost = old.state.live_task_count()
            old.stop(grace=0.5)
            emulators.append(start_emulator(port))
            faults.add("emulator restarted empty")
            faults.add("Cloud Tasks lost with the emulator's queue", lost)
    if not restarted:
        old = emulators[-1]
        faults.add("Cloud Tasks lost with the emulator's queue", old.state.live_task_count())
        old.stop(grace=0.5)
        emulators.append(start_emulator(port))
        faults.add("emulator restarted empty")
    return submitted


def terminate_app_connections() -> int:
    """``pg_terminate_backend`` every connection the servers hold; how many there were."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [APP_NAME],
        ).fetchall()
    return sum(1 for (done,) in rows if done)


def settle(faults: Faults, started: float, submitted: list[Submitted]) -> None:
    """Stop the faults; sweep until every workflow is finished or time runs out."""
    faults.on = False
    ids = [s.workflow_id for s in submitted]
    while time.monotonic() - started < RUN_SECONDS:
        if not Workflow.objects.filter(pk__in=ids, status=WorkflowStatus.PENDING).exists():
            return
        with suppress(EnqueueError):
            swept = sweep(grace=SWEEP_GRACE)
            faults.add("nodes resent by the sweeper", swept.resent)
        time.sleep(3)


@dataclass
class Outcomes:
    """What the run checked."""

    by_kind: Counter[str] = field(default_factory=Counter)
    bodies: int = 0
    reruns: int = 0
    nodes: int = 0


def check(submitted: list[Submitted], log: list[dict[str, Any]], faults: Faults) -> Outcomes:
    outcomes = Outcomes()
    assert len(submitted) == WORKFLOWS
    unfinished = list(Node.objects.unfinished().values_list("workflow_id", "index", "state"))
    assert unfinished == [], f"nodes left unfinished: {unfinished[:20]}"
    outcomes.nodes = Node.objects.count()

    starts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in log:
        if line["phase"] == "start":
            starts[line["node"]].append(line)
    outcomes.bodies = sum(len(runs) for runs in starts.values())

    for s in submitted:
        workflow = Workflow.objects.get(pk=s.workflow_id)
        nodes = list(Node.objects.filter(workflow_id=s.workflow_id))
        if s.kind == "revoke":
            assert workflow.status == WorkflowStatus.REVOKED, s
            assert not any(str(n.pk) in starts for n in nodes), f"a revoked body ran: {s}"
        elif s.kind == "error callback":
            assert workflow.status == WorkflowStatus.FAILURE, s
            failed = next(n for n in nodes if n.task_name == "chaos_fail")
            assert failed.state == State.FAILURE and failed.error_type == "ValueError", s
            errback = next(n for n in nodes if n.task_name == "chaos_errback")
            assert errback.state == State.SUCCESS and errback.result == str(failed.pk), s
        else:
            assert workflow.status == WorkflowStatus.SUCCESS, (s, workflow.status)
            assert WorkflowResult(s.workflow_id).get(timeout=0) == s.expected, s
        if s.countdown:
            first = next(n for n in nodes if n.countdown)
            ran = min(line["at"] for line in starts[str(first.pk)])
            assert ran >= s.submitted_at + s.countdown - SKEW, f"ran before its countdown: {s}"
        outcomes.by_kind[f"{s.kind}: {workflow.status.lower()} as expected"] += 1

    # At least once, bounded: per node and policy retry, every body run but one was an
    # attempt cut off by a crash (the proxy saw its connection drop or a 5xx).
    for node_id, runs in starts.items():
        per_retry = Counter(line["retries"] for line in runs)
        attempts = [line["attempt"] for line in runs]
        assert len(attempts) == len(set(attempts)), f"one attempt ran twice: {runs}"
        extra = sum(n - 1 for n in per_retry.values())
        assert extra <= faults.crashes[node_id], (
            f"node {node_id} ran {extra} extra times with {faults.crashes[node_id]} crashes"
        )
        outcomes.reruns += extra
    return outcomes


def report(faults: Faults, outcomes: Outcomes, seconds: float) -> str:
    rows = ["| fault injected | count |", "| --- | --- |"]
    rows += [f"| {name} | {n} |" for name, n in sorted(faults.counts.items())]
    rows += ["", "| outcome | count |", "| --- | --- |"]
    rows += [f"| {name} | {n} |" for name, n in sorted(outcomes.by_kind.items())]
    rows += [
        f"| nodes, all final | {outcomes.nodes} |",
        f"| task bodies run | {outcomes.bodies} |",
        f"| bodies run again after a crash of their attempt | {outcomes.reruns} |",
        "| bodies run again without a crash | 0 |",
        f"| run time | {seconds:.0f} s |",
    ]
    return "\n".join(rows)


def write_report(table: str) -> None:
    text = REPORT.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        REPORT.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text))
