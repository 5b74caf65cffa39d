"""How long persisting a large canvas takes, and how much memory it needs, on PostgreSQL.

    python -m benchmarks.persist [--sizes 1000,10000,100000] [--repeat 3] [--memory]
        [--database postgresql://postgres@127.0.0.1:5432/cloudtasks_persist_bench]
        [--profile N]

Each run persists a task, a group of ``size - 2`` and a callback (``size`` nodes, the
``persistN`` case of :mod:`benchmarks.run`) with the memory transport, so nothing runs:
what is timed is ``apply_async()``, that is compiling, checking, storing the workflow
and its nodes, and committing. The database named in ``--database`` is dropped and
created anew. ``--memory`` measures instead, with :mod:`tracemalloc`, the peak of
Python memory allocated during ``apply_async()`` above what the expression already
held (tracemalloc slows everything down, so those runs are not timed). ``CPU s`` is
this process's CPU time (the median), the rest of the wall time is spent waiting,
mostly for the database. ``--profile N``
prints the N functions with the most time of their own in one more run.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import database_settings, recreate_database

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/cloudtasks_persist_bench"


def setup(url: str) -> None:
    """Create the database, configure Django for it (memory transport) and migrate."""
    db = database_settings(url)
    recreate_database(db)
    os.environ["CLOUDTASKS_BENCH_CONFIG"] = json.dumps({"db": db})
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.cloudtasks_bench.settings"
    import django
    from django.conf import settings

    django.setup()
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": "memory"}
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def expression(size: int) -> Any:
    """A task, a group of ``size - 2`` members and a callback: ``size`` nodes."""
    from benchmarks.cloudtasks_bench.tasks import noop, tsum
    from django_cloudtasks import group

    return noop.si(0) | group(noop.s() for _ in range(size - 2)) | tsum.s()


def empty_tables() -> None:
    """Remove the workflows and nodes stored so far."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE django_cloudtasks_node, django_cloudtasks_workflow CASCADE")
        cursor.execute("VACUUM ANALYZE django_cloudtasks_node")


def timed(size: int) -> tuple[float, float, int]:
    """Seconds one ``apply_async()`` of ``size`` nodes took (wall, this process's CPU),
    and its statements."""
    from django.db import connection

    statements = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    expr = expression(size)
    gc.collect()
    with connection.execute_wrapper(count):
        started, cpu = time.perf_counter(), time.process_time()
        expr.apply_async()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, len(statements)


def peak_mb(size: int) -> float:
    """Peak MiB allocated during one ``apply_async()`` above what the expression holds."""
    expr = expression(size)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    expr.apply_async()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    setup(args.database)
    timed(100)  # warm up: imports, connection, statement caches
    empty_tables()
    print(f"{'nodes':>9} {'median s':>9} {'min-max s':>13} {'us/node':>8} {'CPU s':>6}", end="")
    print(f" {'queries':>8}", end="")
    print(f" {'peak MiB':>9}" if args.memory else "")
    for size in (int(s) for s in args.sizes.split(",")):
        runs = []
        for _ in range(args.repeat):
            runs.append(timed(size))
            empty_tables()
        seconds = [s for s, _, _ in runs]
        median = statistics.median(seconds)
        cpu = statistics.median(c for _, c, _ in runs)
        line = (
            f"{size:>9,} {median:>9.3f} {min(seconds):>6.3f}-{max(seconds):<6.3f} "
            f"{median / size * 1e6:>8.1f} {cpu:>6.2f} {runs[0][2]:>8}"
        )
        if args.memory:
            line += f" {peak_mb(size):>9.1f}"
            empty_tables()
        print(line, flush=True)
        if args.profile:
            profile = cProfile.Profile()
            expr = expression(size)
            profile.runcall(expr.apply_async)
            empty_tables()
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
