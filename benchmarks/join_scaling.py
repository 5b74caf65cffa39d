"""The database's cost per member of a group, by group size, without HTTP or Cloud Tasks.

    python -m benchmarks.join_scaling [--sizes 1000,10000,100000] [--threads 4]
                                      [--synchronous-commit on|off]

Persists ``group(noop.si(i) for i in range(size))`` on a fresh PostgreSQL database with
the memory transport, then delivers every member through the run path
(``runner.deliver``: claim, run, record and advance) from ``--threads`` threads, each
with its own connection, as gunicorn workers would. Prints, per size, the wall time
and the CPU of the database's backends (from ``/proc``) per member: what a group join
costs the database as the group grows, the rest of the stack left out. Not part of
the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from benchmarks.bench import DEFAULT_DATABASE, database_settings, recreate_database
from benchmarks.processes import cpu_seconds, cpu_since, processes_named


def main(argv: list[str] | None = None) -> int:
    """Run the sizes; print one line each."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.join_scaling")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    db = database_settings(args.database)
    recreate_database(db)
    config = {"db": db, "synchronous_commit": args.synchronous_commit}
    os.environ["CLOUDTASKS_BENCH_CONFIG"] = json.dumps(config)
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.cloudtasks_bench.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "memory"}
    call_command("migrate", verbosity=0)
    print(f"{'members':>9} {'wall s':>8} {'ms/member':>10} {'pg cpu ms/member':>17}")
    try:
        run(200, args.threads, db["NAME"])  # warm up: connections, caches; not reported
        for size in [int(s) for s in args.sizes.split(",")]:
            wall, cpu = run(size, args.threads, db["NAME"])
            print(f"{size:>9,} {wall:>8.2f} {wall / size * 1e3:>10.3f} {cpu / size * 1e3:>17.3f}")
            sys.stdout.flush()
    finally:
        from django.db import connections

        connections.close_all()
        recreate_database(db, drop_only=True)
    return 0


def run(size: int, threads: int, name: str) -> tuple[float, float]:
    """Persist a group of ``size`` and deliver its members; wall and database CPU seconds."""
    from benchmarks.cloudtasks_bench.tasks import noop
    from django_cloudtasks import group
    from django_cloudtasks.models import Node, Workflow
    from django_cloudtasks.runner import deliver
    from django_cloudtasks.transports import get_transport

    result = group(noop.si(i) for i in range(size)).apply_async()
    get_transport().pending.clear()  # type: ignore[attr-defined]
    ids = list(
        Node.objects.filter(workflow_id=result.workflow_id, kind="task")
        .order_by("index")
        .values_list("pk", flat=True)
    )
    errors: list[BaseException] = []
    ready = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    close = threading.Event()

    def work(part: list[Any]) -> None:
        from django.db import connection as own

        own.ensure_connection()
        ready.wait()
        try:
            for node_id in part:
                deliver(node_id, task_name="bench_noop", retries=0)
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.wait()
        close.wait()
        own.close()

    workers = [threading.Thread(target=work, args=(ids[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    ready.wait()  # every thread's backend is up: its CPU is counted from here
    backends = processes_named("postgres", name)
    before = cpu_seconds(backends)
    started = time.perf_counter()
    done.wait()
    wall = time.perf_counter() - started
    cpu = cpu_since(before, cpu_seconds(backends))
    close.set()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    status = Workflow.objects.filter(pk=result.workflow_id).values_list("status", flat=True)[0]
    if status != "SUCCESS":
        raise RuntimeError(f"the group of {size} ended {status}")
    return wall, cpu


if __name__ == "__main__":
    sys.exit(main())
