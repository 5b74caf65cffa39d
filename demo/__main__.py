"""``python -m demo`` (``make demo``): the showcase over the emulator, a real server and SQLite."""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=(
            "Start the local Cloud Tasks emulator and the Django app (runserver on "
            "127.0.0.1, SQLite), run a showcase of workflows with live progress, and "
            "exit 0 when every one finished as expected."
        ),
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the showcase, keep the server and the emulator up (for the admin) until Ctrl-C",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port of the Django server on 127.0.0.1 (default: a free one)",
    )
    options = parser.parse_args(argv)
    _interrupt_on_signals()
    from demo.runner import run

    return run(keep_running=options.keep_running, port=options.port)


def _interrupt_on_signals() -> None:
    """Turn Ctrl-C and SIGTERM into KeyboardInterrupt, so the services are always stopped.

    (A shell starts background jobs with SIGINT ignored; SIGTERM would kill the demo
    without stopping the server it started.)
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
