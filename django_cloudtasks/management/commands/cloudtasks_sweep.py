"""``manage.py cloudtasks_sweep [--grace SECONDS]``: resend lost dispatches, send parked ETAs."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_cloudtasks.dispatch import sweep
from django_cloudtasks.engine import purge_expired, sweep_flow


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0")
    return number


class Command(BaseCommand):
    """Run :func:`django_cloudtasks.dispatch.sweep` once and report what it did."""

    help = (
        "Send again the nodes that were committed as ready but never reached Cloud Tasks "
        "(a crash between commit and enqueue, a transport outage), and send parked "
        "far-future ETAs that are now within Cloud Tasks' 30-day reach, and delete a few "
        "batches of workflows finished more than CLOUDTASKS['RESULT_EXPIRES'] ago. Resending a "
        "delivery that did arrive is answered ALREADY_EXISTS, so nothing runs twice. "
        "Run it every few minutes (cron, Cloud Scheduler). Exits 1 when some nodes could "
        "not be sent; they stay for the next sweep."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """``--grace``."""
        parser.add_argument(
            "--grace",
            type=_seconds,
            default=None,
            metavar="SECONDS",
            help="only resend nodes ready for longer than this "
            "(default: CLOUDTASKS['SWEEP_GRACE'], 300)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Sweep and print ``resent N, unparked N, parked N, failed N`` (and flow control's
        and retention's counts when they did something).

        Raises:
            CommandError: (exit status 1) when some nodes could not be sent.
        """
        report = sweep(grace=options["grace"])
        flow = sweep_flow(grace=options["grace"])
        purged = purge_expired()
        line = (
            f"resent {report.resent}, unparked {report.unparked}, parked {report.parked}, "
            f"failed {report.failed}"
        )
        if flow.released or flow.sent:
            line += f", slots released {flow.released}, waiting sent {flow.sent}"
        if purged.workflows:
            line += f", purged {purged.workflows} workflows ({purged.nodes} nodes)"
        self.stdout.write(line)
        if report.failed:
            raise CommandError(
                f"{report.failed} nodes could not be sent; they stay ready for the next sweep "
                "(see the django_cloudtasks.dispatch log for the cause)",
                returncode=1,
            )
