"""The benchmark's services and cases: our workflows, the persistence case, Celery's.

:class:`Bench` starts the emulator and gunicorn (and a Celery worker), runs one case
at a time and returns a :class:`~benchmarks.report.Measurement` for it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.processes import (
    Service,
    cpu_seconds,
    cpu_since,
    current_rss_mb,
    free_port,
    peak_rss_mb,
    processes_named,
    reset_peak,
)
from benchmarks.report import Measurement, QueryLogs

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/cloudtasks_bench"
PROJECT, LOCATION, QUEUE = "bench-project", "us-central1", "bench"
#: How often the workflow's status is read; the wall time comes from its finished_at,
#: so a slower poll costs no precision and takes less CPU from the servers.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Case:
    """A workflow shape and its size: ``chain100``, ``chord1000``, ``persist10000``...

    ``bounded10000x100`` is a group of 10,000 with ``max_concurrency=100``.
    """

    kind: str
    size: int
    limit: int | None = None

    @property
    def name(self) -> str:
        """As given on the command line."""
        bound = f"x{self.limit}" if self.limit is not None else ""
        return f"{self.kind}{self.size}{bound}"

    @property
    def tasks(self) -> int:
        """How many tasks run (a chord's callback counts)."""
        return self.size + 1 if self.kind == "chord" else self.size

    @classmethod
    def parse(cls, text: str) -> Case:
        """``chain100`` -> Case("chain", 100).

        Raises:
            argparse.ArgumentTypeError: for an unknown shape or a missing size.
        """
        match = re.fullmatch(
            r"(chain|chord|group|bounded|persist)(\d+)(?:x(\d+))?", text.strip().replace("_", "")
        )
        if not match or (match[1] == "bounded") != (match[3] is not None):
            raise argparse.ArgumentTypeError(
                f"{text!r}: a case is chain|chord|group|persist followed by a size, or "
                "bounded<size>x<max_concurrency>"
            )
        return cls(match[1], int(match[2]), int(match[3]) if match[3] else None)


# -- the database --------------------------------------------------------------------


def database_settings(url: str) -> dict[str, Any]:
    """Django's NAME/HOST/PORT/USER/PASSWORD from a ``postgresql://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"--database must be a postgresql:// URL, got {url!r}")
    return {
        "NAME": parts.path.lstrip("/") or "cloudtasks_bench",
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": parts.port or 5432,
        "USER": parts.username or "postgres",
        "PASSWORD": parts.password or "",
    }


def recreate_database(db: dict[str, Any], drop_only: bool = False) -> None:
    """Drop the benchmark database (closing its connections) and create it anew."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        name = sql.Identifier(db["NAME"])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        if not drop_only:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


# -- services ------------------------------------------------------------------------


class Bench:
    """The running services and the measurements made with them."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.db = database_settings(args.database)
        self.workdir = Path(tempfile.mkdtemp(prefix="cloudtasks-bench-"))
        self.log_dir = self.workdir / "queries"
        self.log_dir.mkdir()
        self.logs = QueryLogs(self.log_dir)
        self.emulator: Service | None = None
        self.server: Service | None = None
        self.celery: Service | None = None
        self.rows: list[Measurement] = []

    def env(self, config: dict[str, Any]) -> dict[str, str]:
        """The environment of a child process."""
        return {
            **os.environ,
            "CLOUDTASKS_BENCH_CONFIG": json.dumps(config),
            "DJANGO_SETTINGS_MODULE": "benchmarks.cloudtasks_bench.settings",
            "CLOUDTASKS_BENCH_REDIS": self.args.redis,
            "PYTHONUNBUFFERED": "1",
        }

    def start_profilers(self) -> None:
        """Sample every gunicorn worker and the emulator with py-spy until the end.

        Each writes collapsed stacks (``DIR/<name>-<pid>.txt``) when it is stopped.
        """
        assert self.server is not None and self.emulator is not None
        out = Path(self.args.profile).resolve()
        out.mkdir(parents=True, exist_ok=True)
        targets = [(f"worker-{p}", p) for p in self.server.processes() if p != self.server.pid]
        targets += [(f"emulator-{p}", p) for p in self.emulator.processes()[:1]]
        for name, pid in targets:
            argv = [
                "py-spy",
                "record",
                "--nonblocking",
                "--rate",
                "100",
                "--format",
                "raw",
                "--pid",
                str(pid),
                "--output",
                str(out / f"{name}.txt"),
            ]
            profiler = Service(
                f"py-spy {name}", argv, dict(os.environ), self.workdir / f"{name}.log"
            )
            profiler.start()
            self.stack.callback(profiler.stop, 30.0, signal.SIGINT)

    def start_ours(self) -> None:
        """Recreate the database; start the emulator and gunicorn; migrate; make the queue."""
        recreate_database(self.db)
        emulator_port, server_port = free_port(), free_port()
        config = {
            "db": self.db,
            "emulator": f"127.0.0.1:{emulator_port}",
            "base_url": f"http://127.0.0.1:{server_port}",
            "log_dir": str(self.log_dir),
            "synchronous_commit": self.args.synchronous_commit,
            "inline_seconds": self.args.inline_seconds,
            "shards": self.args.shards,
        }
        os.environ.update(self.env(config))
        self.emulator = Service(
            "emulator",
            [
                sys.executable,
                "-m",
                self.args.emulator_module,
                "--port",
                str(emulator_port),
                "--tombstone-seconds",
                "900",
                "--max-in-flight",
                "200",
            ],
            self.env(config),
            self.workdir / "emulator.log",
        ).start()
        self.stack.callback(self.emulator.stop)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        self.emulator.wait_for_port(emulator_port)
        self._create_queue()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            self.args.wsgi,
            "--bind",
            f"127.0.0.1:{server_port}",
            "--workers",
            str(self.args.workers),
            "--backlog",
            "4096",
            "--log-level",
            "warning",
            "--keep-alive",
            "75",
            "--timeout",
            "120",
        ]
        if self.args.threads > 1:
            argv += ["--worker-class", "gthread", "--threads", str(self.args.threads)]
        self.server = Service(
            "gunicorn", argv, self.env(config), self.workdir / "gunicorn.log"
        ).start()
        self.stack.callback(self.server.stop)
        self.server.wait_for_port(server_port)

    def _create_queue(self) -> None:
        from datetime import timedelta

        from google.cloud import tasks_v2

        from django_cloudtasks.transports import get_transport
        from django_cloudtasks.transports.fanout import shard_ids

        client = get_transport().client  # type: ignore[attr-defined]
        for queue_id in shard_ids(QUEUE, self.args.shards):
            client.create_queue(
                parent=f"projects/{PROJECT}/locations/{LOCATION}",
                queue=tasks_v2.Queue(
                    name=f"projects/{PROJECT}/locations/{LOCATION}/queues/{queue_id}",
                    rate_limits=tasks_v2.RateLimits(
                        max_dispatches_per_second=self.args.rate, max_concurrent_dispatches=5000
                    ),
                    retry_config=tasks_v2.RetryConfig(
                        max_attempts=100,
                        min_backoff=timedelta(seconds=0.05),
                        max_backoff=timedelta(seconds=1),
                    ),
                ),
            )

    def start_celery(self) -> None:
        """Empty the bench Redis database and start a prefork worker."""
        import redis

        from benchmarks import celery_bench

        redis.Redis.from_url(self.args.redis).flushdb()
        celery_bench.app.conf.broker_url = self.args.redis
        celery_bench.app.conf.result_backend = self.args.redis
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.celery_bench",
            "worker",
            "--concurrency",
            str(self.args.workers),
            "-P",
            "prefork",
            "-Q",
            celery_bench.QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ]
        self.celery = Service("celery", argv, self.env({}), self.workdir / "celery.log").start()
        self.stack.callback(self.celery.stop)

    # -- our cases ---------------------------------------------------------------------

    def _components(self) -> dict[str, list[int]]:
        assert self.server is not None and self.emulator is not None
        return {
            "server": self.server.processes(),
            "emulator": self.emulator.processes(),
            "postgres": processes_named("postgres", self.db["NAME"]),
            "submitter": [os.getpid()],
        }

    def run_ours(self, case: Case) -> Measurement:
        """Run one workflow through the emulator and gunicorn; measure it."""
        if case.kind == "persist":
            return self.run_persist(case)
        from django_cloudtasks.models import Workflow

        expression, expected = our_workflow(case)
        components = self._components()
        reset_peak([p for k in ("server", "emulator") for p in components[k]])
        cpu_before = {k: cpu_seconds(v) for k, v in components.items()}
        self.logs.mark()
        counter = Counter()
        from django.db import connection

        started_at = time.time()
        with connection.execute_wrapper(counter):
            result = expression.apply_async()
        workflow_id = result.workflow_id
        deadline = time.monotonic() + 60 + case.tasks * 0.1
        while True:
            row = Workflow.objects.filter(pk=workflow_id).values_list("status", "finished_at").get()
            if row[0] != "PENDING":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{case.name} did not finish in time")
            self.check_services()
            time.sleep(POLL_SECONDS)
        status, finished_at = row
        wall = finished_at.timestamp() - started_at
        if status != "SUCCESS" or result.get(timeout=10) != expected:
            raise RuntimeError(f"{case.name} ended {status} with {result.get(propagate=False)!r}")
        log = self._wait_for_logs(case.tasks)
        cpu = {k: cpu_since(cpu_before[k], cpu_seconds(v)) for k, v in self._components().items()}
        workers = (
            [p for p in self.server.processes() if p != self.server.pid] if self.server else []
        )
        emulator = self.emulator.processes() if self.emulator else []
        return Measurement(
            case=case.name,
            system="cloudtasks",
            tasks=case.tasks,
            wall=wall,
            queries=log.queries,
            submit_queries=counter.queries,
            requests=log.requests,
            rejected=log.rejected,
            worker_peak_mb=max((peak_rss_mb(p) for p in workers), default=0.0),
            total_peak_mb=sum(peak_rss_mb(p) for p in [*workers, *emulator]),
            cpu=cpu,
            request_seconds=log.request_seconds,
            db_seconds=log.db_seconds,
        )

    def _wait_for_logs(self, tasks: int) -> Any:
        """The request log once every delivery has written its line (a moment after)."""
        deadline = time.monotonic() + 10
        log = self.logs.read()
        while log.requests - log.rejected < tasks and time.monotonic() < deadline:
            time.sleep(0.02)
            log = self.logs.read()
        return log

    def run_persist(self, case: Case) -> Measurement:
        """Persist a canvas of ``case.size`` task nodes in this process; nothing runs.

        The canvas is a task, a group of ``size - 2`` and a callback, so that one root is
        dispatched, to the in-memory transport.
        """
        from django.conf import settings
        from django.db import connection
        from django.test import override_settings

        from benchmarks.cloudtasks_bench.tasks import noop, tsum
        from django_cloudtasks import group

        expression = noop.si(0) | group(noop.s() for _ in range(case.size - 2)) | tsum.s()
        with override_settings(CLOUDTASKS={**settings.CLOUDTASKS, "TRANSPORT": "memory"}):
            reset_peak([os.getpid()])
            before_mb = current_rss_mb()
            cpu_before = cpu_seconds([os.getpid()])
            counter = Counter()
            started = time.perf_counter()
            with connection.execute_wrapper(counter):
                expression.apply_async()
            wall = time.perf_counter() - started
            cpu = cpu_since(cpu_before, cpu_seconds([os.getpid()]))
            peak = peak_rss_mb(os.getpid())
        return Measurement(
            case=case.name,
            system="cloudtasks",
            tasks=case.size,
            wall=wall,
            queries=None,
            submit_queries=counter.queries,
            worker_peak_mb=max(0.0, peak - before_mb),
            total_peak_mb=peak,
            cpu={"submitter": cpu},
        )

    def check_services(self) -> None:
        """Raise when a service died."""
        for service in (self.emulator, self.server, self.celery):
            if service is not None:
                service.check()

    # -- Celery ------------------------------------------------------------------------

    def run_celery(self, case: Case) -> Measurement:
        """Run one workflow on the Celery worker; measure it."""
        from benchmarks import celery_bench

        assert self.celery is not None
        pids = self.celery.processes()
        children = [p for p in pids if p != self.celery.pid]
        components = {
            "worker": pids,
            "redis": processes_named("redis-server"),
            "submitter": [os.getpid()],
        }
        reset_peak(pids)
        cpu_before = {k: cpu_seconds(v) for k, v in components.items()}
        started = time.perf_counter()
        value = celery_bench.run(case.kind, case.size, timeout=60 + case.tasks * 0.1)
        wall = time.perf_counter() - started
        expected = our_expected(case)
        if value != expected:
            raise RuntimeError(f"Celery {case.name} returned {str(value)[:200]}")
        cpu = {k: cpu_since(cpu_before[k], cpu_seconds(v)) for k, v in components.items()}
        return Measurement(
            case=case.name,
            system="celery",
            tasks=case.tasks,
            wall=wall,
            worker_peak_mb=max((peak_rss_mb(p) for p in children), default=0.0),
            total_peak_mb=sum(peak_rss_mb(p) for p in pids),
            cpu=cpu,
        )

    def warm_up_celery(self) -> None:
        """Wait for the worker, then run a few tasks so every pool process is warm."""
        from benchmarks import celery_bench

        deadline = time.monotonic() + 60
        while True:
            self.check_services()
            try:
                celery_bench.noop.apply_async((0,)).get(timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        celery_bench.run("group", 4 * self.args.workers, timeout=30)
        celery_bench.run("chain", 10, timeout=30)

    def warm_up_ours(self) -> None:
        """Run a small group and chain so every worker has its connection open."""
        self.run_ours(Case("group", 4 * self.args.workers))
        self.run_ours(Case("chain", 10))


class Counter:
    """An execute wrapper counting the statements of this process."""

    def __init__(self) -> None:
        self.queries = 0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.queries += 1
        return execute(sql, params, many, context)


def our_workflow(case: Case) -> tuple[Any, Any]:
    """The canvas of ``case`` with the bench project's tasks, and its expected result."""
    from benchmarks.cloudtasks_bench.tasks import inc, noop, tsum
    from django_cloudtasks import chain, chord, group

    if case.kind == "chain":
        expression = chain(inc.si(0), *(inc.s() for _ in range(case.size - 1)))
    elif case.kind == "chord":
        expression = chord([noop.si(i) for i in range(case.size)], tsum.s())
    elif case.kind == "bounded":
        expression = group(noop.si(i) for i in range(case.size)).set(max_concurrency=case.limit)
    else:
        expression = group(noop.si(i) for i in range(case.size))
    return expression, our_expected(case)


def our_expected(case: Case) -> Any:
    """What the workflow of ``case`` returns."""
    if case.kind == "chain":
        return case.size
    if case.kind == "chord":
        return sum(range(case.size))
    return list(range(case.size))
