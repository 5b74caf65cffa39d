"""Persisting an expression: compile it, stream its nodes to the database, send its roots."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

import canvas
from canvas import Expression, Graph, GraphNode, Signature
from canvas.options import RUN_OPTIONS, merge_options
from django_cloudtasks import signals, telemetry
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import LINEAGE, NodeKind, State
from django_cloudtasks.dispatch import dispatch_for, enqueue_on_commit
from django_cloudtasks.engine.advance import advance
from django_cloudtasks.engine.flow import Ledger, admit, flow_key, is_limited, run_key
from django_cloudtasks.engine.join_shards import JoinShards
from django_cloudtasks.engine.lineage import Lineage
from django_cloudtasks.engine.unique import existing_run, fold, output_of, uniqueness
from django_cloudtasks.exceptions import EnqueueError
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.policy import (
    ERRBACK_PARAMETERS,
    check_binding,
    check_size,
    errback_arguments,
    parse_moment,
    start_time,
)
from django_cloudtasks.registry import policy_options, registry, task_queue
from django_cloudtasks.store import as_row, field_values, get_store
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports import get_transport

logger = get_logger("django_cloudtasks.engine")


@dataclass(frozen=True)
class Persisted:
    """A stored workflow and its output node, whose result is the workflow's result."""

    workflow: Workflow
    output: Node


def persist(expression: Expression, options: Mapping[str, Any]) -> Persisted:
    """Compile ``expression``, store it as a workflow and enqueue its roots after commit.

    ``options`` are run-wide: ``countdown``/``eta`` delay the whole canvas, ``name``
    names the workflow (default: the expression's description); the others
    (``queue``, ``expires``, retry settings...) are defaults for every task.

    Nodes with a concurrency limit take a slot of their key or wait in its line;
    rate-limited ones are paced (see :mod:`.flow`). With a ``unique_key`` (see
    :mod:`.unique`), a workflow already holding that key is returned instead, and a
    ``debounce`` folds this call into it while it has not started.

    Raises:
        NotRegistered: for a task name no ``@task`` registered.
        TypeError: when a node's arguments cannot bind to its function, or a key
            function returns something other than a string.
        ValueError: when a key function raises, or a key comes without a limit.
        EnqueueError: when the roots could not be sent; the workflow is saved (its id is
            the error's ``workflow_id``) and the sweeper sends them.
    """
    graph = canvas.compile(expression)
    check_graph(graph, options)
    now = timezone.now()
    run_options = dict(options)
    name = run_options.pop("name", None) or expression.describe()
    not_before = start_time(run_options, now)
    unique = uniqueness(expression, run_options)
    if unique is not None:
        existing = existing_run(unique.key, now)
        if existing is not None:
            if unique.debounce:
                fold(existing, graph, expression, unique.debounce, now)
            return Persisted(existing, output_of(existing))
        if unique.debounce:
            quiet = now + timedelta(seconds=float(unique.debounce))
            not_before = max(filter(None, (not_before, quiet)))
    skipped = ("countdown", "eta", *RUN_OPTIONS)
    defaults = {k: v for k, v in run_options.items() if k not in skipped}
    workflow = Workflow(
        name=str(name)[:200],
        expression=expression.to_dict(),
        graph_version=graph.version,
        options=run_options,
        not_before=not_before,
        output_index=graph.output,
        size=len(graph),
        created_at=now,
        unique_key=None if unique is None else unique.key,
        unique_until=None if unique is None else unique.until(now),
        traceparent=telemetry.hooks.traceparent(),
    )
    rows = build_rows(graph, workflow, defaults, now, not_before)
    workflow.size = rows.count  # with the shards of large joins
    try:
        with transaction.atomic():
            workflow.save(force_insert=True)
            ready = admit_roots(rows.ready, now)
            insert_and_send(workflow, rows, ready, now)
    except IntegrityError:
        # Another caller stored a workflow with the same unique key first.
        existing = None if unique is None else existing_run(unique.key, now)
        if unique is None or existing is None:
            raise
        if unique.debounce:
            fold(existing, graph, expression, unique.debounce, now)
        return Persisted(existing, output_of(existing))
    except EnqueueError as exc:
        # Committed, but the send failed: the sweeper sends the roots later.
        exc.workflow_id, exc.output = str(workflow.pk), rows.output
        _created(workflow, rows.count)
        raise
    _created(workflow, rows.count)
    return Persisted(workflow, rows.output)


