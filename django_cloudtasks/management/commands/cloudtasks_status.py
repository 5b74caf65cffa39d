"""``manage.py cloudtasks_status [ID] [--json]``: a workflow as a tree, or overall counts.

The counts end with the flow-control keys in use: their running and waiting nodes,
their limit and their rate.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from django.utils import timezone

from django_cloudtasks.conf import conf
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.management.workflow_tree import as_dict, render_text
from django_cloudtasks.models import FlowKey, Node, Workflow, id_prefix_range


class Command(BaseCommand):
    """Show one workflow as a tree with states and timings, or counts of everything."""

    help = (
        "With a workflow id (or the id of one of its nodes, as AsyncResult.id gives), show "
        "the workflow as a tree: each task with its state, duration, retries and error, "
        "group joins as the group, error callbacks under the node that failed. Without an "
        "id, count workflows by status and nodes by state, and show the flow-control keys "
        "in use (running and waiting nodes, limit, rate)."
    )
    requires_system_checks: list[str] = []  # inspecting must work with a broken config

    def add_arguments(self, parser: CommandParser) -> None:
        """``[id]`` and ``--json``."""
        parser.add_argument(
            "id",
            nargs="?",
            help="a workflow id, or a node id (shows the node's workflow); the first "
            "characters are enough (the 8 the admin shows)",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        parser.add_argument(
            "--members",
            type=int,
            default=20,
            metavar="N",
            help="show at most N members of each group, then a count of the others by "
            "state (default 20; 0 shows all; --json always has all)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the report.

        Raises:
            CommandError: for an id that is not a UUID or names no workflow or node.
        """
        if options["id"]:
            workflow = self._find(options["id"])
            nodes = list(workflow.nodes.order_by("index").defer("result", "input"))
            if options["json"]:
                self._print_json(as_dict(workflow, nodes))
            else:
                self.stdout.write(render_text(workflow, nodes, members=options["members"]))
        else:
            counts = self._counts()
            if options["json"]:
                self._print_json(counts)
            else:
                self._print_counts(counts)

    def _find(self, raw: str) -> Workflow:
        try:
            key = uuid.UUID(raw)
        except ValueError:
            return self._find_by_start(raw)
        workflow = Workflow.objects.filter(pk=key).first()
        if workflow is None:
            node = Node.objects.select_related("workflow").filter(pk=key).first()
            if node is None:
                raise CommandError(f"no workflow or node has the id {raw}")
            workflow = node.workflow
        return workflow

    def _find_by_start(self, raw: str) -> Workflow:
        """The one workflow whose id, or one of whose nodes' id, starts with ``raw``."""
        ids = id_prefix_range(raw)
        if ids is None:
            raise CommandError(
                f"{raw!r} is not a workflow id: give a UUID, or its first characters "
                "(at least 4 hex digits, as the admin shows 8)"
            )
        workflows = set(Workflow.objects.filter(pk__range=ids).values_list("pk", flat=True)[:6])
        nodes = Node.objects.filter(pk__range=ids).values_list("workflow_id", flat=True)[:6]
        matches = sorted(workflows | set(nodes), key=str)
        if not matches:
            raise CommandError(f"no workflow or node has an id starting with {raw}")
        if len(matches) > 1:
            shown = ", ".join(str(pk) for pk in matches[:5])
            more = " and more" if len(matches) > 5 else ""
            raise CommandError(
                f"several workflows match {raw!r}: {shown}{more}; give more characters"
            )
        return Workflow.objects.get(pk=matches[0])

    def _counts(self) -> dict[str, Any]:
        workflows = dict.fromkeys(WorkflowStatus.values, 0)
        by_status = Workflow.objects.order_by().values_list("status").annotate(n=Count("pk"))
        workflows.update({status: n for status, n in by_status})
        nodes = dict.fromkeys(State.values, 0)
        by_state = Node.objects.order_by().values_list("state").annotate(n=Count("pk"))
        nodes.update({state: n for state, n in by_state})
        grace = float(conf.SWEEP_GRACE)
        now = timezone.now()
        return {
            "workflows": workflows,
            "nodes": nodes,
            "stuck": Node.objects.stuck(now - timedelta(seconds=grace)).count(),
            "parked": Node.objects.filter(parked=True, state=State.SCHEDULED).count(),
            "sweep_grace": grace,
            "keys": [_key_state(key, now) for key in FlowKey.objects.busy_or_paced(now)],
        }

    def _print_counts(self, counts: dict[str, Any]) -> None:
        for title, table in (("Workflows", counts["workflows"]), ("Nodes", counts["nodes"])):
            self.stdout.write(f"{title}: {sum(table.values())}")
            for name, n in table.items():
                self.stdout.write(f"  {name:<10} {n:>8}")
        self.stdout.write(
            f"Ready for over {counts['sweep_grace']:g}s and not started: {counts['stuck']}"
        )
        self.stdout.write(f"Parked beyond Cloud Tasks' 30-day horizon: {counts['parked']}")
        if counts["stuck"]:
            self.stdout.write(
                "  (if they were lost between commit and enqueue, "
                "`manage.py cloudtasks_sweep` sends them again)"
            )
        keys = counts["keys"]
        if keys:
            self.stdout.write(f"Flow-control keys in use: {len(keys)}")
            self.stdout.write(f"  {'key':<40} {'running':>8} {'waiting':>8} {'limit':>6}  rate")
            for key in keys:
                limit = "-" if key["max_concurrency"] is None else str(key["max_concurrency"])
                rate = "-" if key["rate_per_second"] is None else f"{key['rate_per_second']:g}/s"
                if key["next_start_in"]:
                    rate += f", next start in {key['next_start_in']:.3g}s"
                self.stdout.write(
                    f"  {key['key'][:40]:<40} {key['running']:>8} {key['waiting']:>8} "
                    f"{limit:>6}  {rate}"
                )

    def _print_json(self, data: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str))


def _key_state(key: FlowKey, now: datetime) -> dict[str, Any]:
    """A key's slots and pace, as the report shows them."""
    ahead = None if key.next_start is None else key.next_start - now.timestamp()
    return {
        "key": key.key,
        "running": key.running,
        "waiting": key.waiting,
        "max_concurrency": key.capacity,
        "rate_per_second": key.rate,
        "next_start_in": ahead if ahead is not None and ahead > 0 else None,
    }
