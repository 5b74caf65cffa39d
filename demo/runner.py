"""The demo from start to end: services up, the showcase live, the results, services down."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from demo.services import ADMIN_PASSWORD, ADMIN_USER, ServiceError, Services

if TYPE_CHECKING:  # importing them needs Django set up, which Services does
    from demo.scenario import Run

#: The whole showcase must end within this many seconds.
BUDGET = 60.0
#: How often the live view is refreshed and the scenarios polled.
TICK = 0.2


def run(keep_running: bool = False, port: int = 0, out: TextIO = sys.stdout) -> int:
    """Run the showcase; 0 when every scenario finished as expected, 1 if not, 2 if the
    services could not start. With ``keep_running`` the services stay up until Ctrl-C.
    """
    began = time.monotonic()
    services = Services(port=port)
    ok, keep_files = False, True
    print("Starting the Cloud Tasks emulator, a SQLite database and Django's runserver.", file=out)
    try:
        with services:
            _print_services(services, out)
            runs = run_showcase(services, out)
            ok = report(runs, time.monotonic() - began, out)
            keep_files = not ok
            if keep_running:
                serve_until_interrupted(services, out)
    except ServiceError as exc:
        print(f"\nThe demo could not start its services: {exc}", file=out)
        return 2
    except KeyboardInterrupt:
        keep_files = False
        print("\nInterrupted; stopping the server and the emulator.", file=out)
        return 130
    finally:
        if keep_files and any(services.directory.iterdir()):
            print(f"The database and the server's log are kept in {services.directory}", file=out)
            if services.server_log.exists():
                print(f"The end of {services.server_log}:\n{services.server_log_tail()}", file=out)
        else:
            services.remove_files()
    return 0 if ok else 1


def run_showcase(services: Services, out: TextIO) -> list[Run]:
    """Start every scenario, then poll them and redraw the live view until all have ended."""
    from demo.progress import display_for
    from demo.scenario import Run
    from demo.showcase import SHOWCASE

    print("\nRunning the showcase:", file=out)
    display = display_for(out)
    runs = [
        Run(
            scenario,
            lambda: services.emulator.history,
            lambda: services.emulator.scheduler.history,
        )
        for scenario in SHOWCASE
    ]
    display.start()
    try:
        for item in runs:
            item.start()
        deadline = time.monotonic() + BUDGET
        while True:
            for item in runs:
                item.poll()
            if not services.server_running:
                for item in runs:
                    item.abandon("the Django server exited (see its log)")
            if time.monotonic() > deadline:
                for item in runs:
                    item.abandon(f"the showcase ran out of time ({BUDGET:g}s)")
            display.update(runs)
            if all(item.done for item in runs):
                return runs
            time.sleep(TICK)
    finally:
        display.close()


def report(runs: list[Run], elapsed: float, out: TextIO) -> bool:
    """Print each scenario's code and result, then the summary; True if all went as expected."""
    from demo.progress import Style

    style = Style(out)
    print("\nResults:", file=out)
    for item in runs:
        mark = style.render([style.mark(item)])
        print(f" {mark} {item.title} ({item.elapsed:.1f}s)", file=out)
        print(f"     {item.scenario.code}", file=out)
        if item.ok:
            print(f"     -> {item.outcome}", file=out)
        else:
            print(f"     -> {style.render([(f'NOT AS EXPECTED: {item.outcome}', '31')])}", file=out)
    passed = sum(1 for item in runs if item.ok)
    print(f"\n{passed}/{len(runs)} showcases finished as expected in {elapsed:.1f}s.", file=out)
    if passed < len(runs):
        failed = ", ".join(item.title for item in runs if not item.ok)
        print(f"Not as expected: {failed}.", file=out)
    return passed == len(runs)


def serve_until_interrupted(services: Services, out: TextIO) -> None:
    """Keep the services up until Ctrl-C (or until the server exits)."""
    print(
        "\nThe server and the emulator keep running; press Ctrl-C to stop them.\n"
        f"  admin     {services.base_url}/admin/  (user {ADMIN_USER}, password {ADMIN_PASSWORD})\n"
        f"  server    log in {services.server_log}",
        file=out,
        flush=True,
    )
    assert services.server is not None
    try:
        while services.server.poll() is None:
            time.sleep(0.5)
        print(f"The server exited with code {services.server.returncode}.", file=out)
    except KeyboardInterrupt:
        print("\nStopping the server and the emulator.", file=out)


def _print_services(services: Services, out: TextIO) -> None:
    print(
        f"  emulator  {services.emulator.address}  (Cloud Tasks v2 over gRPC, in this process)\n"
        f"  server    {services.base_url}  (manage.py runserver, in a child process)\n"
        f"  database  {services.directory / 'demo.sqlite3'}  (SQLite, WAL)",
        file=out,
        flush=True,
    )
