"""A workflow as a tree of its canvas (chains, chords, groups, tasks), for ``cloudtasks_status``.

The tree follows the nodes' canvas paths (``1.header.0``): a group is shown by its join
node with the members under it, a chain or chord that has no node of its own is a
heading, and error callbacks hang under the node whose failure fired them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.engine.join_shards import waited_on
from django_cloudtasks.models import Node, Workflow

#: States in which a node has not started yet.
_NOT_STARTED = (State.PENDING, State.WAITING, State.SCHEDULED, State.QUEUED)
#: Longest argument list or error message shown on one line.
_MAX_TEXT = 80


@dataclass
class Branch:
    """One entry of the tree: a node, or a chain/chord heading that has no node."""

    path: str
    node: Node | None = None
    children: list[Branch] = field(default_factory=list)
    errbacks: list[Branch] = field(default_factory=list)

    @property
    def segment(self) -> str:
        """The last part of the path: the position in a chain or group, header or body."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def kind(self) -> str:
        """``task``, ``group``, ``errback``, ``chain`` or ``chord``."""
        if self.node is not None:
            return {NodeKind.BARRIER: "group", NodeKind.ERRBACK: "errback"}.get(
                NodeKind(self.node.kind), "task"
            )
        segments = {child.segment for child in self.children}
        return "chord" if segments & {"header", "body"} else "chain"

    @property
    def order(self) -> int:
        """The lowest node index inside, so that branches keep the canvas order."""
        own = [self.node.index] if self.node is not None else []
        return min(own + [child.order for child in self.children], default=0)


def build_tree(nodes: list[Node]) -> Branch:
    """The tree of ``nodes`` (all nodes of one workflow); its root has the path ``""``."""
    branches: dict[str, Branch] = {"": Branch(path="")}

    def branch_at(path: str) -> Branch:
        if path not in branches:
            parent_path = path.rsplit(".", 1)[0] if "." in path else ""
            branches[path] = Branch(path=path)
            branch_at(parent_path).children.append(branches[path])
        return branches[path]

    by_id: dict[Any, Branch] = {}
    errbacks: list[Node] = []
    for node in nodes:
        if node.kind == NodeKind.ERRBACK:
            errbacks.append(node)
            continue
        branch = branch_at(node.path)
        branch.node = node
        by_id[node.pk] = branch
    for node in sorted(errbacks, key=lambda n: n.index):
        branch = Branch(path=node.path, node=node)
        by_id[node.pk] = branch
        owner = by_id.get(node.errback_of_id, branches[""])
        owner.errbacks.append(branch)
    for branch in branches.values():
        branch.children.sort(key=lambda b: b.order)
    return branches[""]


# -- text --------------------------------------------------------------------------------


def render_text(
    workflow: Workflow, nodes: list[Node], now: datetime | None = None, members: int = 0
) -> str:
    """The workflow as an indented tree, one line per node, with states and timings.

    ``members`` > 0 shows that many members of each group and every member with a
    failure inside, then one line counting the others by state (a group of 10,000
    stays readable, and no failure is hidden).
    """
    now = now or timezone.now()
    counts = Counter(str(node.state) for node in nodes)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines = [
        f"Workflow {workflow.pk}: {workflow.name or '(unnamed)'}",
        f"Status {workflow_state(workflow, nodes)}, {len(nodes)} nodes ({summary or 'none'})",
        _timing_line(workflow, now),
    ]
    view = _View(now, members)
    root = build_tree(nodes)
    if root.node is not None:
        lines.extend(view.render(root, "", ""))
    else:
        lines.extend(view.render_children(root, ""))
    return "\n".join(lines)


def _timing_line(workflow: Workflow, now: datetime) -> str:
    text = f"Created {_moment(workflow.created_at)}"
    if workflow.finished_at is not None:
        took = duration(workflow.finished_at - workflow.created_at)
        text += f", finished {_moment(workflow.finished_at)} (took {took})"
    else:
        text += f", running for {duration(now - workflow.created_at)}"
    if workflow.not_before is not None and workflow.not_before > now:
        text += f", starts at {_moment(workflow.not_before)}"
    return text


@dataclass
class _View:
    now: datetime
    members: int

    def render(self, branch: Branch, prefix: str, child_prefix: str) -> Iterator[str]:
        yield prefix + _describe(branch, self.now)
        yield from self.render_children(branch, child_prefix)

    def render_children(self, branch: Branch, prefix: str) -> Iterator[str]:
        shown: list[Branch | str] = list(branch.children)
        if branch.kind == "group" and 0 < self.members < len(branch.children):
            # Members with a failure inside are always shown; only the others are counted.
            rest = branch.children[self.members :]
            failed = [b for b in rest if any(n.state == State.FAILURE for n in _subtree_nodes(b))]
            failed_ids = {id(b) for b in failed}
            hidden = [b for b in rest if id(b) not in failed_ids]
            shown = [*branch.children[: self.members], *failed]
            if hidden:
                counts = Counter(str(n.state) for b in hidden for n in _subtree_nodes(b))
                summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                shown.append(f"... {len(hidden)} more ({summary})")
        entries = shown + list(branch.errbacks)
        for position, child in enumerate(entries):
            last = position == len(entries) - 1
            head, tail = ("`-- ", "    ") if last else ("|-- ", "|   ")
            if isinstance(child, str):
                yield prefix + head + child
            else:
                yield from self.render(child, prefix + head, prefix + tail)