def insert_and_send(workflow: Workflow, rows: NewNodes, ready: list[Node], now: datetime) -> None:
    """Insert ``rows`` (new nodes of ``workflow``) as they are built; send the ``ready``
    ones and close the joins that have no parents, after commit.

    Call inside the transaction that stores them.
    """
    get_store().insert(Node, rows.values())
    dispatches = [dispatch_for(row) for row in ready]
    barriers = [as_row(r) for r in rows.barriers]
    if barriers:
        dispatches += advance(workflow.pk, [], now, barriers).dispatches
    enqueue_on_commit(dispatches)


def _created(workflow: Workflow, size: int) -> None:
    signals.workflow_created.send(Workflow, workflow=workflow)
    logger.info(
        "workflow created",
        extra={"workflow_id": str(workflow.pk), "nodes": size, "workflow_name": workflow.name},
    )


def admit_roots(ready: list[Node], now: datetime, ledger: Ledger | None = None) -> list[Node]:
    """The rows ready at once that are sent now, before they are inserted.

    Rows with limits take a slot of their key, or wait in its line (they become
    WAITING), and are paced; the others all go. ``ledger`` may hold other changes of
    keys to make in the same statements. Must run inside the transaction that inserts
    the rows.
    """
    ledger = Ledger() if ledger is None else ledger
    free = []
    for row in ready:
        if is_limited(row):
            ledger.arrive(row, stored=False)
        else:
            free.append(row)
    return free + admit(ledger, now)


def check_graph(graph: Graph, options: Mapping[str, Any]) -> None:
    """Check every node of ``graph`` and every error callback before anything is stored.

    Raises:
        NotRegistered: for a task name no ``@task`` registered.
        TypeError: when a node's or an error callback's arguments cannot bind.
    """
    errbacks: dict[str, Any] = {}
    # Whether arguments bind depends on their number and keyword names only, not on
    # their values: the members of a group are checked once per shape.
    bound: set[tuple[Any, ...]] = set()
    size_limit = conf.MAX_ARGS_BYTES or 0
    for node in graph:
        if not node.is_barrier:
            task = registry.get(node.task_name)
            if not registry.known_at_startup(node.task_name):
                _warn_registered_late(task)
            shape = (
                node.task_name,
                len(node.args),
                tuple(node.kwargs),
                node.input,
                node.options.get("result_kwarg"),
            )
            if task.policy.typing and shape not in bound:
                bound.add(shape)
                check_binding(
                    node.task_name,
                    task.call_signature(),
                    node.args,
                    node.kwargs,
                    node.input,
                    node.options,
                )
            check_size(node.task_name, node.args, node.kwargs, size_limit)
            errbacks.update((json.dumps(d, sort_keys=True), d) for d in _errbacks(node.options))
    errbacks.update((json.dumps(d, sort_keys=True), d) for d in _errbacks(options))
    for data in errbacks.values():
        _check_errback(data)


@dataclass(frozen=True)
class NewNodes:
    """The rows of a graph's nodes, made one by one as they are inserted.

    Only the nodes worked on before the insert are model instances: the roots sent at
    once (``ready``), the ``output`` and the joins without parents (``barriers``). Their
    rows are read from those instances when inserted, so what was changed on them (a
    root waiting for a slot, a replacement's output gaining a child) is stored. The
    others are built from the graph by :meth:`values` and never held together; the
    shards of large joins come last.
    """

    count: int
    ready: list[Node]
    output: Node
    barriers: list[Node]
    held: Mapping[int, Node]
    make: Callable[[GraphNode], dict[str, Any]]
    graph: Graph
    shards: JoinShards
    workflow_id: Any
    now: datetime

    def values(self) -> Iterator[dict[str, Any]]:
        """The field values of every row, by attname, in index order."""
        held, make, of_join = self.held, self.make, self.shards.of_join
        joins: dict[int, tuple[str, str]] = {}
        for gnode in self.graph:
            node = held.get(gnode.id)
            values = make(gnode) if node is None else field_values(node)
            if gnode.id in of_join:
                joins[gnode.id] = (values["path"], values["queue"])
            yield values
        yield from self.shards.rows(self.workflow_id, joins, self.now)


