"""The DAG state machine: persist a workflow, complete, fail and revoke nodes.

Every transition is a conditional update, so concurrent and repeated deliveries
settle on one outcome. Advancing a finished node is one atomic statement that
decrements its children's counters, hands them its result and marks those that
reached zero as ready; it never looks at siblings, so a group join costs the same
whatever the size of the group.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

import canvas
from canvas import Expression, Signature
from django_cloudtasks import signals
from django_cloudtasks.bulk import insert_rows
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import (
    READY_STATES,
    WAITING_STATES,
    NodeKind,
    State,
    WorkflowStatus,
)
from django_cloudtasks.dispatch import cancel_on_commit, dispatch_for, enqueue_on_commit
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry
from django_cloudtasks.transports import Dispatch

logger = logging.getLogger("django_cloudtasks.engine")

#: Statement size limit for ``IN (...)`` lists (SQLite allows 32,766 parameters).
_CHUNK = 10_000
_RETURNING = (
    "id",
    "index",
    "kind",
    "state",
    "pending_parents",
    "task_name",
    "queue",
    "countdown",
    "eta",
    "retries",
    "children",
    "parents",
    "input_rule",
    "is_output",
    "options",
    "workflow_id",
)


#: Columns only needed for a node that became ready; the others return NULL for them,
#: so that a group member does not read back its join's list of every member.
_WHEN_READY = frozenset({"children", "parents", "options"})


def _returned(column: str) -> str:
    bare = column.strip('"`')
    if bare in _WHEN_READY:
        return f"CASE WHEN pending_parents = 0 THEN {column} END"
    return column


# -- persist -------------------------------------------------------------------------


def persist(expression: Expression, options: Mapping[str, Any]) -> Workflow:
    """Compile ``expression``, store it as a workflow and enqueue its roots after commit.

    ``options`` are run-wide: ``countdown``/``eta`` delay the whole canvas; the others
    (``queue``, ``expires``, retry settings...) are defaults for every task.

    Raises:
        NotRegistered: for a task name no ``@task`` registered.
        TypeError: when a node's arguments cannot bind to its function.
    """
    graph = canvas.compile(expression)
    for node in graph:
        if not node.is_barrier:
            check_binding(node.task_name, node.args, node.kwargs, node.input, node.options)
            check_size(node.task_name, node.args, node.kwargs)
    now = timezone.now()
    run_options = dict(options)
    not_before = _start_time(run_options, now)
    defaults = {k: v for k, v in run_options.items() if k not in ("countdown", "eta")}
    children = graph.children()
    workflow = Workflow(
        name=expression.describe()[:200],
        expression=expression.to_dict(),
        graph_version=graph.version,
        options=run_options,
        not_before=not_before,
        output_index=graph.output,
        size=len(graph),
        created_at=now,
    )
    rows: list[Node] = []
    ready: list[Node] = []
    for gnode in graph:
        node_options = {**_policy_options(gnode.task_name), **defaults, **gnode.options}
        row = Node(
            id=uuid.uuid4(),
            workflow=workflow,
            index=gnode.id,
            kind=NodeKind.BARRIER if gnode.is_barrier else NodeKind.TASK,
            task_name=gnode.task_name,
            path=gnode.path[:200],
            args=list(gnode.args),
            kwargs=dict(gnode.kwargs),
            options=node_options,
            input_rule=gnode.input,
            parents=list(gnode.parents),
            children=children[gnode.id],
            pending_parents=len(gnode.parents),
            is_output=gnode.id == graph.output,
            queue=node_options.get("queue") or _task_queue(gnode.task_name),
            countdown=float(node_options.get("countdown") or 0),
            eta=_parse_moment(node_options.get("eta")),
            created_at=now,
        )
        if not gnode.parents:
            row.ready_at = now
            if not gnode.is_barrier:
                row.eta = max(filter(None, (row.eta, not_before)), default=None)
                row.state = State.SCHEDULED if _due(row, now) > now else State.QUEUED
                ready.append(row)
        rows.append(row)
    with transaction.atomic():
        workflow.save(force_insert=True)
        insert_rows(Node, rows)
        dispatches = [dispatch_for(row) for row in ready]
        barriers = [_as_row(r) for r in rows if r.kind == NodeKind.BARRIER and not r.parents]
        if barriers:
            dispatches += advance(workflow.pk, [], now, barriers).dispatches
        enqueue_on_commit(dispatches)
    workflow.output_node = rows[graph.output]  # type: ignore[attr-defined]
    signals.workflow_created.send(Workflow, workflow=workflow)
    logger.info(
        "workflow created",
        extra={
            "workflow_id": str(workflow.pk),
            "nodes": len(rows),
            "workflow_name": workflow.name,
        },
    )
    return workflow


def check_binding(
    task_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    input_rule: str,
    options: Mapping[str, Any],
) -> None:
    """Check that a node's arguments bind to its function, counting its injected input.

    Raises:
        NotRegistered: when ``task_name`` is not registered.
        TypeError: naming the task and what is wrong with the arguments.
    """
    task = registry.get(task_name)
    call_args, call_kwargs = list(args), dict(kwargs)
    injected = input_rule == "prepend"
    if injected:
        name = options.get("result_kwarg")
        if name:
            call_kwargs[name] = None
        else:
            call_args.insert(0, None)
    try:
        task.call_signature().bind(*call_args, **call_kwargs)
    except TypeError as exc:
        hint = " (it receives its parent's result as first argument)" if injected else ""
        raise TypeError(f"{task_name}{tuple(args)!r}{hint}: {exc}") from None


def check_size(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments over ``MAX_ARGS_BYTES`` once encoded as JSON (0 or None: no limit).

    Raises:
        ValueError: naming the task, the size and the limit.
    """
    limit = conf.MAX_ARGS_BYTES
    if not limit:
        return
    encoded = json.dumps([list(args), dict(kwargs)], separators=(",", ":"), ensure_ascii=False)
    size = len(encoded.encode())
    if size > int(limit):
        raise ValueError(
            f"the arguments of {task_name!r} are {size} bytes of JSON, over MAX_ARGS_BYTES "
            f"({int(limit)}); store large data elsewhere and pass a reference"
        )