def _subtree_nodes(branch: Branch) -> Iterator[Node]:
    if branch.node is not None:
        yield branch.node
    for child in branch.children + branch.errbacks:
        yield from _subtree_nodes(child)


def _describe(branch: Branch, now: datetime) -> str:
    node = branch.node
    if node is None:
        return f"{branch.segment} {branch.kind}" if branch.path else branch.kind
    position = "" if not branch.path or branch.kind == "errback" else f"{branch.segment} "
    parts = [position + _label(branch), str(node.state)]
    parts.extend(_details(node, now))
    return "  ".join(parts)


def _label(branch: Branch) -> str:
    node = branch.node
    assert node is not None
    if branch.kind == "group":
        return f"group of {len(node.parents)}"
    call = f"{node.task_name}({_arguments(node)})"
    return f"on error: {call}" if branch.kind == "errback" else call


def _arguments(node: Node) -> str:
    parts = [json.dumps(a, default=str) for a in node.args]
    parts += [f"{k}={json.dumps(v, default=str)}" for k, v in node.kwargs.items()]
    return _shorten(", ".join(parts))


def _details(node: Node, now: datetime) -> list[str]:
    details: list[str] = []
    state = node.state
    if node.started_at is not None:
        end = node.finished_at or now
        verb = "" if node.finished_at is not None else "running for "
        details.append(verb + duration(end - node.started_at))
    elif state == State.PENDING and node.pending_parents:
        counted = waited_on(node.index, node.parents, node.options)
        of = "shards" if counted is not node.parents else "parents"
        details.append(f"waiting on {node.pending_parents} of {len(counted)} {of}")
    elif state == State.SCHEDULED:
        due = node.due_at(node.workflow.not_before)
        if due is not None:
            details.append(f"{'parked, ' if node.parked else ''}due {_moment(due)}")
    elif state in (State.QUEUED, State.RETRY) and node.ready_at is not None:
        details.append(f"ready for {duration(now - node.ready_at)}")
    if node.retries:
        details.append(f"retries {node.retries}")
    if state == State.FAILURE and (node.error_type or node.error_message):
        error = _error_text(node)
        upstream = node.started_at is None and node.kind != NodeKind.ERRBACK
        details.append(f"not run, upstream failed: {error}" if upstream else f"error: {error}")
    return details


def _error_text(node: Node) -> str:
    lines = (node.error_message or "").strip().splitlines()
    message = lines[0] if lines else ""
    text = f"{node.error_type}: {message}" if node.error_type else message
    return _shorten(text)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _moment(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z") if value else ""


def duration(delta: timedelta) -> str:
    """``delta`` for a reader: ``12ms``, ``3.40s``, ``2m05s``, ``1h02m``."""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def workflow_state(workflow: Workflow, nodes: list[Node]) -> str:
    """The workflow's status, or STARTED once a node of an unfinished one has started."""
    if workflow.status != WorkflowStatus.PENDING:
        return str(workflow.status)
    started = any(node.state not in _NOT_STARTED for node in nodes)
    return State.STARTED if started else str(WorkflowStatus.PENDING)


# -- JSON --------------------------------------------------------------------------------


def as_dict(workflow: Workflow, nodes: list[Node]) -> dict[str, Any]:
    """The workflow and its tree as JSON-serializable data."""
    finished = workflow.finished_at
    return {
        "id": str(workflow.pk),
        "name": workflow.name,
        "status": str(workflow.status),
        "state": workflow_state(workflow, nodes),
        "created_at": _iso(workflow.created_at),
        "finished_at": _iso(finished),
        "duration": (finished - workflow.created_at).total_seconds() if finished else None,
        "counts": dict(Counter(str(node.state) for node in nodes)),
        "tree": _branch_dict(build_tree(nodes)),
    }


def _branch_dict(branch: Branch) -> dict[str, Any]:
    data: dict[str, Any] = {"path": branch.path, "kind": branch.kind}
    node = branch.node
    if node is not None:
        started, finished = node.started_at, node.finished_at
        data.update(
            id=str(node.pk),
            index=node.index,
            task_name=node.task_name,
            args=node.args,
            kwargs=node.kwargs,
            state=str(node.state),
            queue=node.queue,
            retries=node.retries,
            attempts=node.attempts,
            ready_at=_iso(node.ready_at),
            eta=_iso(node.eta),
            parked=node.parked,
            started_at=_iso(started),
            finished_at=_iso(finished),
            duration=(finished - started).total_seconds() if started and finished else None,
            error=node.error_dict() if node.state == State.FAILURE else None,
        )
    data["children"] = [_branch_dict(child) for child in branch.children]
    data["errbacks"] = [_branch_dict(child) for child in branch.errbacks]
    return data


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
