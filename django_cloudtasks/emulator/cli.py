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
from .options import EmulatorOptions, add_arguments


def build_parser(prog: str = "python -m django_cloudtasks.emulator") -> argparse.ArgumentParser:
    """The emulator's argument parser: :func:`add_arguments` plus ``--verbose``."""
    parser = argparse.ArgumentParser(prog=prog, description="Local Cloud Tasks v2 emulator.")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every attempt")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, then :func:`run`; return the exit status (0 on a clean stop)."""
    return run(EmulatorOptions.from_arguments(build_parser().parse_args(argv)))


def run(options: EmulatorOptions) -> int:
    """Run the emulator until SIGINT or SIGTERM; return the exit status (0 on a clean stop).

    It prints ``Cloud Tasks emulator listening on HOST:PORT`` first, then the URL of its
    OIDC certificates; 1 means it could not start (the port is taken, a bad queue name).
    """
    logging.basicConfig(
        level=logging.INFO if options.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    emulator = CloudTasksEmulator(options=options)
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
    if options.max_in_flight:
        print(
            f"At most {options.max_in_flight} deliveries in flight over all queues "
            "(--max-in-flight; 0 leaves only each queue's max_concurrent_dispatches, "
            "1,000 by default on Cloud Tasks)",
            flush=True,
        )
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