def _policy_options(task_name: str) -> dict[str, Any]:
    """Options a task's ``@task(...)`` sets for every node that runs it."""
    if not task_name or task_name not in registry:
        return {}
    policy = registry.get(task_name).policy
    options = dict(policy.options)
    if policy.expires is not None:
        options["expires"] = policy.expires
    if policy.dispatch_deadline is not None:
        options["dispatch_deadline"] = policy.dispatch_deadline
    return options


def _task_queue(task_name: str) -> str:
    if not task_name or task_name not in registry:
        return ""
    return registry.get(task_name).policy.queue or ""


def _start_time(options: Mapping[str, Any], now: datetime) -> datetime | None:
    moments = []
    if options.get("countdown"):
        moments.append(now + timedelta(seconds=float(options["countdown"])))
    eta = _parse_moment(options.get("eta"))
    if eta is not None:
        moments.append(eta)
    return max(moments, default=None)


def _parse_moment(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _due(node: Node, now: datetime) -> datetime:
    return node.due_at() or now


# -- complete and advance --------------------------------------------------------------


@dataclass(frozen=True)
class Take:
    """Claim one successor in the statement that advances it, to run it inline.

    ``index`` is the candidate child; it is taken only if it becomes ready, is due now
    and is on ``queue``. It is claimed as a delivery would claim it, under a lease of
    ``lease_seconds``, and marked with ``origin``, the node whose delivery runs it.
    """

    index: int
    queue: str
    lease_seconds: float
    origin: Any


def complete(node: Node, value: Any, attempt: int) -> list[Dispatch]:
    """Record ``value`` as ``node``'s result and advance its children.

    Must run inside a transaction; returns the dispatches to send after commit. If the
    node is no longer the one this attempt claimed (revoked while running, or taken
    over after its lease expired) the result is kept but nothing downstream starts.
    """
    return settle(node, value, attempt).dispatches


def settle(node: Node, value: Any, attempt: int, take: Take | None = None) -> Advanced:
    """:func:`complete`, and with ``take``, claim that successor in the same statement.

    On PostgreSQL recording the result and advancing the children is one statement
    (the advance only applies if the record did); elsewhere it is two.
    """
    now = timezone.now()
    if node.children and connection.vendor == "postgresql":
        done = (node.pk, attempt, value)
        advanced = advance(node.workflow_id, [(node.children, value)], now, done=done, take=take)
        if not advanced.done:
            _keep_result_of_revoked(node, value)
            return Advanced()
    else:
        recorded = Node.objects.filter(pk=node.pk, state=State.STARTED, attempts=attempt).update(
            state=State.SUCCESS, result=value, finished_at=now, lease_until=None
        )
        if not recorded:
            _keep_result_of_revoked(node, value)
            return Advanced()
        advanced = Advanced()
        if node.children:
            advanced = advance(node.workflow_id, [(node.children, value)], now, take=take)
    node.state, node.result = State.SUCCESS, value
    if node.is_output:
        _finish_workflow(node.workflow_id, WorkflowStatus.SUCCESS, now)
    return advanced


def _keep_result_of_revoked(node: Node, value: Any) -> None:
    Node.objects.filter(pk=node.pk, state=State.REVOKED).update(result=value)


@dataclass
class Advanced:
    """What advancing did: dispatches to send, the successor taken inline, if any."""

    dispatches: list[Dispatch] = field(default_factory=list)
    taken: Node | None = None
    done: bool = True


def advance(
    workflow_id: Any,
    work: Iterable[tuple[Sequence[int], Any]],
    now: datetime,
    barriers: Iterable[Mapping[str, Any]] = (),
    *,
    done: tuple[Any, int, Any] | None = None,
    take: Take | None = None,
) -> Advanced:
    """Hand each ``(children, value)`` to those children; return the ready dispatches.

    ``barriers`` are group joins ready to close. Joins that become ready on the way
    are closed too, iteratively: one statement each, whatever the size of the group.
    ``done`` (node id, attempt, result) records that node's success in the first
    statement, which then applies only if it did (PostgreSQL); ``take`` claims a
    successor there instead of dispatching it.
    """
    queue: deque[tuple[Sequence[int], Any, Mapping[str, Any] | None]] = deque(
        (children, value, None) for children, value in work
    )
    queue.extend((b["children"], None, b) for b in barriers)
    advanced = Advanced()
    first = True
    while queue:
        children, value, barrier = queue.popleft()
        rows = _advance_statement(
            workflow_id,
            children,
            value,
            barrier,
            now,
            done=done if first else None,
            take=take if first else None,
        )
        if first and done is not None and not rows:
            advanced.done = False
            return advanced
        first = False
        for row in rows:
            if barrier is not None and row["id"] == barrier["id"]:
                if row["is_output"]:
                    _finish_workflow(workflow_id, WorkflowStatus.SUCCESS, now)
            elif row["pending_parents"] != 0:
                continue
            elif row["state"] == State.STARTED and "taken" in row:
                advanced.taken = row["taken"]
            elif row["kind"] == NodeKind.TASK and row["state"] in (State.QUEUED, State.SCHEDULED):
                advanced.dispatches.append(_dispatch_from_row(row, now))
            elif row["kind"] == NodeKind.BARRIER and row["state"] == State.PENDING:
                queue.append((row["children"], None, row))
    return advanced


class _Statement:
    """SQL text and its parameters, built in step."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        self.sql.append(sql)
        self.params.extend(params)


def _advance_statement(
    workflow_id: Any,
    children: Sequence[int],
    value: Any,
    barrier: Mapping[str, Any] | None,
    now: datetime,
    done: tuple[Any, int, Any] | None = None,
    take: Take | None = None,
) -> list[dict[str, Any]]:
    """One statement: count a finished parent on each child and hand it its input.

    Children that reach zero become QUEUED (or SCHEDULED, with a delay). With a
    ``barrier``, the same statement also completes that group join: its result, and
    its children's input, is the list of its members' results, read in place. With
    ``done`` (PostgreSQL only), it first records that node's success and advances
    nothing unless that applied. With ``take``, the candidate child is claimed
    (STARTED) instead of queued, and returned whole under ``"taken"``.
    """
    pg = connection.vendor == "postgresql"
    qn = connection.ops.quote_name
    table, index = qn(Node._meta.db_table), qn("index")
    ids = (
        "(SELECT CAST(jsonb_array_elements_text(CAST(%s AS jsonb)) AS integer))"
        if pg
        else "(SELECT value FROM json_each(%s))"
    )
    now_db = Node._meta.get_field("ready_at").get_db_prep_value(now, connection)
    wf_db = Workflow._meta.pk.get_db_prep_value(workflow_id, connection)  # type: ignore[union-attr]
    st = _Statement()

    if barrier is None:
        is_barrier: tuple[Any, ...] = ("1 = 0",)
    else:
        is_barrier = ("id = %s", Node._meta.pk.get_db_prep_value(barrier["id"], connection))  # type: ignore[union-attr]

    def add_value() -> None:
        if barrier is not None and barrier["input_rule"] == "list" and barrier["parents"]:
            members = json.dumps(list(barrier["parents"]))
            if pg:
                st.add(
                    "(SELECT COALESCE(jsonb_agg(p.result ORDER BY p."
                    f"{index}), CAST('[]' AS jsonb)) FROM {table} p "
                    f"WHERE p.workflow_id = %s AND p.{index} IN {ids})",
                    wf_db,
                    members,
                )
            else:
                st.add(
                    f"(SELECT json_group_array(json(p.result)) FROM (SELECT result FROM {table} "
                    f"WHERE workflow_id = %s AND {index} IN {ids} ORDER BY {index}) p)",
                    wf_db,
                    members,
                )
        else:
            encoded = json.dumps(value if barrier is None else [])
            st.add("CAST(%s AS jsonb)" if pg else "%s", encoded)

    prep_pk = Node._meta.pk.get_db_prep_value  # type: ignore[union-attr]
    if done is not None:
        done_id, attempt, result = done
        st.add(
            f"WITH done AS (UPDATE {table} SET state = 'SUCCESS', result = CAST(%s AS jsonb), "
            "finished_at = %s, lease_until = NULL WHERE id = %s AND state = 'STARTED' "
            "AND attempts = %s RETURNING id) ",
            json.dumps(result),
            now_db,
            prep_pk(done_id, connection),
            attempt,
        )

    def add_taken() -> None:
        assert take is not None
        st.add(
            f"({index} = %s AND pending_parents = 1 AND state = 'PENDING' AND kind = 'task' "
            "AND countdown <= 0 AND (eta IS NULL OR eta <= %s) AND queue = %s)",
            take.index,
            now_db,
            take.queue,
        )

    st.add(f"UPDATE {table} SET pending_parents = CASE WHEN ")
    st.add(*is_barrier)
    st.add(" THEN pending_parents ELSE pending_parents - 1 END, input = CASE WHEN NOT (")
    st.add(*is_barrier)
    st.add(") AND input_rule = 'prepend' THEN ")
    add_value()
    st.add(" ELSE input END, ")
    if barrier is not None:
        st.add("result = CASE WHEN ")
        st.add(*is_barrier)
        st.add(" THEN ")
        add_value()
        st.add(" ELSE result END, finished_at = CASE WHEN ")
        st.add(*is_barrier)
        st.add(" THEN %s ELSE finished_at END, ", now_db)
    st.add("ready_at = CASE WHEN pending_parents = 1 OR ")
    st.add(*is_barrier)
    st.add(" THEN %s ELSE ready_at END, ", now_db)
    if take is not None:
        lease = Node._meta.get_field("lease_until").get_db_prep_value(
            now + timedelta(seconds=take.lease_seconds), connection
        )
        for column, then in (
            ("attempts", ("attempts + 1",)),
            ("started_at", ("%s", now_db)),
            ("lease_until", ("%s", lease)),
            ("inline_origin", ("%s", prep_pk(take.origin, connection))),
        ):
            st.add(f"{column} = CASE WHEN ")
            add_taken()
            st.add(f" THEN {then[0]} ELSE {column} END, ", *then[1:])
    st.add("state = CASE WHEN ")
    st.add(*is_barrier)
    st.add(" THEN 'SUCCESS' ")
    if take is not None:
        st.add("WHEN ")
        add_taken()
        st.add(" THEN 'STARTED' ")
    st.add(
        "WHEN pending_parents = 1 AND state = 'PENDING' AND kind = 'task' "
        "THEN (CASE WHEN countdown > 0 OR (eta IS NOT NULL AND eta > %s) "
        "THEN 'SCHEDULED' ELSE 'QUEUED' END) ELSE state END ",
        now_db,
    )
    st.add(f"WHERE workflow_id = %s AND ({index} IN {ids} OR ", wf_db, json.dumps(list(children)))
    st.add(*is_barrier)
    st.add(")")
    if done is not None:
        st.add(" AND EXISTS (SELECT 1 FROM done)")
    st.add(" RETURNING " + ", ".join(_returned(qn(c)) for c in _RETURNING))
    if take is not None:
        # Only the taken row is STARTED once updated: a child still counting parents
        # cannot have been claimed. (No parameters here: psycopg caches the parsing of
        # statements with at most 50.)
        for f in NODE_FIELDS:
            st.add(f", CASE WHEN state = 'STARTED' THEN {qn(str(f.column))} END")
    with connection.cursor() as cursor:
        cursor.execute("".join(st.sql), st.params)
        raw = cursor.fetchall()
    rows = []
    width = len(_RETURNING)
    for r in raw:
        row = _decode_row(r[:width])
        if take is not None and row["index"] == take.index and row["state"] == State.STARTED:
            row["taken"] = node_from_db(r[width:])
        rows.append(row)
    return rows


#: Every column of a node, in the order :func:`node_from_db` reads them back.
NODE_FIELDS = Node._meta.concrete_fields


_NODE_ATTNAMES = [f.attname for f in NODE_FIELDS]
_converters: dict[str, list[tuple[Any, list[Any]]]] = {}


def node_from_db(values: Sequence[Any]) -> Node:
    """A :class:`Node` from the raw values of every concrete column, in field order."""
    converters = _converters.get(connection.alias)
    if converters is None:
        converters = []
        for f in NODE_FIELDS:
            col = f.get_col(Node._meta.db_table)
            converters.append(
                (col, connection.ops.get_db_converters(col) + col.get_db_converters(connection))
            )
        _converters[connection.alias] = converters
    converted = []
    for (col, functions), value in zip(converters, values, strict=True):
        for convert in functions:
            value = convert(value, col, connection)
        converted.append(value)
    return Node.from_db(connection.alias, _NODE_ATTNAMES, converted)


def _decode_row(raw: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(_RETURNING, raw, strict=True))
    row["id"] = uuid.UUID(str(row["id"]))
    row["workflow_id"] = uuid.UUID(str(row["workflow_id"]))
    for key in ("children", "parents", "options"):
        if isinstance(row[key], str | bytes):
            row[key] = json.loads(row[key])
    row["is_output"] = bool(row["is_output"])
    eta = row["eta"]
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if eta is not None and timezone.is_naive(eta):
        eta = eta.replace(tzinfo=UTC)
    row["eta"] = eta
    return row


def _as_row(node: Node) -> dict[str, Any]:
    return {c: getattr(node, c) for c in _RETURNING}


def _dispatch_from_row(row: Mapping[str, Any], now: datetime) -> Dispatch:
    node = Node(
        id=row["id"],
        workflow_id=row["workflow_id"],
        task_name=row["task_name"],
        retries=row["retries"],
        queue=row["queue"],
        countdown=row["countdown"],
        eta=row["eta"],
        ready_at=now,
        options=row["options"],
    )
    return dispatch_for(node)


def _finish_workflow(workflow_id: Any, status: str, now: datetime) -> None:
    changed = Workflow.objects.filter(pk=workflow_id, status=WorkflowStatus.PENDING).update(
        status=status, finished_at=now
    )
    if changed:
        signals.workflow_finished.send(Workflow, workflow_id=workflow_id, status=status)
        logger.info("workflow %s", status.lower(), extra={"workflow_id": str(workflow_id)})


# -- failure ---------------------------------------------------------------------------


def fail(node: Node, error: Mapping[str, str], attempt: int | None) -> list[Dispatch]:
    """Record that ``node`` failed for good; fail everything downstream; run errbacks.

    Must run inside a transaction. Only the call that moves the node to FAILURE
    propagates and creates the error callbacks, so they run exactly once.
    """
    now = timezone.now()
    fields = {
        "error_type": error.get("type", "")[:200],
        "error_module": error.get("module", "")[:200],
        "error_message": error.get("message", ""),
        "error_traceback": error.get("traceback", ""),
    }
    claimed = Node.objects.filter(pk=node.pk)
    claimed = claimed.filter(attempts=attempt) if attempt is not None else claimed
    done = claimed.exclude(state__in=READY_STATES).update(
        state=State.FAILURE, finished_at=now, lease_until=None, **fields
    )
    if not done:
        return []
    downstream = descendants(node.workflow_id, node.children)
    if downstream:
        for chunk in _chunks(sorted(downstream)):
            Node.objects.filter(
                workflow_id=node.workflow_id, index__in=chunk, state__in=WAITING_STATES
            ).update(state=State.FAILURE, finished_at=now, **fields)
    _finish_workflow(node.workflow_id, WorkflowStatus.FAILURE, now)
    signals.node_failed.send(Node, node=node, error=error)
    return _create_errbacks(node, error, now)


def _create_errbacks(node: Node, error: Mapping[str, str], now: datetime) -> list[Dispatch]:
    callbacks = node.options.get("link_error") or []
    if not callbacks:
        return []
    workflow = Workflow.objects.select_for_update().get(pk=node.workflow_id)
    args, kwargs = node.call_arguments()
    payload = dict(kwargs)
    if node.task_name in registry:
        try:
            signature = registry.get(node.task_name).call_signature()
            payload = dict(signature.bind_partial(*args, **kwargs).arguments)
        except TypeError:
            pass
    info = {
        "original_task_id": str(node.pk),
        "original_task_name": node.task_name,
        "error": f"{error.get('type', 'Error')}: {error.get('message', '')}",
        "payload": payload,
    }
    rows = []
    for position, data in enumerate(callbacks):
        sig = Expression.from_dict(data)
        if not isinstance(sig, Signature):
            logger.warning("ignoring an error callback that is not a signature: %r", sig)
            continue
        rows.append(
            Node(
                id=uuid.uuid4(),
                workflow_id=node.workflow_id,
                index=workflow.size + position,
                kind=NodeKind.ERRBACK,
                task_name=sig.task_name,
                path=f"errback of {node.path or node.index}"[:200],
                args=list(sig.args),
                kwargs=dict(sig.kwargs),
                options=dict(sig.options),
                input_rule="none" if sig.immutable else "errback",
                input=info,
                errback_of=node,
                state=State.QUEUED,
                queue=sig.options.get("queue") or _task_queue(sig.task_name),
                ready_at=now,
                created_at=now,
            )
        )
    if rows:
        Workflow.objects.filter(pk=workflow.pk).update(size=workflow.size + len(callbacks))
        Node.objects.bulk_create(rows)
    return [dispatch_for(row) for row in rows]


def descendants(workflow_id: Any, children: Sequence[int]) -> set[int]:
    """Indices of every node reachable from ``children`` (inclusive)."""
    if not children:
        return set()
    edges = dict(
        Node.objects.filter(workflow_id=workflow_id)
        .exclude(kind=NodeKind.ERRBACK)
        .values_list("index", "children")
    )
    seen: set[int] = set()
    stack = list(children)
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        stack.extend(edges.get(index) or ())
    return seen


def _chunks(items: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- revocation ------------------------------------------------------------------------


def revoke_node(node_id: Any) -> list[str]:
    """Revoke a node and everything downstream of it; returns the revoked node ids.

    A node already running is marked REVOKED too: its result is kept when it ends,
    but nothing downstream starts. Waiting Cloud Tasks are deleted after commit.
    """
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node_id)
        indices = {node.index}
        if node.kind != NodeKind.ERRBACK:
            indices |= descendants(node.workflow_id, node.children)
        return _revoke(node.workflow_id, indices)


def revoke_workflow(workflow_id: Any) -> list[str]:
    """Revoke every unfinished node of a workflow; returns the revoked node ids."""
    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow_id)
        return _revoke(workflow_id, None)


def _revoke(workflow_id: Any, indices: set[int] | None) -> list[str]:
    now = timezone.now()
    nodes = Node.objects.filter(workflow_id=workflow_id).unfinished()
    if indices is not None:
        nodes = nodes.filter(index__in=sorted(indices))
    # Lock in index order, the order in which completions lock a node and then its
    # successors: taking the rows in any other order can deadlock with a completion
    # that holds a group's join and waits for the join's successor.
    victims = list(
        nodes.order_by("index")
        .select_for_update()
        .only("id", "workflow_id", "task_name", "retries", "queue", "state", "is_output")
    )
    if not victims:
        return []
    ids = [v.pk for v in victims]
    for chunk in range(0, len(ids), _CHUNK):
        Node.objects.filter(pk__in=ids[chunk : chunk + _CHUNK]).unfinished().update(
            state=State.REVOKED, finished_at=now, lease_until=None
        )
    if indices is None or any(v.is_output for v in victims):
        _finish_workflow(workflow_id, WorkflowStatus.REVOKED, now)
    cancel_on_commit(
        [
            dispatch_for(v)
            for v in victims
            if v.state in (State.QUEUED, State.SCHEDULED, State.RETRY) and v.task_name
        ]
    )
    signals.nodes_revoked.send(Node, workflow_id=workflow_id, node_ids=[str(i) for i in ids])
    return [str(i) for i in ids]


def is_revoked(node_id: Any) -> bool:
    """True when the node has been revoked (a task may check this while it runs)."""
    return Node.objects.filter(pk=node_id, state=State.REVOKED).exists()
