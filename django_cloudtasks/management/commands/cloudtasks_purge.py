"""``manage.py cloudtasks_purge --older-than DAYS``: delete old finished workflows."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from django_cloudtasks.models import Node, Workflow


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
        "ago, with their nodes, a batch at a time. Unfinished workflows are never deleted."
    )
    requires_system_checks: list[str] = []  # only the database is needed

    def add_arguments(self, parser: CommandParser) -> None:
        """``--older-than``, ``--batch-size``, ``--dry-run``."""
        parser.add_argument(
            "--older-than",
            type=_days,
            required=True,
            metavar="DAYS",
            help="delete workflows finished more than DAYS ago (fractions allowed: 0.5)",
        )
        parser.add_argument(
            "--batch-size",
            type=_batch_size,
            default=500,
            metavar="N",
            help="workflows deleted per transaction (default 500)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Delete (or count) and print how many workflows and nodes."""
        cutoff = timezone.now() - timedelta(days=options["older_than"])
        old = Workflow.objects.finished_before(cutoff)
        when = timezone.localtime(cutoff).strftime("%Y-%m-%d %H:%M:%S %Z")
        if options["dry_run"]:
            workflows = old.count()
            nodes = Node.objects.filter(workflow__in=old.values("pk")).count()
            self.stdout.write(
                f"would delete {workflows} workflows ({nodes} nodes) finished before {when}"
            )
            return
        total = old.count() if options["verbosity"] >= 1 else 0
        workflows = nodes = 0
        while True:
            deleted, deleted_nodes = self._delete_batch(cutoff, options["batch_size"])
            if not deleted:
                break
            workflows, nodes = workflows + deleted, nodes + deleted_nodes
            if options["verbosity"] >= 1:
                # Progress goes to stderr, the summary to stdout (for scripts).
                of = f" of {total:,}" if total >= workflows else ""
                self.stderr.write(
                    f"  {workflows:,}{of} workflows deleted ({nodes:,} nodes) so far",
                    style_func=lambda text: text,
                )
        self.stdout.write(f"deleted {workflows} workflows ({nodes} nodes) finished before {when}")

    def _delete_batch(self, cutoff: Any, size: int) -> tuple[int, int]:
        """Delete up to ``size`` workflows finished before ``cutoff``; (workflows, nodes)."""
        old = Workflow.objects.finished_before(cutoff)
        with transaction.atomic():
            # Locked and filtered again on delete: a workflow an admin re-opens meanwhile
            # (retrying a failed node) is no longer finished, and is kept.
            ids = list(
                old.select_for_update().order_by("finished_at").values_list("pk", flat=True)[:size]
            )
            if not ids:
                return 0, 0
            _, per_model = old.filter(pk__in=ids).delete()
        return per_model.get(Workflow._meta.label, 0), per_model.get(Node._meta.label, 0)
