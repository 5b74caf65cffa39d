"""``manage.py cloudtasks_purge [--older-than DAYS]``: delete old finished workflows."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_cloudtasks.engine import Purged, purge, result_expires
from django_cloudtasks.engine.retention import BATCH_SIZE, expired
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.models import Node

#: Characters of the progress bar drawn on a terminal.
BAR_WIDTH = 30


def _days(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days >= 0")
    return number


def _batch_size(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


class Command(BaseCommand):
    """Delete SUCCESS, FAILURE and REVOKED workflows (with their nodes) finished long ago."""

    help = (
        "Delete the workflows that finished (SUCCESS, FAILURE or REVOKED) more than DAYS "
        "ago (default: CLOUDTASKS['RESULT_EXPIRES']), with their nodes, a batch at a time, "
        "as the sweeper does. Unfinished workflows are never deleted."
    )
    requires_system_checks: list[str] = []  # only the database is needed

    def add_arguments(self, parser: CommandParser) -> None:
        """``--older-than``, ``--batch-size``, ``--dry-run``."""
        parser.add_argument(
            "--older-than",
            type=_days,
            default=None,
            metavar="DAYS",
            help="delete workflows finished more than DAYS ago (fractions allowed: 0.5; "
            "default: CLOUDTASKS['RESULT_EXPIRES'], 7)",
        )
        parser.add_argument(
            "--batch-size",
            type=_batch_size,
            default=BATCH_SIZE,
            metavar="N",
            help=f"workflows deleted per transaction (default {BATCH_SIZE})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Delete (or count) and print how many workflows and nodes.

        Raises:
            CommandError: without ``--older-than`` when ``RESULT_EXPIRES`` is None or
                invalid.
        """
        now = timezone.now()
        cutoff = now - self._age(options["older_than"])
        when = timezone.localtime(cutoff).strftime("%Y-%m-%d %H:%M:%S %Z")
        old = expired(cutoff, now)
        if options["dry_run"]:
            workflows = old.count()
            nodes = Node.objects.filter(workflow__in=old.values("pk")).count()
            self.stdout.write(
                f"would delete {workflows} workflows ({nodes} nodes) finished before {when}"
            )
            return
        report = None
        if options["verbosity"] >= 1:
            total = old.count()
            report = self._bar(total) if self.stderr.isatty() else self._lines(total)
        done = purge(cutoff, options["batch_size"], on_batch=report, now=now)
        if report is not None and done.batches and self.stderr.isatty():
            self.stderr.write("")  # end the bar's line
        self.stdout.write(
            f"deleted {done.workflows} workflows ({done.nodes} nodes) finished before {when}"
        )

    def _age(self, days: float | None) -> timedelta:
        if days is not None:
            return timedelta(days=days)
        try:
            expires = result_expires()
        except ConfigurationError as exc:
            raise CommandError(f"{exc}; or pass --older-than DAYS") from None
        if expires is None:
            raise CommandError(
                "CLOUDTASKS['RESULT_EXPIRES'] is None (retention is off): pass --older-than DAYS"
            )
        return expires

    def _lines(self, total: int) -> Any:
        """A line of running total per batch (stderr; the summary goes to stdout)."""

        def report(done: Purged) -> None:
            of = f" of {total:,}" if total >= done.workflows else ""
            self.stderr.write(
                f"  {done.workflows:,}{of} workflows deleted ({done.nodes:,} nodes) so far",
                style_func=lambda text: text,
            )

        return report

    def _bar(self, total: int) -> Any:
        """A progress bar redrawn in place after each batch, on a terminal."""

        def report(done: Purged) -> None:
            share = min(1.0, done.workflows / total) if total else 1.0
            filled = round(share * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stderr.write(
                f"\r[{bar}] {share:4.0%}  {done.workflows:,} of {max(total, done.workflows):,} "
                f"workflows deleted ({done.nodes:,} nodes)",
                ending="",
                style_func=lambda text: text,
            )
            self.stderr.flush()

        return report
