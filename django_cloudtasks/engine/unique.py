"""Unique and debounced runs: at most one unfinished workflow per ``unique_key``.

The database holds the rule: a partial unique index on the key of unfinished
workflows, so that of any number of concurrent callers one stores its workflow and
the others, refused by the index, return that one. ``unique_for`` keeps the key
taken for a while even once the workflow finished. With ``debounce``, a call that
finds the workflow still waiting folds into it: its arguments replace the stored
ones and the start moves to ``debounce`` seconds from now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q

from canvas import Expression, Signature
from canvas.graph import Graph
from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.dispatch import cancel_on_commit, dispatch_for, enqueue_on_commit
from django_cloudtasks.engine.join_shards import SHARD_OF
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.policy import evaluate_key
from django_cloudtasks.registry import registry


@dataclass(frozen=True)
class Uniqueness:
    """The unique key of a run, how long it is held after the run, and its debounce."""

    key: str
    hold: float | None = None
    debounce: float | None = None

    def until(self, now: datetime) -> datetime | None:
        """When the key is released, at the latest, if the run finished by then."""
        return None if not self.hold else now + timedelta(seconds=self.hold)


def uniqueness(expression: Expression, options: Mapping[str, Any]) -> Uniqueness | None:
    """The uniqueness a run asks for: ``apply_async`` options, the expression's, the task's.

    A single task's ``@task(unique_key=...)`` is a template or a function of its
    arguments, as ``concurrency_key`` is.

    Raises:
        ValueError: for a ``debounce`` without a ``unique_key``, or a key function that
            raises.
        TypeError: for a key function that returns something other than a string.
    """
    own = expression.options

    def given(name: str) -> Any:
        return options[name] if options.get(name) is not None else own.get(name)

    key, hold, debounce = given("unique_key"), given("unique_for"), given("debounce")
    if isinstance(expression, Signature) and expression.task_name in registry:
        task = registry.get(expression.task_name)
        if key is None and task.policy.unique_key is not None:
            key = evaluate_key(
                task.policy.unique_key,
                f"unique_key of {task.name}",
                task.call_signature(),
                expression.args,
                expression.kwargs,
            )
        if hold is None:
            hold = task.policy.unique_for
    if key is None:
        if debounce:
            raise ValueError("debounce needs a unique_key: the calls it folds share one")
        return None
    return Uniqueness(str(key), hold, debounce)


def existing_run(key: str, now: datetime) -> Workflow | None:
    """The workflow holding ``key``: unfinished, or finished within its ``unique_for``."""
    held = Q(status=WorkflowStatus.PENDING) | Q(unique_until__gt=now)
    return Workflow.objects.filter(held, unique_key=key).order_by("-created_at").first()


def output_of(workflow: Workflow) -> Node:
    """The node whose result is ``workflow``'s."""
    return Node.objects.get(workflow=workflow, index=workflow.output_index)


def fold(
    workflow: Workflow, graph: Graph, expression: Expression, debounce: float, now: datetime
) -> bool:
    """Fold a debounced call into ``workflow`` if nothing of it has started yet.

    Every node takes the call's arguments and the start moves to ``debounce`` seconds
    from ``now``; the roots' Cloud Tasks are replaced by new ones at the new time.
    Returns False (changing nothing) when the workflow started, finished, or the call
    is a different canvas.
    """
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().filter(
            pk=workflow.pk, status=WorkflowStatus.PENDING
        )
        if not locked.exists():
            return False
        nodes = list(Node.objects.select_for_update().filter(workflow=workflow).order_by("index"))
        # The graph's nodes: not error callbacks, nor the shards of a large join.
        tasks = [n for n in nodes if n.kind != NodeKind.ERRBACK and SHARD_OF not in n.options]
        waiting = (State.PENDING, State.SCHEDULED, State.WAITING)
        if len(tasks) != len(graph) or any(
            n.state not in waiting or n.task_name != g.task_name
            for n, g in zip(tasks, graph, strict=True)
        ):
            return False
        start = now + timedelta(seconds=float(debounce))
        old, new = [], []
        for node, gnode in zip(tasks, graph, strict=True):
            node.args, node.kwargs = list(gnode.args), dict(gnode.kwargs)
            if not node.parents and node.kind == NodeKind.TASK:
                if node.state == State.SCHEDULED:
                    old.append(dispatch_for(node))
                node.eta = max(filter(None, (node.eta, start)))
                node.options = {**node.options, "deferred": node.options.get("deferred", 0) + 1}
                if node.state == State.SCHEDULED:
                    new.append(node)
        Node.objects.bulk_update(tasks, ["args", "kwargs", "eta", "options"])
        Workflow.objects.filter(pk=workflow.pk).update(
            not_before=start, expression=expression.to_dict()
        )
        cancel_on_commit(old)
        enqueue_on_commit([dispatch_for(n) for n in new])
    return True
