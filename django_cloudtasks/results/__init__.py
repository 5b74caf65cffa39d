"""Result handles: ``AsyncResult`` for a node, ``GroupResult`` for a group, ``ResultSet``
for any results together, ``WorkflowResult`` for a whole workflow.

Every property reads the database afresh; ``get()`` polls it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async

from django_cloudtasks.constants import CELERY_STATES, READY_STATES, NodeKind, State, WorkflowStatus
from django_cloudtasks.engine import progress_of, revoke_node, revoke_workflow
from django_cloudtasks.exceptions import (
    NodeNotFound,
    TaskRevokedError,
    rebuild_exception,
)
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.results.progress import Progress, workflow_progress
from django_cloudtasks.results.sets import ResultSet
from django_cloudtasks.results.waiting import (
    assert_will_not_block,
    await_final,
    has_finished,
    is_final,
    wait,
    waiting_on,
)

__all__ = [
    "AsyncResult",
    "GroupResult",
    "Progress",
    "ResultSet",
    "WorkflowResult",
    "result_for",
]


class AsyncResult:
    """The state and result of one node, by id (Celery's ``AsyncResult``).

    Raises:
        ValueError: when ``id`` is not a node id (a UUID).
    """

    def __init__(self, id: Any) -> None:
        try:
            self.id = str(uuid.UUID(str(id)))
        except ValueError:
            raise ValueError(f"{id!r} is not a task id (a UUID)") from None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and type(other) is type(self) and other.id == self.id

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.id))

    def _node(self) -> Node:
        node = Node.objects.filter(pk=self.id).first()
        if node is None:
            raise NodeNotFound(f"no node has the id {self.id}")
        return node

    @property
    def state(self) -> str:
        """Celery's state: PENDING (also while queued or scheduled), STARTED, RETRY,
        SUCCESS, FAILURE or REVOKED, or the state a running task set with
        ``self.update_state()``. An unknown id is PENDING."""
        row = Node.objects.filter(pk=self.id).values_list("state", "result").first()
        if row is None:
            return str(State.PENDING)
        state, result = row
        if state == State.STARTED:
            progress = progress_of(result)
            if progress is not None:
                return progress[0]
        return str(CELERY_STATES.get(state, state))

    status = state

    @property
    def detailed_state(self) -> str:
        """The node's own state, finer than Celery's: PENDING (waiting on its parents),
        SCHEDULED (sent, waiting for its ETA), QUEUED (sent), STARTED, RETRY, SUCCESS,
        FAILURE or REVOKED. An unknown id is PENDING."""
        state = Node.objects.filter(pk=self.id).values_list("state", flat=True).first()
        return str(state or State.PENDING)

    @property
    def workflow_id(self) -> str:
        """The id of the workflow this node belongs to."""
        return str(self._node().workflow_id)

    @property
    def workflow(self) -> WorkflowResult:
        """The whole workflow."""
        return WorkflowResult(self.workflow_id)

    @property
    def result(self) -> Any:
        """The return value on SUCCESS, the exception on FAILURE, a
        :class:`TaskRevokedError` on REVOKED, the retry reason in RETRY, the meta of
        ``self.update_state()`` while running; else (and for an unknown id) None."""
        node = Node.objects.filter(pk=self.id).first()
        return None if node is None else _value(node)

    info = result

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of a failure, else None."""
        node = Node.objects.filter(pk=self.id).first()
        return None if node is None else node.error_traceback or None

    def ready(self) -> bool:
        """True once SUCCESS, FAILURE or REVOKED."""
        return self.detailed_state in READY_STATES

    def successful(self) -> bool:
        """True on SUCCESS."""
        return self.detailed_state == State.SUCCESS

    def failed(self) -> bool:
        """True on FAILURE."""
        return self.detailed_state == State.FAILURE

    def get(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> Any:
        """Wait until ready and return the result.

        An id no node has yet is waited for, as Celery waits for a PENDING task.

        Raises:
            TimeoutError: after ``timeout`` seconds without a final state.
            RuntimeError: when called inside a running task (except under the eager
                transport), where waiting could hang: compose with ``|`` instead.
            The task's exception (rebuilt) on FAILURE, and :class:`TaskRevokedError`
                on REVOKED, when ``propagate`` is true.
        """
        assert_will_not_block()
        node = wait(self._fetch, is_final, timeout, interval, describe=waiting_on)
        return _outcome(node, propagate)

    wait = get

    def _fetch(self) -> Node | None:
        return Node.objects.filter(pk=self.id).first()

    # -- for async code: the same answers, the database read in a thread -------------

    async def aget(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> Any:
        """:meth:`get` for async code: waits with ``asyncio.sleep``, holding no thread.

        Raises:
            The errors of :meth:`get`.
        """
        assert_will_not_block()
        node = await await_final(self._fetch, is_final, timeout, interval, describe=waiting_on)
        return _outcome(node, propagate)

    async def astate(self) -> str:
        """:attr:`state` for async code."""
        return await sync_to_async(lambda: self.state)()

    astatus = astate

    async def aresult(self) -> Any:
        """:attr:`result` for async code."""
        return await sync_to_async(lambda: self.result)()

    async def aready(self) -> bool:
        """:meth:`ready` for async code."""
        return await sync_to_async(self.ready)()

    async def asuccessful(self) -> bool:
        """:meth:`successful` for async code."""
        return await sync_to_async(self.successful)()

    async def afailed(self) -> bool:
        """:meth:`failed` for async code."""
        return await sync_to_async(self.failed)()

    async def arevoke(self) -> list[str]:
        """:meth:`revoke` for async code."""
        return await sync_to_async(self.revoke)()

    def revoke(self) -> list[str]:
        """Revoke this node and everything downstream; returns the revoked node ids."""
        return revoke_node(self.id)

    @property
    def parent(self) -> AsyncResult | GroupResult | None:
        """The result this node received its input from, if any.

        A group's parent is what fed its members (the task before the group).
        """
        node = self._node()
        if node.kind == NodeKind.BARRIER and node.parents:
            node = Node.objects.get(workflow_id=node.workflow_id, index=node.parents[0])
        if not node.parents:
            return None
        parent = Node.objects.get(workflow_id=node.workflow_id, index=node.parents[0])
        return result_for(parent)

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        """The results that receive this node's output."""
        node = self._node()
        rows = Node.objects.filter(workflow_id=node.workflow_id, index__in=node.children)
        return [result_for(n) for n in rows]


class GroupResult(AsyncResult):
    """The results of a group's members, in member order (Celery's ``GroupResult``)."""

    def __repr__(self) -> str:
        return f"<GroupResult {self.id}: {len(self.results)} members>"

    @property
    def results(self) -> list[AsyncResult | GroupResult]:
        """One result per member (a nested group's is a ``GroupResult``)."""
        node = self._node()
        if node.input_rule != "list":
            return []
        members = {
            n.index: n
            for n in Node.objects.filter(workflow_id=node.workflow_id, index__in=node.parents)
        }
        return [result_for(members[i]) for i in node.parents]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(1 for r in self.results if r.successful())

    def ready(self) -> bool:
        """True once every member is final."""
        return all(r.ready() for r in self.results) or self.state in READY_STATES

    def successful(self) -> bool:
        """True when every member succeeded."""
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        """True when some member failed."""
        return any(r.failed() for r in self.results)

    def get(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> Any:
        """Wait for every member; return their results as a list (see ``AsyncResult.get``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for member in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(member.get(timeout=left, interval=interval, propagate=propagate))
        return values

    join = get

    async def aget(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> Any:
        """:meth:`get` for async code (see ``AsyncResult.aget``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for member in await sync_to_async(lambda: self.results)():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(await member.aget(timeout=left, interval=interval, propagate=propagate))
        return values

    ajoin = aget

    async def acompleted_count(self) -> int:
        """:meth:`completed_count` for async code."""
        return await sync_to_async(self.completed_count)()

    def revoke(self) -> list[str]:
        """Revoke every member (and so the join and what follows)."""
        revoked: list[str] = []
        for member in self.results:
            revoked += member.revoke()
        return revoked + revoke_node(self.id)


class WorkflowResult:
    """A whole workflow: its status, its nodes, its final result."""

    def __init__(self, id: Any) -> None:
        self.id = str(id)

    def __repr__(self) -> str:
        return f"<WorkflowResult {self.id}>"

    def _workflow(self) -> Workflow:
        return Workflow.objects.get(pk=self.id)

    @property
    def status(self) -> str:
        """PENDING, SUCCESS, FAILURE or REVOKED."""
        return str(self._workflow().status)

    @property
    def state(self) -> str:
        """Like ``status``, but STARTED once any node has started or finished."""
        status = self.status
        if status != WorkflowStatus.PENDING:
            return status
        started = Node.objects.filter(workflow_id=self.id).exclude(
            state__in=(State.PENDING, State.WAITING, State.SCHEDULED, State.QUEUED)
        )
        return State.STARTED if started.exists() else State.PENDING

    def progress(self) -> Progress:
        """Its nodes counted by state (``done``, ``total``, ``counts``), in one query.

        Cheap to poll: the count reads the ``(workflow, state)`` index, not the nodes.
        An unknown id has no nodes (``total`` 0).
        """
        return workflow_progress(self.id)

    def nodes(self) -> list[Node]:
        """Every node, in graph order (error callbacks last)."""
        return list(Node.objects.filter(workflow_id=self.id).order_by("index"))

    @property
    def output(self) -> AsyncResult | GroupResult:
        """The result of the expression's last step."""
        workflow = self._workflow()
        return result_for(Node.objects.get(workflow=workflow, index=workflow.output_index))

    @property
    def result(self) -> Any:
        """The final result once SUCCESS."""
        return self.output.result

    def ready(self) -> bool:
        """True once the workflow is final."""
        return self.status != WorkflowStatus.PENDING

    def get(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> Any:
        """Wait for the workflow to finish and return its final result.

        Raises:
            TimeoutError: after ``timeout`` seconds.
            The first failure's exception on FAILURE when ``propagate`` is true.
        """
        workflow = wait(self._workflow, has_finished, timeout, interval)
        return self._final(workflow, propagate)

    def _final(self, workflow: Workflow, propagate: bool) -> Any:
        if workflow.status == WorkflowStatus.FAILURE and propagate:
            first = (
                Node.objects.filter(workflow=workflow, state=State.FAILURE)
                .exclude(kind=NodeKind.ERRBACK)
                .order_by("finished_at", "index")
                .first()
            )
            if first is not None:
                raise _exception(first)
        return self.output.get(timeout=0, propagate=propagate)

    async def aget(
        self, timeout: float | None = None, interval: float = 0.2, propagate: bool = True
    ) -> Any:
        """:meth:`get` for async code (see ``AsyncResult.aget``)."""
        workflow = await await_final(self._workflow, has_finished, timeout, interval)
        return await sync_to_async(self._final)(workflow, propagate)

    async def astatus(self) -> str:
        """:attr:`status` for async code."""
        return await sync_to_async(lambda: self.status)()

    def revoke(self) -> list[str]:
        """Revoke every unfinished node."""
        return revoke_workflow(self.id)

    async def arevoke(self) -> list[str]:
        """:meth:`revoke` for async code."""
        return await sync_to_async(self.revoke)()


def result_for(node: Node) -> AsyncResult | GroupResult:
    """The right handle for ``node``: a ``GroupResult`` for a group join."""
    return GroupResult(node.pk) if node.kind == NodeKind.BARRIER else AsyncResult(node.pk)


def _value(node: Node) -> Any:
    if node.state == State.SUCCESS:
        return node.result
    if node.state in (State.FAILURE, State.RETRY):
        return _exception(node)
    if node.state == State.REVOKED:
        return _revoked(node)
    if node.state == State.STARTED:
        progress = progress_of(node.result)
        return progress[1] if progress is not None else None
    return None


def _exception(node: Node) -> BaseException:
    args = node.result if isinstance(node.result, list) else None
    return rebuild_exception(
        node.error_type or "Exception", node.error_message, node.error_module, args
    )


def _revoked(node: Node) -> TaskRevokedError:
    return TaskRevokedError(f"node {node.pk} ({node.task_name or node.kind}) was revoked")


def _outcome(node: Node, propagate: bool) -> Any:
    if node.state == State.SUCCESS:
        return node.result
    if not propagate:
        return _value(node)
    if node.state == State.FAILURE:
        raise _exception(node)
    raise _revoked(node)
