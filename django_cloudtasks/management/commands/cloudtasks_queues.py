"""``manage.py cloudtasks_queues [--dry-run]``: create or update the queues of the settings
and of the tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud import tasks_v2

from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.management.queue_settings import (
    QueueSpec,
    configured_queues,
    current_value,
)
from django_cloudtasks.transports.cloudtasks import CloudTasksTransport


class Command(BaseCommand):
    """Make the Cloud Tasks queues match ``CLOUDTASKS['QUEUE']``, ``CLOUDTASKS['QUEUES']``
    and every queue a registered task names."""

    help = (
        "Create or update on Cloud Tasks (or on the emulator when EMULATOR_HOST is set) the "
        "default QUEUE, every queue of CLOUDTASKS['QUEUES'] and every other queue a task "
        "names with @task(queue=...) (with the service's defaults), with their rate limits "
        "(max_dispatches_per_second, max_concurrent_dispatches) and retry settings "
        "(max_attempts, max_retry_duration, min_backoff, max_backoff in seconds, "
        "max_doublings). Only the configured settings are changed. Exits 1 when a queue "
        "could not be created or updated."
    )
    # PROJECT and LOCATION are checked here; BASE_URL (which E002 also wants) is not needed.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """``--dry-run``."""
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="read the queues and print what would change; change nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Create, update or leave each queue, printing one line per queue.

        Raises:
            CommandError: for invalid settings, missing credentials, or (exit status 1,
                after the other queues were handled) a queue the service refused.
        """
        dry_run = options["dry_run"]
        transport = CloudTasksTransport()
        try:
            specs = configured_queues()
            paths = {spec.queue_id: transport.queue_path(spec.queue_id) for spec in specs}
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        target = f"the emulator at {conf.EMULATOR_HOST}" if conf.EMULATOR_HOST else "Cloud Tasks"
        if options["verbosity"] >= 2:
            self.stdout.write(f"{len(specs)} queues on {target}")
        failures = []
        try:
            for spec in specs:
                try:
                    line = self._apply(transport.client, spec, paths[spec.queue_id], dry_run)
                except (gexc.ServiceUnavailable, gexc.RetryError) as exc:
                    raise CommandError(f"cannot reach {target}: {exc}") from exc
                except gexc.GoogleAPICallError as exc:
                    failures.append(spec.queue_id)
                    self.stderr.write(f"{paths[spec.queue_id]}: failed: {exc.message}")
                else:
                    self.stdout.write(f"{paths[spec.queue_id]}: {line}")
        except auth_exceptions.GoogleAuthError as exc:
            raise CommandError(f"cannot reach {target}: {exc}") from exc
        finally:
            transport.close()
        if failures:
            raise CommandError(
                f"{len(failures)} queues could not be set up: {', '.join(failures)}", returncode=1
            )

    def _apply(
        self, client: tasks_v2.CloudTasksClient, spec: QueueSpec, path: str, dry_run: bool
    ) -> str:
        """Bring one queue in line; return what was (or would be) done."""
        try:
            current = client.get_queue(name=path, timeout=30)
        except gexc.NotFound:
            if dry_run:
                return "would create" + _settings_text(spec.settings)
            parent = path.rsplit("/queues/", 1)[0]
            client.create_queue(parent=parent, queue=spec.message(path), timeout=30)
            return "created" + _settings_text(spec.settings)
        paused = "" if current.state != tasks_v2.Queue.State.PAUSED else " (the queue is paused)"
        changed = spec.differences(current)
        if not changed:
            return "unchanged" + paused
        wanted = {key: spec.settings[key] for key in changed}
        if dry_run:
            return "would update" + _settings_text(wanted, current) + paused
        update = QueueSpec(spec.queue_id, wanted)
        client.update_queue(
            queue=update.message(path), update_mask={"paths": update.update_mask()}, timeout=30
        )
        return "updated" + _settings_text(wanted, current) + paused


def _settings_text(settings: Mapping[str, float], current: tasks_v2.Queue | None = None) -> str:
    if not settings:
        return " (service defaults)"
    parts = []
    for key, value in settings.items():
        if current is None:
            parts.append(f"{key}={value:g}")
        else:
            parts.append(f"{key} {current_value(current, key):g} -> {value:g}")
    return " (" + ", ".join(parts) + ")"
