"""End-to-end benchmark: workflows through the emulator, gunicorn and PostgreSQL.

    python -m benchmarks.run [--cases chain100,chord1000,group1000,persist10000,bounded10000x100]
                             [--celery] [--scaling] [--workers N] [--threads T]
                             [--database postgresql://postgres@127.0.0.1:5432/cloudtasks_bench]

It (re)creates the database, starts the Cloud Tasks emulator and gunicorn serving
``benchmarks.cloudtasks_bench`` in processes of their own, submits each workflow from
this process with the real ``cloudtasks`` transport, waits for the workflow to succeed
and prints, per case, wall time, tasks per second, database queries per task (counted
in the servers) and peak memory. ``--celery`` runs the same workflows on a Celery 5
worker with Redis and prints the ratio of the throughputs. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from benchmarks.bench import DEFAULT_DATABASE, Bench, Case, recreate_database
from benchmarks.processes import machine
from benchmarks.report import Measurement, cost_table, results_table

DEFAULT_CASES = "chain100,chord1000,group1000,persist10000"
SCALING_GROUPS = (100, 1_000, 10_000)
SCALING_PERSIST = (1_000, 10_000, 100_000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help=f"comma-separated (default {DEFAULT_CASES})"
    )
    parser.add_argument(
        "--celery", action="store_true", help="also run chain/chord/group cases on Celery 5 + Redis"
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also run groups of 100, 1,000, 10,000 and persist 1k/10k/100k",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * cores,
        help="gunicorn workers and Celery concurrency (default 2 x cores)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per gunicorn worker (>1 uses gthread; default 1: sync)",
    )
    parser.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help="PostgreSQL URL; the database is dropped and recreated",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/11",
        help="Celery broker and backend; this Redis database is emptied",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case; the median is reported (default 1)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="the bench queue's max_dispatches_per_second (Cloud Tasks' maximum, 500)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="shards of the bench queue (each dispatching at --rate; default 1)",
    )
    parser.add_argument(
        "--wsgi",
        default="benchmarks.cloudtasks_bench.wsgi:application",
        help="the WSGI application gunicorn serves (to compare a modified build)",
    )
    parser.add_argument(
        "--emulator-module",
        default="django_cloudtasks.emulator",
        help="the module run with python -m as the emulator (to compare a modified build)",
    )
    parser.add_argument(
        "--synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="PostgreSQL synchronous_commit of the servers (default on)",
    )
    parser.add_argument(
        "--inline-seconds",
        type=float,
        default=None,
        metavar="S",
        help="CLOUDTASKS['INLINE_SECONDS'] of the servers (default: unset, the library's "
        "default; 0: every step via Cloud Tasks)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and the logs afterwards"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the gunicorn workers and the emulator with py-spy (collapsed stacks in DIR)",
    )
    args = parser.parse_args(argv)
    args.cases = [Case.parse(c) for c in args.cases.split(",") if c.strip()]
    return args


def median_of(runs: list[Measurement]) -> Measurement:
    """The run with the median wall time."""
    ordered = sorted(runs, key=lambda m: m.wall)
    return ordered[(len(ordered) - 1) // 2]


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into KeyboardInterrupt, so clean-up runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def versions() -> str:
    """Versions of what the benchmark compares."""
    import django
    import gunicorn

    parts = [f"Django {django.get_version()}", f"gunicorn {gunicorn.__version__}"]
    try:
        import celery

        parts.append(f"Celery {celery.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the tables. Returns the exit status."""
    args = parse_args(argv)
    cases = list(args.cases)
    if args.scaling:
        cases += [Case("group", n) for n in SCALING_GROUPS if Case("group", n) not in cases]
        cases += [Case("persist", n) for n in SCALING_PERSIST if Case("persist", n) not in cases]
    print(machine(), flush=True)
    print(
        f"{versions()}; gunicorn workers {args.workers} x {args.threads} thread(s); "
        f"queue rate {args.rate:g}/s x {args.shards} shard(s); "
        f"synchronous_commit {args.synchronous_commit}",
        flush=True,
    )
    bench: Bench | None = None
    try:
        with terminate_on_sigterm(), ExitStack() as stack:
            bench = Bench(args, stack)
            print(f"logs in {bench.workdir}", flush=True)
            bench.start_ours()
            bench.warm_up_ours()
            if args.profile:
                bench.start_profilers()
            for case in cases:
                runs = [bench.run_ours(case) for _ in range(args.repeat)]
                row = median_of(runs)
                bench.rows.append(row)
                print(
                    f"  cloudtasks {case.name}: {row.wall:.3f}s, {row.rate:,.0f} tasks/s",
                    flush=True,
                )
            if args.celery:
                bench.start_celery()
                bench.warm_up_celery()
                for case in cases:
                    if case.kind in ("persist", "bounded"):  # Celery has no bounded group
                        continue
                    runs = [bench.run_celery(case) for _ in range(args.repeat)]
                    row = median_of(runs)
                    bench.rows.append(row)
                    print(
                        f"  celery {case.name}: {row.wall:.3f}s, {row.rate:,.0f} tasks/s",
                        flush=True,
                    )
            rows = sorted(
                bench.rows,
                key=lambda r: (cases.index(Case.parse(r.case)), r.system != "cloudtasks"),
            )
            print()
            print(results_table(rows, args.markdown))
            print()
            print(cost_table(rows, args.markdown))
        if not args.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    except KeyboardInterrupt:
        print("interrupted; stopping the services", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            _close_transport()
            if not args.keep:
                _drop_database(bench.db)
    return 0


def _close_transport() -> None:
    try:
        from django_cloudtasks.transports import reset_transport

        reset_transport()
        from django.db import connections

        connections.close_all()
    except Exception:
        pass


def _drop_database(db: dict[str, Any]) -> None:
    try:
        recreate_database(db, drop_only=True)
    except Exception as exc:
        print(f"could not drop {db['NAME']}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