def build_rows(
    graph: Graph,
    workflow: Workflow,
    defaults: Mapping[str, Any],
    now: datetime,
    not_before: datetime | None,
    base: int = 0,
) -> NewNodes:
    """The new rows of ``graph``'s nodes in ``workflow``, and those ready at once.

    Node ``i`` of the graph becomes the row of index ``base + i``; ``defaults`` are
    run options the nodes' own take precedence under (Celery's ``apply_async``
    options win over a signature's: callers put those in the nodes first). Each row
    records its lineage (Celery's ``parent_id``, ``group``, ``group_index`` and
    ``chord``) for ``self.request``.
    """
    children = graph.children()
    ids = [uuid.uuid4() for _ in graph.nodes]
    lineage = Lineage(graph, children, ids)
    shards = JoinShards(graph, base)
    workflow_id = workflow.pk

    # What the registry says of each task, asked once per task name, not once per node.
    known: dict[str, tuple[dict[str, Any], str]] = {}
    tasks: dict[str, Any] = {}

    def make(gnode: GraphNode) -> dict[str, Any]:
        if gnode.task_name not in known:
            known[gnode.task_name] = (policy_options(gnode.task_name), task_queue(gnode.task_name))
        own, queue = known[gnode.task_name]
        # Celery: the options given to apply_async() take precedence over the node's.
        node_options = {**own, **merge_options(gnode.options, defaults)}
        where = lineage.of(gnode.id)
        if where:
            node_options[LINEAGE] = where
        for name in RUN_OPTIONS:
            node_options.pop(name, None)
        key = ""
        if not gnode.is_barrier:
            if gnode.task_name not in tasks:
                tasks[gnode.task_name] = registry.get(gnode.task_name)
            key = flow_key(
                tasks[gnode.task_name], node_options, gnode.args, gnode.kwargs, gnode.input
            )
            key = run_key(key, workflow_id)
        return {
            "id": ids[gnode.id],
            "workflow_id": workflow_id,
            "index": base + gnode.id,
            "kind": NodeKind.BARRIER if gnode.is_barrier else NodeKind.TASK,
            "task_name": gnode.task_name,
            "path": gnode.path[:200],
            "args": list(gnode.args),
            "kwargs": dict(gnode.kwargs),
            "options": node_options,
            "input_rule": gnode.input,
            "parents": [base + p for p in gnode.parents],
            "children": shards.children(gnode.id, children[gnode.id]),
            "pending_parents": shards.counted(gnode.id, node_options, len(gnode.parents)),
            "is_output": base == 0 and gnode.id == graph.output,
            "queue": node_options.get("queue") or queue,
            "countdown": float(node_options.get("countdown") or 0),
            "eta": parse_moment(node_options.get("eta")),
            "flow_key": key,
            "created_at": now,
        }

    held: dict[int, Node] = {}
    ready: list[Node] = []
    barriers: list[Node] = []
    for gnode in graph:
        if gnode.parents and gnode.id != graph.output:
            continue
        row = held[gnode.id] = Node(**make(gnode))
        row.workflow = workflow
        if not gnode.parents:
            row.ready_at = now
            if gnode.is_barrier:
                barriers.append(row)
            else:
                row.eta = max(filter(None, (row.eta, not_before)), default=None)
                row.state = State.SCHEDULED if _due(row, now) > now else State.QUEUED
                ready.append(row)
    return NewNodes(
        len(graph) + len(shards),
        ready,
        held[graph.output],
        barriers,
        held,
        make,
        graph,
        shards,
        workflow_id,
        now,
    )


def _errbacks(options: Mapping[str, Any]) -> list[Any]:
    return list(options.get("link_error") or ())


def _check_errback(data: Any) -> None:
    """Refuse an error callback that is not a registered task's signature, or whose
    arguments would not bind in the form it is called in.

    Raises:
        TypeError: naming the callback.
        NotRegistered: for an unregistered task name.
    """
    sig = Expression.from_dict(data)
    if not isinstance(sig, Signature):
        raise TypeError(f"an error callback must be a task signature, got {sig.describe()}")
    signature = registry.get(sig.task_name).call_signature()
    args, kwargs = list(sig.args), dict(sig.kwargs)
    if not sig.immutable:
        info = dict.fromkeys(ERRBACK_PARAMETERS)
        args, kwargs = errback_arguments(signature, args, kwargs, info, (None, None, None))
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"error callback {sig!r}: {exc}") from None


def _due(node: Node, now: datetime) -> datetime:
    return node.due_at() or now


#: The tasks registered after startup that were enqueued and warned about, once each.
_warned_late: set[str] = set()


def _warn_registered_late(task: Any) -> None:
    """Log once that ``task`` is enqueued although servers may not know it."""
    if task.name in _warned_late or get_transport().delivers_in_process:
        return  # an in-process transport runs the task where it was registered
    _warned_late.add(task.name)
    logger.warning(
        "task %r is enqueued, but it was registered after startup (by %s): a server that "
        "has not imported that module answers its deliveries 404; define the task in, "
        "or import it from, an installed app's tasks.py",
        task.name,
        getattr(task.__wrapped__, "__module__", "?"),
    )
