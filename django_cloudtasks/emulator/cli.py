"""Command line: ``python -m django_cloudtasks.emulator [--host H] [--port P] [--queue Q]``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .emulator import CloudTasksEmulator
from .names import is_queue_name


def _queue_name(value: str) -> str:
    if not is_queue_name(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not projects/PROJECT/locations/LOCATION/queues/QUEUE"
        )
    return value


def build_parser(prog: str = "python -m django_cloudtasks.emulator") -> argparse.ArgumentParser:
    """The argument parser (a Django management command may reuse it)."""
    parser = argparse.ArgumentParser(prog=prog, description="Local Cloud Tasks v2 emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8123, help="gRPC port (0 picks a free one)")
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        type=_queue_name,
        metavar="projects/P/locations/L/queues/Q",
        help="create this queue at start (repeatable)",
    )
    parser.add_argument(
        "--no-auto-create-queues",
        dest="auto_create_queues",
        action="store_false",
        help="answer NOT_FOUND for tasks on unknown queues instead of creating them",
    )
    parser.add_argument("--oidc-issuer", default=None, help="iss claim of minted OIDC tokens")
    parser.add_argument(
        "--tombstone-seconds",
        type=float,
        default=3600.0,
        help="how long finished or deleted task names stay taken (default 3600)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the Cloud Scheduler clock this many times faster (60: an hourly job "
        "fires every minute)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every attempt")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; return the exit status (0 on a clean stop)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    emulator = CloudTasksEmulator(
        host=args.host,
        port=args.port,
        auto_create_queues=args.auto_create_queues,
        oidc_issuer=args.oidc_issuer,
        queues=args.queue,
        tombstone_seconds=args.tombstone_seconds,
        scheduler_time_scale=args.time_scale,
    )
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot start the emulator: {exc}", file=sys.stderr)
        return 1
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
    print(f"Cloud Tasks emulator listening on {emulator.address}", flush=True)
    print(f"OIDC certificates at {emulator.oidc_certs_url}", flush=True)
    try:
        while not stop_requested.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("Cloud Tasks emulator stopped", flush=True)
    return 0
