"""Flow control: the slots of concurrency keys, their lines of waiting nodes, rate limits.

A node with ``max_concurrency`` takes a slot of its key when it becomes ready and
gives it back when it finishes (success, failure for good, revocation); a retry keeps
it. A node that finds its key full waits in the database (state WAITING), and the
node that gives a slot back sends the longest-waiting node of that key in the same
transaction. A node with a ``rate_limit`` is sent with an ETA: the next start its
key's pace allows. Every statement comes from the store; this module decides.

The rows of the keys a transaction touches are updated last in that transaction and
in the order of their names, so that two transactions never wait on each other's
keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from canvas.compiler import RUN_KEY_PREFIX
from canvas.options import rate_per_second
from django_cloudtasks.conf import conf
from django_cloudtasks.constants import SLOT_STATES, NodeKind, State, WorkflowId
from django_cloudtasks.dispatch import dispatch_for, enqueue_on_commit
from django_cloudtasks.models import FlowKey, Node
from django_cloudtasks.policy import TaskPolicy, evaluate_key
from django_cloudtasks.registry import Task
from django_cloudtasks.store import Slots, get_store


def holds_slot(node: Node) -> bool:
    """True for a node whose key limits how many run at once (it takes a slot)."""
    return bool(node.flow_key) and node.options.get("max_concurrency") is not None


def is_limited(node: Node) -> bool:
    """True for a node with a concurrency limit or a rate limit."""
    return bool(node.flow_key)


def interval_of(options: Mapping[str, Any]) -> float | None:
    """Seconds between two starts that the ``rate_limit`` option allows, or None."""
    rate = options.get("rate_limit")
    return None if rate is None else 1 / rate_per_second(rate)


def flow_key(
    task: Task,
    options: Mapping[str, Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    input_rule: str = "none",
) -> str:
    """The key of a node's limits, given its merged ``options``; ``""`` for none.

    A ``concurrency_key`` option (set on the signature or a canvas) is the key itself;
    otherwise the task's own ``concurrency_key`` is evaluated with the node's arguments
    (without the parent's result it will receive, see ``input_rule``); a limit with
    neither counts per task (``task:<name>``). A key starting with ``@`` (a bounded
    group's) stays local to the run: :func:`run_key` completes it.

    Raises:
        ValueError: when the task's key function raises, a template names a missing
            argument, a node is given a group's bound while its task declares its own
            key, or a key comes without a limit.
        TypeError: when the key function returns something other than a string.
    """
    policy: TaskPolicy = task.policy
    limited = options.get("max_concurrency") is not None or options.get("rate_limit") is not None
    given = options.get("concurrency_key")
    if isinstance(given, str) and given.startswith(RUN_KEY_PREFIX) and policy.concurrency_key:
        raise ValueError(
            f"{task.name} declares its own concurrency_key, and a group bounds it with "
            "max_concurrency: a node has one concurrency limit; give the group a "
            "concurrency_key, or run the task outside the bounded group"
        )
    if given is None and policy.concurrency_key is not None:
        given = evaluate_key(
            policy.concurrency_key,
            f"concurrency_key of {task.name}",
            task.call_signature(),
            args,
            kwargs,
            input_rule,
            options.get("result_kwarg"),
        )
    if given is None:
        return f"task:{task.name}" if limited else ""
    if not limited:
        raise ValueError(
            f"the concurrency_key {given!r} of {task.name} needs max_concurrency or rate_limit"
        )
    return str(given)


def run_key(key: str, workflow_id: WorkflowId) -> str:
    """``key`` made local to workflow ``workflow_id`` when it starts with ``@``."""
    if key.startswith(RUN_KEY_PREFIX):
        return f"run:{workflow_id}:{key[len(RUN_KEY_PREFIX) :]}"[:255]
    return key


@dataclass
class Ledger:
    """The changes to keys one transaction makes, applied together by :func:`admit`.

    ``released`` counts slots given back per key, ``unwaited`` nodes that left a line
    (revoked while waiting); ``arriving`` are ready nodes with limits, each with
    whether its row is already stored (else the caller inserts it afterwards, with
    the state and ETA :func:`admit` gives it).
    """

    released: Counter[str] = field(default_factory=Counter)
    unwaited: Counter[str] = field(default_factory=Counter)
    arriving: list[tuple[Node, bool]] = field(default_factory=list)
    hints: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def release(self, node: Node, count: int = 1) -> None:
        """Give back the slot ``node`` holds."""
        self.released[node.flow_key] += count
        self.hints.setdefault(node.flow_key, node.options)

    def leave_line(self, node: Node) -> None:
        """``node`` no longer waits for a slot (it was revoked)."""
        self.unwaited[node.flow_key] += 1
        self.hints.setdefault(node.flow_key, node.options)

    def arrive(self, node: Node, stored: bool = True) -> None:
        """``node`` became ready and is limited: it takes a slot, waits, or is paced."""
        self.arriving.append((node, stored))
        self.hints.setdefault(node.flow_key, node.options)

    def __bool__(self) -> bool:
        return bool(self.released or self.unwaited or self.arriving)


def admit(ledger: Ledger, now: datetime | None = None) -> list[Node]:
    """Apply ``ledger``: give back and hand on slots, admit or line up arrivals, pace.

    Returns the nodes to send, in order: those taken from a line first (they waited
    longer), then the arrivals given a slot. Arrivals whose row is stored are updated
    in the database (WAITING, or their paced ETA); the others are changed in place
    for the caller to insert. Must run inside a transaction, after its other writes.
    """
    if not ledger:
        return []
    now = now or timezone.now()
    store = get_store()
    by_key: dict[str, list[tuple[Node, bool]]] = {}
    for node, stored in ledger.arriving:
        by_key.setdefault(node.flow_key, []).append((node, stored))
    keys = sorted(set(ledger.released) | set(ledger.unwaited) | set(by_key))
    send: list[Node] = []
    lined_up: list[Node] = []
    paced: list[tuple[Any, datetime]] = []
    for key in keys:
        arrivals = by_key.get(key, [])
        hint = ledger.hints.get(key, {})
        capacity = hint.get("max_concurrency")
        interval = interval_of(hint)
        if capacity is None and not ledger.released[key] and not ledger.unwaited[key]:
            # A rate limit alone: everyone goes, at its pace.
            if interval is None:
                send += [node for node, _ in arrivals]
                continue
            nodes = [node for node, _ in arrivals]
            # Where the store writes the stored nodes' ETAs with the pace, they need no
            # statement of their own.
            written = store.paces_nodes and all(stored for _, stored in arrivals)
            ids = [node.pk for node in nodes] if written else []
            after = store.pace(key, len(arrivals), interval, now, ids)
            flags = [(node, False) for node in nodes] if written else arrivals
            _pace(nodes, after, interval, now, flags, paced)
            send += nodes
            continue
        slots = store.take_slots(
            key,
            arriving=len(arrivals),
            released=ledger.released[key],
            unwaited=ledger.unwaited[key],
            capacity=None if capacity is None else int(capacity),
            interval=interval,
            now=now,
        )
        promoted = _promote(key, slots, now)
        granted = arrivals[: slots.granted]
        for node, stored in arrivals[slots.granted :]:
            node.state = State.WAITING
            if stored:
                lined_up.append(node)
        admitted = [*promoted, *(node for node, _ in granted)]
        if interval is not None and slots.next_start is not None and admitted:
            # Promoted nodes are stored; each arrival says whether it is.
            flags = [(n, True) for n in promoted] + granted
            count = slots.handed + slots.granted
            _pace(admitted, slots.next_start, interval, now, flags, paced, count)
        send += admitted
    if lined_up:
        Node.objects.filter(pk__in=[n.pk for n in lined_up]).update(state=State.WAITING)
    store.set_starts(paced)
    return send


def _promote(key: str, slots: Slots, now: datetime) -> list[Node]:
    """Take the nodes ``slots`` handed slots to out of ``key``'s line.

    Those the key's statement took already come first. A second look catches nodes
    that joined the line while this transaction waited for the key (PostgreSQL reads
    them only from the next statement on); slots no waiter could take go back.
    """
    count = slots.handed
    promoted = list(slots.promoted)
    if len(promoted) >= count:
        return promoted
    store = get_store()
    promoted += store.promote(key, count - len(promoted), now)
    if len(promoted) < count:
        promoted += store.promote(key, count - len(promoted), now)
    if len(promoted) < count:
        store.give_back(key, count - len(promoted), now)
    return promoted


def _pace(
    nodes: Sequence[Node],
    after: float,
    interval: float,
    now: datetime,
    flags: Sequence[tuple[Node, bool]],
    paced: list[tuple[Any, datetime]],
    count: int | None = None,
) -> None:
    """Give ``nodes`` the starts before ``after``, ``interval`` apart, oldest first."""
    count = len(nodes) if count is None else count
    first = after - count * interval
    stored = {id(node): is_stored for node, is_stored in flags}
    for i, node in enumerate(nodes):
        start = datetime.fromtimestamp(first + i * interval, tz=UTC)
        if start <= now:
            continue
        node.eta = max(filter(None, (node.eta, start)))
        if node.state in (State.QUEUED, State.SCHEDULED):
            node.state = State.SCHEDULED
        if stored.get(id(node), True):
            paced.append((node.pk, node.eta))


def end_revoked_run(node: Node) -> Ledger:
    """The run of ``node``, revoked while it ran, ended: its slot may go back.

    Only the first call for a run gives the slot back (a revoked node keeps its lease
    as the mark that it still holds one).
    """
    ledger = Ledger()
    if holds_slot(node):
        ended = Node.objects.filter(
            pk=node.pk, state=State.REVOKED, lease_until__isnull=False
        ).update(lease_until=None)
        if ended:
            ledger.release(node)
    return ledger


def release_abandoned(older_than: datetime) -> int:
    """Give back the slots of revoked nodes whose run stopped answering.

    A node revoked while it ran keeps its slot until its run ends; if its server died,
    the slot goes back once its lease expired before ``older_than``. Returns how many.
    """
    abandoned = Node.objects.filter(state=State.REVOKED, lease_until__lt=older_than).exclude(
        flow_key=""
    )
    released = 0
    for node in abandoned.only("id", "flow_key", "options", "state", "lease_until"):
        with transaction.atomic():
            ledger = end_revoked_run(node)
            if ledger:
                released += 1
                send_after_commit(admit(ledger))
    return released


def send_after_commit(nodes: Sequence[Node]) -> None:
    """Send ``nodes`` once the current transaction commits."""
    enqueue_on_commit([dispatch_for(n) for n in nodes])


def repair(now: datetime | None = None, stalled_for: float = 0.0) -> int:
    """Recount each key whose line has not moved for ``stalled_for`` seconds.

    The counters change with the nodes they count, in the same transactions, so this
    finds nothing to do unless rows were changed by other means; it is the sweeper's
    safety net, and it looks only at keys with nodes waiting whose row has not changed
    for that long. Each is recounted from its nodes, and its line gets the slots the
    count leaves free. Idle keys whose pace has passed are deleted. Returns how many
    waiting nodes were sent.
    """
    now = now or timezone.now()
    sent = 0
    stalled = FlowKey.objects.filter(
        waiting__gt=0, updated_at__lt=now - timedelta(seconds=stalled_for)
    )
    for key in list(stalled.values_list("key", flat=True)):
        with transaction.atomic():
            if FlowKey.objects.select_for_update().filter(key=key).first() is None:
                continue
            nodes = Node.objects.filter(flow_key=key).exclude(kind=NodeKind.BARRIER)
            running = nodes.filter(
                Q(state__in=SLOT_STATES) | Q(state=State.REVOKED, lease_until__isnull=False)
            ).count()
            line = nodes.filter(state=State.WAITING)
            FlowKey.objects.filter(key=key).update(running=running, waiting=line.count())
            sample = line.only("options", "flow_key").first()
            if sample is not None:
                promoted = admit_waiting(key, sample.options, now)
                sent += len(promoted)
                send_after_commit(promoted)
    idle = FlowKey.objects.filter(running__lte=0, waiting__lte=0)
    idle.filter(Q(next_start__isnull=True) | Q(next_start__lt=now.timestamp())).delete()
    return sent


@dataclass(frozen=True)
class FlowSweep:
    """What :func:`sweep_flow` did."""

    released: int = 0
    sent: int = 0


def sweep_flow(now: datetime | None = None, grace: float | None = None) -> FlowSweep:
    """The sweeper's part for flow control: abandoned slots go back, lines move on.

    ``grace`` (default ``SWEEP_GRACE``) is how long past its lease a revoked node's
    run counts as gone, and how long a key's line must have stood still to be
    recounted (see :func:`repair`).
    """
    now = now or timezone.now()
    grace = float(conf.SWEEP_GRACE if grace is None else grace)
    released = release_abandoned(now - timedelta(seconds=grace))
    return FlowSweep(released=released, sent=repair(now, stalled_for=grace))


def admit_waiting(key: str, options: Mapping[str, Any], now: datetime) -> list[Node]:
    """Hand the free slots of ``key`` to its line (after a recount)."""
    capacity = options.get("max_concurrency")
    slots = get_store().take_slots(
        key,
        capacity=None if capacity is None else int(capacity),
        interval=interval_of(options),
        now=now,
    )
    promoted = _promote(key, slots, now)
    interval = interval_of(options)
    if interval is not None and slots.next_start is not None and promoted:
        paced: list[tuple[Any, datetime]] = []
        flags = [(n, True) for n in promoted]
        _pace(promoted, slots.next_start, interval, now, flags, paced, slots.handed)
        get_store().set_starts(paced)
    return promoted
