"""``manage.py cloudtasks_schedules sync|list|run-now|pause|resume|backfill|tick``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from django_cloudtasks.models import ScheduleState
from django_cloudtasks.schedules import runs
from django_cloudtasks.schedules.cloud import SchedulerJobs, SyncFailed
from django_cloudtasks.schedules.declarations import Schedule, ScheduleError, all_schedules
from django_cloudtasks.schedules.overview import overview

_CLOUD_ERRORS = (gexc.GoogleAPICallError, gexc.RetryError, auth_exceptions.GoogleAuthError)


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    """Manage the periodic workflows and their Cloud Scheduler jobs."""

    help = (
        "Periodic workflows. 'sync' creates, updates and deletes the Cloud Scheduler jobs "
        "(those whose id starts with SCHEDULE_JOB_PREFIX) so that they match the declared "
        "schedules; --dry-run prints the plan, --check exits 1 when the cloud has drifted. "
        "'list' shows each schedule's next and last run and drift; 'run-now', 'pause', "
        "'resume' and 'backfill' act on one schedule; 'tick' catches up missed slots."
    )
    requires_system_checks: list[str] = []  # sync reports bad schedules itself, all at once

    def add_arguments(self, parser: CommandParser) -> None:
        """The subcommands."""
        commands = parser.add_subparsers(dest="command", required=True)
        sync = commands.add_parser("sync", help="make the Cloud Scheduler jobs match the code")
        sync.add_argument("--dry-run", action="store_true", help="print the plan only")
        sync.add_argument(
            "--check", action="store_true", help="print the plan; exit 1 if anything differs"
        )
        listing = commands.add_parser("list", help="the schedules, their runs and drift")
        listing.add_argument(
            "--no-cloud", action="store_true", help="do not read the jobs (no drift column)"
        )
        for name, text in (
            ("run-now", "start a run now, whatever the overlap policy"),
            ("pause", "pause in the cloud and in the database"),
            ("resume", "resume in the cloud and in the database"),
        ):
            commands.add_parser(name, help=text).add_argument("name")
        backfill = commands.add_parser("backfill", help="start the slots of a time range")
        backfill.add_argument("name")
        backfill.add_argument("--from", dest="start", type=_moment, required=True)
        backfill.add_argument("--to", dest="end", type=_moment, required=True)
        commands.add_parser("tick", help="record missed slots, catch up, start buffered runs")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the subcommand.

        Raises:
            CommandError: for bad schedules, an unknown name, or a service error (exit 1).
        """
        command = options["command"]
        try:
            schedules = all_schedules()
            if command == "sync":
                self._sync(schedules, dry_run=options["dry_run"], check=options["check"])
            elif command == "list":
                self._list(schedules, cloud=not options["no_cloud"])
            elif command == "tick":
                report = runs.tick()
                self.stdout.write(
                    "started {started}, missed {missed}, buffered runs started {promoted}".format(
                        **report.as_json()
                    )
                )
                for name, error in report.errors.items():
                    self.stderr.write(f"{name}: {error}")
            else:
                schedule = _named(schedules, options["name"])
                if command == "run-now":
                    fired = runs.run_now(schedule)
                    assert fired.run is not None
                    self.stdout.write(f"{schedule.name}: started workflow {fired.run.workflow_id}")
                elif command in ("pause", "resume"):
                    self._pause(schedule, paused=command == "pause")
                else:
                    self._backfill(schedule, options["start"], options["end"])
        except ScheduleError as exc:
            raise CommandError(str(exc)) from exc

    def _sync(self, schedules: dict[str, Schedule], dry_run: bool, check: bool) -> None:
        jobs = SchedulerJobs()
        paused = ScheduleState.objects.filter(paused=True).values_list("name", flat=True)
        try:
            plan = jobs.plan(schedules, paused=list(paused))
            for change in plan:
                self.stdout.write(str(change))
            drifted = [c for c in plan if c.action != "unchanged"]
            if check:
                if drifted:
                    raise CommandError(
                        f"{len(drifted)} Cloud Scheduler jobs differ from the code", returncode=1
                    )
                return
            if dry_run:
                return
            applied = jobs.apply(plan)
        except SyncFailed as exc:
            raise CommandError(str(exc), returncode=1) from exc
        except _CLOUD_ERRORS as exc:
            raise CommandError(f"cannot read the Cloud Scheduler jobs: {exc}") from exc
        finally:
            jobs.close()
        self.stdout.write(f"applied {len(applied)} changes")

    def _list(self, schedules: dict[str, Schedule], cloud: bool) -> None:
        drift: dict[str, str] = {}
        if cloud and schedules:
            jobs = SchedulerJobs()
            try:
                paused = ScheduleState.objects.filter(paused=True).values_list("name", flat=True)
                drift = jobs.drift(schedules, paused=list(paused))
            except _CLOUD_ERRORS as exc:
                self.stderr.write(f"cannot read the Cloud Scheduler jobs: {exc}")
            finally:
                jobs.close()
        rows = overview(schedules.values(), timezone.now(), drift)
        header = ("NAME", "WHEN", "OVERLAP", "STATE", "NEXT RUN", "LAST RUN", "LAST STATE", "DRIFT")
        table = [header] + [
            (
                row.name,
                row.when,
                row.overlap,
                row.status,
                _short(row.next_run),
                _short(row.last_slot),
                row.last_outcome or "-",
                row.drift or "?",
            )
            for row in rows
        ]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for line in table:
            self.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))

    def _pause(self, schedule: Schedule, paused: bool) -> None:
        jobs = SchedulerJobs()
        try:
            found = jobs.set_paused(schedule.name, paused)
        except _CLOUD_ERRORS as exc:
            raise CommandError(f"Cloud Scheduler refused: {exc}", returncode=1) from exc
        finally:
            jobs.close()
        runs.set_paused(schedule.name, paused)
        word = "paused" if paused else "resumed"
        where = "in the cloud and the database" if found else "in the database (no job yet)"
        self.stdout.write(f"{schedule.name}: {word} {where}")

    def _backfill(self, schedule: Schedule, start: datetime, end: datetime) -> None:
        if end < start:
            raise CommandError("--to is before --from")
        fired = runs.backfill(schedule, start, end)
        for item in fired:
            self.stdout.write(f"{item.slot.isoformat()}  {item.outcome}")
        self.stdout.write(f"{len(fired)} slots")


def _named(schedules: dict[str, Schedule], name: str) -> Schedule:
    try:
        return schedules[name]
    except KeyError:
        known = ", ".join(sorted(schedules)) or "none"
        raise CommandError(f"unknown schedule {name!r} (known: {known})") from None


def _short(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
