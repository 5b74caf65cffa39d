"""A picture of a workflow's DAG as server-rendered SVG, laid out from its expression tree.

The tree comes from the nodes' ``path`` (``"header.0.1"``: where the compiler found each
step in the expression) and the group joins, which carry their group's path. A chain
stacks its members top to bottom; a group sets its members side by side inside a frame
and ends at its join (a diamond) at the bottom of the frame; nested groups nest their
frames. Every edge runs down from the bottom of a box to a horizontal lane in an empty
gap, along it, and down into the top of the next box; a box's column is empty below
its exits and above its entries, so no edge crosses a box, by construction.

A group too wide for the picture wraps its members into rows inside an inner band, and
edges go to and from that band. A group of more than :data:`COLLAPSE_ABOVE` members is
drawn as one box with a state bar and counts, with a link that expands it. Each error
callback sits to the right of the node it guards. No JavaScript is involved; each node
is a link to its admin page with a tooltip.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from django_cloudtasks.constants import NodeKind, State

#: Beyond this many nodes no picture is drawn (the node list is the better view).
MAX_NODES = 3000
#: The widest the picture gets, in SVG units; a wider group wraps its members.
MAX_WIDTH = 1200
#: A group with more members is drawn as one box until it is expanded.
COLLAPSE_ABOVE = 50
#: An expanded group of more plain tasks than this draws them as small squares.
DENSE_ABOVE = 200

_MARGIN = 16
_LEGEND_HEIGHT = 34
_BOX_W, _BOX_H = 156, 50
_DENSE = 14
_FONT = 11
_GAP_Y = 30  # between the members of a chain: room for the edge's lane and arrowhead
_GAP_X = 16  # between the members of a group
_ROW_GAP = 12  # between the rows of a wrapped group
_PAD = 8  # inside a frame
_TOP_PAD = 14  # inside a frame, above the members
_JOIN_R = 8  # half the diagonal of a join's diamond
_JOIN_AREA = 26 + 2 * _JOIN_R  # below a group's members: the lane, the join, the padding
_ERR_GAP = 26  # between a node and its error callback
_SUMMARY_W, _SUMMARY_H = 2 * _BOX_W + _GAP_X, 64

#: Fill and outline colour of each state.
STATE_COLOURS: dict[str, tuple[str, str]] = {
    State.PENDING: ("#f3f4f6", "#9ca3af"),
    State.SCHEDULED: ("#ede9fe", "#7c3aed"),
    State.QUEUED: ("#bfdbfe", "#2563eb"),
    State.STARTED: ("#fde68a", "#d97706"),
    State.RETRY: ("#fed7aa", "#ea580c"),
    State.SUCCESS: ("#bbf7d0", "#16a34a"),
    State.FAILURE: ("#fecaca", "#dc2626"),
    State.REVOKED: ("#d1d5db", "#374151"),
}
#: A node marked failed because a node upstream of it failed (it never ran).
UPSTREAM_FAILURE_COLOURS = ("#fff1f2", "#f87171")
#: The order of a collapsed group's state bar and counts: what is done comes first.
_BAR_ORDER = (
    State.SUCCESS,
    State.FAILURE,
    State.REVOKED,
    State.STARTED,
    State.RETRY,
    State.QUEUED,
    State.SCHEDULED,
    State.PENDING,
)

TASK, CHAIN, GROUP = "task", "chain", "group"


@dataclass(eq=False)
class _Item:
    """One part of the expression tree: a task, a chain or a group, and its place."""

    kind: str
    path: str
    node: Any = None  # the task of a TASK, the join of a GROUP
    members: list[_Item] = field(default_factory=list)
    errbacks: list[Any] = field(default_factory=list)
    collapsed: bool = False
    wrapped: bool = False
    dense: bool = False
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    band: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # a wrapped group's
    rows: list[list[_Item]] = field(default_factory=list)


@dataclass(frozen=True)
class _Port:
    """Where an edge leaves (bottom centre) or enters (top centre) a box."""

    x: float
    y: float
    ref: str


class _NoTree(Exception):
    """The nodes' paths do not describe one expression tree (old or damaged rows)."""


def tree(nodes: Sequence[Any]) -> _Item:
    """The expression tree of a workflow's nodes, from their paths and group joins.

    Raises:
        ValueError: when the paths do not account for every node exactly once.
    """
    try:
        return _build_tree(nodes, ())
    except _NoTree as exc:
        raise ValueError(str(exc)) from None


def _build_tree(nodes: Sequence[Any], expanded: Collection[str]) -> _Item:
    tasks: dict[str, Any] = {}
    joins: dict[str, Any] = {}
    errbacks: dict[Any, list[Any]] = {}
    for node in nodes:
        if node.kind == NodeKind.ERRBACK:
            errbacks.setdefault(getattr(node, "errback_of_id", None), []).append(node)
            continue
        table = joins if node.kind == NodeKind.BARRIER else tasks
        if node.path in table:
            raise _NoTree(f"two nodes share the path {node.path!r}")
        table[node.path] = node
    below: dict[str, set[str]] = {}
    for path in (*tasks, *joins):
        while path:
            parent, _, segment = path.rpartition(".")
            below.setdefault(parent, set()).add(segment)
            path = parent

    def build(path: str) -> _Item:
        segments = below.get(path, ())
        if path in tasks:
            if segments or path in joins:
                raise _NoTree(f"the task at {path!r} also contains other steps")
            node = tasks[path]
            return _Item(TASK, path, node, errbacks=errbacks.get(node.pk, []))
        ordered = sorted(segments, key=_segment_order)
        members = [build(f"{path}.{s}" if path else s) for s in ordered]
        if path in joins:
            item = _Item(GROUP, path, joins[path], members)
            item.collapsed = len(members) > COLLAPSE_ABOVE and path not in expanded
            return item
        if not members:
            raise _NoTree(f"nothing is at {path!r}")
        return members[0] if len(members) == 1 else _Item(CHAIN, path, None, members)

    root = build("")
    drawn = sum(1 for _ in _walk(root))
    if drawn != len(tasks) + len(joins):
        raise _NoTree("some nodes are not in the tree their paths describe")
    return root


def _segment_order(segment: str) -> tuple[int, int, str]:
    if segment.isdigit():
        return (0, int(segment), "")
    return (1, {"header": 0, "body": 1}.get(segment, 2), segment)


def _walk(item: _Item) -> Iterable[Any]:
    """The task and join nodes of ``item`` (errbacks aside)."""
    stack = [item]
    while stack:
        current = stack.pop()
        if current.node is not None:
            yield current.node
        stack.extend(current.members)


# -- sizes and positions ------------------------------------------------------------------


def _measure(item: _Item) -> None:
    """Set ``w`` and ``h`` of ``item`` and everything inside it, bottom-up."""
    if item.kind == TASK:
        side_w = _DENSE if item.dense else _BOX_W
        item.w = side_w + len(item.errbacks) * (_ERR_GAP + side_w)
        item.h = _DENSE if item.dense else _BOX_H
        return
    if item.kind == CHAIN:
        for member in item.members:
            _measure(member)
        item.w = max(m.w for m in item.members)
        item.h = sum(m.h for m in item.members) + _GAP_Y * (len(item.members) - 1)
        return
    if item.collapsed:
        item.w = _SUMMARY_W + 2 * _PAD
        item.h = _TOP_PAD + _SUMMARY_H + _JOIN_AREA
        return
    plain = all(m.kind == TASK and not m.errbacks for m in item.members)
    for member in item.members:
        member.dense = plain and len(item.members) > DENSE_ABOVE
        _measure(member)
    if not item.members:
        item.w, item.h = _BOX_W / 2 + 2 * _PAD, _TOP_PAD + _JOIN_AREA
        return
    gap = 4 if item.members[0].dense else _GAP_X
    row_w = sum(m.w for m in item.members) + gap * (len(item.members) - 1)
    item.wrapped = row_w > MAX_WIDTH - 2 * _PAD
    if not item.wrapped:
        item.rows = [item.members]
        item.w = row_w + 2 * _PAD
        item.h = _TOP_PAD + max(m.h for m in item.members) + _JOIN_AREA
        return
    limit = MAX_WIDTH - 4 * _PAD
    item.rows = [[]]
    width = 0.0
    for member in item.members:
        if item.rows[-1] and width + gap + member.w > limit:
            item.rows.append([])
            width = 0.0
        width += member.w + (gap if item.rows[-1] else 0)
        item.rows[-1].append(member)
    row_gap = 4 if item.members[0].dense else _ROW_GAP
    inner_w = max(sum(m.w for m in row) + gap * (len(row) - 1) for row in item.rows)
    inner_h = sum(max(m.h for m in row) for row in item.rows) + row_gap * (len(item.rows) - 1)
    item.w = inner_w + 4 * _PAD
    item.h = _TOP_PAD + inner_h + 2 * _PAD + _JOIN_AREA


def _place(item: _Item, x: float, y: float) -> None:
    """Put ``item`` with its top-left corner at ``(x, y)``, and its parts inside it."""
    item.x, item.y = x, y
    if item.kind == CHAIN:
        top = y
        for member in item.members:
            _place(member, x + (item.w - member.w) / 2, top)
            top += member.h + _GAP_Y
        return
    if item.kind != GROUP or item.collapsed or not item.members:
        return
    gap = 4 if item.members[0].dense else _GAP_X
    if not item.wrapped:
        left = x + _PAD
        for member in item.members:
            _place(member, left, y + _TOP_PAD)
            left += member.w + gap
        return
    row_gap = 4 if item.members[0].dense else _ROW_GAP
    band_top = y + _TOP_PAD
    top = band_top + _PAD
    for row in item.rows:
        left = x + 2 * _PAD
        for member in row:
            _place(member, left, top)
            left += member.w + gap
        top += max(m.h for m in row) + row_gap
    band_h = top - row_gap + _PAD - band_top
    item.band = (x + _PAD, band_top, item.w - 2 * _PAD, band_h)


def _join_centre(item: _Item) -> tuple[float, float]:
    return item.x + item.w / 2, item.y + item.h - _PAD - _JOIN_R


def _summary_box(item: _Item) -> tuple[float, float, float, float]:
    return item.x + _PAD, item.y + _TOP_PAD, _SUMMARY_W, _SUMMARY_H


def _side(item: _Item) -> float:
    return _DENSE if item.dense else _BOX_W


def _entries(item: _Item) -> list[_Port]:
    """Where edges coming into ``item`` end."""
    if item.kind == TASK:
        return [_Port(item.x + _side(item) / 2, item.y, str(item.node.pk))]
    if item.kind == CHAIN:
        return _entries(item.members[0])
    if item.collapsed:
        sx, sy, sw, _ = _summary_box(item)
        return [_Port(sx + sw / 2, sy, f"group:{item.path}")]
    if not item.members:
        cx, cy = _join_centre(item)
        return [_Port(cx, cy - _JOIN_R, str(item.node.pk))]
    if item.wrapped:
        bx, by, bw, _ = item.band
        return [_Port(bx + bw / 2, by, f"band:{item.path}")]
    return [port for member in item.members for port in _entries(member)]


def _exit(item: _Item) -> _Port:
    """Where edges leaving ``item`` start."""
    if item.kind == TASK:
        return _Port(item.x + _side(item) / 2, item.y + item.h, str(item.node.pk))
    if item.kind == CHAIN:
        return _exit(item.members[-1])
    cx, cy = _join_centre(item)
    return _Port(cx, cy + _JOIN_R, str(item.node.pk))


def _edges(item: _Item) -> Iterable[tuple[_Port, _Port, list[tuple[float, float]]]]:
    """Every edge inside ``item`` as ``(from, to, points)``."""
    if item.kind == TASK:
        return
    if item.kind == CHAIN:
        for before, after in zip(item.members, item.members[1:], strict=False):
            start = _exit(before)
            lane = before.y + before.h + _GAP_Y / 2 - 2
            for end in _entries(after):
                yield start, end, _route(start, end, lane)
        for member in item.members:
            yield from _edges(member)
        return
    cx, cy = _join_centre(item)
    join = _Port(cx, cy - _JOIN_R, str(item.node.pk))
    if item.collapsed:
        sx, sy, sw, sh = _summary_box(item)
        start = _Port(sx + sw / 2, sy + sh, f"group:{item.path}")
        yield start, join, [(start.x, start.y), (join.x, join.y)]
        return
    if item.wrapped:
        bx, by, bw, bh = item.band
        start = _Port(bx + bw / 2, by + bh, f"band:{item.path}")
        yield start, join, [(start.x, start.y), (join.x, join.y)]
    else:
        lane = join.y - 12
        for member in item.members:
            start = _exit(member)
            yield start, join, _route(start, join, lane)
    for member in item.members:
        yield from _edges(member)


def _route(start: _Port, end: _Port, lane: float) -> list[tuple[float, float]]:
    """Down from ``start`` to the lane, along it, down into ``end``."""
    if abs(start.x - end.x) < 0.05:
        return [(start.x, start.y), (end.x, end.y)]
    return [(start.x, start.y), (start.x, lane), (end.x, lane), (end.x, end.y)]


# -- drawing ------------------------------------------------------------------------------


def draw(
    nodes: Iterable[Any],
    node_url: Callable[[Any], str] | None = None,
    *,
    expanded: Collection[str] = (),
    expand_url: Callable[[str, bool], str] | None = None,
    not_before: datetime | None = None,
) -> SafeString:
    """Return an inline ``<svg>`` picturing ``nodes`` (a workflow's :class:`Node` rows).

    Each drawn node is one ``<g class="node state-<STATE> kind-<kind> ..."
    data-node="<id>">`` holding a ``<title>`` tooltip and, when ``node_url`` is given,
    a link to that URL; a node that failed itself has the class ``failed-self``, one
    marked failed because a node upstream failed ``failed-upstream``. Each edge is a
    ``<path class="edge" data-from=".." data-to="..">`` of straight segments ending in an
    arrowhead. Groups are ``<g class="frame">``; a group of more than
    :data:`COLLAPSE_ABOVE` members is one ``<g class="group-summary">`` box unless its
    path is in ``expanded``; ``expand_url(path, expand)`` gives the link that expands or
    collapses it. ``not_before`` is the workflow's start, for the time a scheduled node
    is due. Above :data:`MAX_NODES` nodes a short note replaces the picture.
    """
    nodes = sorted(nodes, key=lambda node: node.index)
    if not nodes:
        return mark_safe('<p class="cloudtasks-dag-note">This workflow has no nodes.</p>')
    if len(nodes) > MAX_NODES:
        return too_large(len(nodes))
    state_of = {node.index: str(node.state) for node in nodes}
    upstream = {
        node.index
        for node in nodes
        if node.state == State.FAILURE
        and any(state_of.get(p) == State.FAILURE for p in (node.parents or ()))
    }
    try:
        root = _build_tree(nodes, expanded)
    except _NoTree:
        return _unstructured(nodes, node_url, upstream)
    _measure(root)
    width = max(root.w + 2 * _MARGIN, _legend_width() + 2 * _MARGIN)
    _place(root, (width - root.w) / 2, _MARGIN + _LEGEND_HEIGHT)
    height = root.y + root.h + _MARGIN
    context = _Context(node_url, expand_url, not_before, upstream, timezone.now())

    parts = [_svg_open(width, height, len(nodes)), _DEFS]
    parts.extend(_legend(nodes, upstream))
    parts.extend(_frames(root, context))
    parts.append('<g class="edges" fill="none" stroke="#64748b" stroke-width="1.2">')
    for start, end, points in _edges(root):
        d = "M" + " L".join(f"{px:.1f} {py:.1f}" for px, py in points)
        parts.append(
            f'<path class="edge" data-from="{escape(start.ref)}" data-to="{escape(end.ref)}" '
            f'd="{d}" marker-end="url(#ct-arrow)"/>'
        )
    parts.append("</g>")
    parts.extend(_boxes(root, context))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def too_large(count: int) -> SafeString:
    """The note shown instead of a picture of ``count`` nodes (more than :data:`MAX_NODES`)."""
    return mark_safe(
        f'<p class="cloudtasks-dag-note">This workflow has {count:,} nodes; the picture is '
        f"drawn for up to {MAX_NODES:,}. The node list shows them all.</p>"
    )


@dataclass(frozen=True)
class _Context:
    node_url: Callable[[Any], str] | None
    expand_url: Callable[[str, bool], str] | None
    not_before: datetime | None
    upstream: set[int]
    now: datetime


_DEFS = (
    '<defs><marker id="ct-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
    'markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L8 4 L0 8 z" '
    'fill="#64748b"/></marker></defs>'
)


def _svg_open(width: float, height: float, count: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="cloudtasks-dag" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="100%" '
        f'style="max-width:{width:.0f}px;height:auto" role="img" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
        f'aria-label="Workflow graph of {count} nodes">'
    )


def _frames(item: _Item, context: _Context) -> Iterable[str]:
    """The frames of every group, outermost first (drawn under everything else)."""
    if item.kind == CHAIN:
        for member in item.members:
            yield from _frames(member, context)
        return
    if item.kind != GROUP:
        return
    count = len(item.members)
    yield (
        f'<g class="frame" data-path="{escape(item.path)}"><rect x="{item.x:.1f}" '
        f'y="{item.y:.1f}" width="{item.w:.1f}" height="{item.h:.1f}" rx="8" '
        f'fill="#f8fafc" fill-opacity="0.6" stroke="#cbd5e1" stroke-dasharray="5 3"/>'
    )
    label = f"group of {count:,}"
    _, cy = _join_centre(item)
    yield (
        f'<text x="{item.x + 6:.1f}" y="{cy + 4:.1f}" font-size="10" fill="#64748b">'
        f"{escape(label)}</text>"
    )
    if count > COLLAPSE_ABOVE and not item.collapsed and context.expand_url is not None:
        yield (
            f'<a class="collapse" href="{escape(context.expand_url(item.path, False))}">'
            f'<text x="{item.x + item.w - 6:.1f}" y="{item.y + 11:.1f}" font-size="10" '
            f'text-anchor="end" fill="#2563eb">collapse ▴</text></a>'
        )
    if item.wrapped:
        bx, by, bw, bh = item.band
        yield (
            f'<rect class="band" x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" '
            f'height="{bh:.1f}" rx="6" fill="#f1f5f9" stroke="#cbd5e1"/>'
        )
    yield "</g>"
    for member in item.members:
        yield from _frames(member, context)


def _boxes(item: _Item, context: _Context) -> Iterable[str]:
    """The shapes of every node (and group summary) inside ``item``."""
    if item.kind == TASK:
        yield _task_shape(item.node, item.x, item.y, item.dense, context)
        left = item.x + _side(item)
        for errback in item.errbacks:
            cy = item.y + item.h / 2
            yield (
                f'<path class="edge errback-edge" data-from="{escape(str(item.node.pk))}" '
                f'data-to="{escape(str(errback.pk))}" d="M{left:.1f} {cy:.1f} '
                f'L{left + _ERR_GAP:.1f} {cy:.1f}" fill="none" stroke="#dc2626" '
                f'stroke-dasharray="4 3" marker-end="url(#ct-arrow)"/>'
            )
            left += _ERR_GAP
            yield _task_shape(errback, left, item.y, item.dense, context)
            left += _side(item)
        return
    if item.kind == GROUP:
        if item.collapsed:
            yield _summary(item, context)
        yield _join_shape(item, context)
    for member in item.members if not item.collapsed else ():
        yield from _boxes(member, context)


def _node_group(node: Any, body: str, context: _Context, extra: str = "") -> str:
    state = str(node.state)
    classes = f"node state-{state} kind-{node.kind}{extra}"
    if state == State.FAILURE:
        upstream = node.index in context.upstream
        classes += " failed-upstream" if upstream else " failed-self"
    if context.node_url is not None:
        body = f'<a href="{escape(context.node_url(node))}">{body}</a>'
    return (
        f'<g class="{escape(classes)}" data-node="{escape(str(node.pk))}">'
        f"<title>{escape(_tooltip(node, context))}</title>{body}</g>"
    )


def _colours(node: Any, context: _Context) -> tuple[str, str]:
    state = str(node.state)
    if state == State.FAILURE and node.index in context.upstream:
        return UPSTREAM_FAILURE_COLOURS
    return STATE_COLOURS.get(state, STATE_COLOURS[State.PENDING])


def _task_shape(node: Any, x: float, y: float, dense: bool, context: _Context) -> str:
    fill, stroke = _colours(node, context)
    state = str(node.state)
    upstream = node.index in context.upstream
    width, dash = 1.5, ""
    if state == State.REVOKED or upstream:
        dash = ' stroke-dasharray="4 3"'
    elif state == State.FAILURE:
        width = 3.0
    side_w, side_h = (_DENSE, _DENSE) if dense else (_BOX_W, _BOX_H)
    body = (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{side_w}" height="{side_h}" '
        f'rx="{3 if dense else 6}" fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}/>'
    )
    if not dense:
        lines = _label_lines(node, context)
        tx = x + 7
        for number, (text, style) in enumerate(lines):
            body += (
                f'<text x="{tx:.1f}" y="{y + 15 + number * 14:.1f}" font-size="{_FONT}" '
                f'fill="#111827"{style}>{escape(text)}</text>'
            )
    return _node_group(node, body, context)


def _join_shape(item: _Item, context: _Context) -> str:
    node = item.node
    fill, stroke = _colours(node, context)
    cx, cy = _join_centre(item)
    r = _JOIN_R
    body = (
        f'<polygon points="{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy:.1f} {cx:.1f},{cy + r:.1f} '
        f'{cx - r:.1f},{cy:.1f}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        f'<text x="{cx + r + 4:.1f}" y="{cy + 4:.1f}" font-size="10" fill="#374151">'
        f"#{node.index} join</text>"
    )
    return _node_group(node, body, context)


def _summary(item: _Item, context: _Context) -> str:
    """One box for a collapsed group: what it runs, a state bar, counts, a link."""
    x, y, w, h = _summary_box(item)
    counts: dict[str, int] = {}
    upstream = 0
    names: dict[str, int] = {}
    for node in _walk(_Item(CHAIN, item.path, None, item.members)):
        if node.kind == NodeKind.BARRIER:
            continue
        counts[str(node.state)] = counts.get(str(node.state), 0) + 1
        upstream += node.index in context.upstream
        names[node.task_name] = names.get(node.task_name, 0) + 1
    total = sum(counts.values())
    what = ", ".join(sorted(names, key=lambda n: -names[n])[:2]) + (", …" if len(names) > 2 else "")
    parts = [
        f'<g class="group-summary" data-group="{escape(item.path)}" '
        f'data-members="{len(item.members)}">',
        f"<title>{escape(_summary_tooltip(item, counts, upstream))}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{h}" rx="6" fill="#ffffff" '
        f'stroke="#475569" stroke-width="1.5"/>',
        f'<text x="{x + 8:.1f}" y="{y + 16:.1f}" font-size="{_FONT}" font-weight="600" '
        f'fill="#111827">group of {len(item.members):,} · {escape(_clip(what, 30))}</text>',
    ]
    bar_x, bar_w = x + 8, w - 16
    left = bar_x
    shares = []
    for state in _BAR_ORDER:
        if state == State.FAILURE:
            shares.append((f"state-{state}", counts.get(state, 0) - upstream))
            shares.append(("failed-upstream", upstream))
        else:
            shares.append((f"state-{state}", counts.get(state, 0)))
    for css, share in shares:
        if share <= 0 or not total:
            continue
        colour = (
            UPSTREAM_FAILURE_COLOURS[1]
            if css == "failed-upstream"
            else STATE_COLOURS[css.removeprefix("state-")][1]
        )
        span = bar_w * share / total
        parts.append(
            f'<rect class="bar {css}" x="{left:.1f}" y="{y + 24:.1f}" '
            f'width="{span:.2f}" height="10" fill="{colour}"/>'
        )
        left += span
    text = _count_text(counts, upstream)
    parts.append(
        f'<text x="{x + 8:.1f}" y="{y + 50:.1f}" font-size="{_FONT}" fill="#374151">'
        f"{escape(text)}</text>"
    )
    if context.expand_url is not None:
        parts.append(
            f'<a class="expand" href="{escape(context.expand_url(item.path, True))}">'
            f'<text x="{x + w - 8:.1f}" y="{y + 16:.1f}" font-size="{_FONT}" '
            f'text-anchor="end" fill="#2563eb">expand ▾</text></a>'
        )
    parts.append("</g>")
    return "".join(parts)


def _count_text(counts: dict[str, int], upstream: int) -> str:
    pieces = []
    for state in _BAR_ORDER:
        count = counts.get(state, 0)
        if state == State.FAILURE and upstream:
            if count - upstream:
                pieces.append(f"{count - upstream:,} failed")
            pieces.append(f"{upstream:,} failed upstream")
        elif count:
            pieces.append(f"{count:,} {state.lower()}")
    return " · ".join(pieces)


def _summary_tooltip(item: _Item, counts: dict[str, int], upstream: int) -> str:
    return f"group of {len(item.members):,} at {item.path or 'the top'}\n" + _count_text(
        counts, upstream
    )


def _label_lines(node: Any, context: _Context) -> list[tuple[str, str]]:
    """Three lines: index and task, short arguments, and timing."""
    name = node.task_name or "node"
    if node.kind == NodeKind.ERRBACK:
        name = f"⚠ {name}"
    lines = [(_clip(f"#{node.index} {name}", 24), ' font-weight="600"')]
    lines.append((_clip(_short_arguments(node), 26), ' fill-opacity="0.75"'))
    lines.append((_clip(_timing(node, context), 26), ""))
    return lines


def _short_arguments(node: Any) -> str:
    args = list(getattr(node, "args", None) or ())
    kwargs = dict(getattr(node, "kwargs", None) or {})
    shown = [_short_value(a) for a in args] + [f"{k}={_short_value(v)}" for k, v in kwargs.items()]
    if getattr(node, "input_rule", "") == "prepend":
        shown.insert(0, "↑")
    return "(" + ", ".join(shown) + ")"


def _short_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 12 else text[:11] + "…"


def _timing(node: Any, context: _Context) -> str:
    state = str(node.state)
    started = getattr(node, "started_at", None)
    finished = getattr(node, "finished_at", None)
    if state == State.FAILURE and node.index in context.upstream:
        return "upstream failed"
    if state == State.SCHEDULED:
        due = _due(node, context.not_before)
        if due is not None:
            return f"due {_moment(due, context.now)}"
    if started is not None and finished is not None:
        return f"{state.lower()} in {_seconds((finished - started).total_seconds())}"
    if started is not None and state == State.STARTED:
        return f"running {_seconds((context.now - started).total_seconds())}"
    if state == State.RETRY:
        return f"retry {getattr(node, 'retries', 0)}"
    return state.lower()


def _due(node: Any, not_before: datetime | None) -> datetime | None:
    due_at = getattr(node, "due_at", None)
    if callable(due_at):
        try:
            return due_at(not_before)  # type: ignore[no-any-return]
        except AttributeError:  # a partial row (``only()``) without the timing fields
            return None
    return getattr(node, "eta", None)


def _moment(moment: datetime, now: datetime) -> str:
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    today = timezone.localtime(now) if timezone.is_aware(now) else now
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tooltip(node: Any, context: _Context) -> str:
    if node.kind == NodeKind.BARRIER:
        what = "group join"
    elif node.kind == NodeKind.ERRBACK:
        what = f"error callback {node.task_name}"
    else:
        what = node.task_name
    lines = [f"#{node.index} {what} — {node.state}"]
    if node.path:
        lines.append(f"at {node.path}")
    if node.index in context.upstream:
        lines.append("not run: a node upstream failed")
    elif node.state == State.FAILURE and node.error_type:
        message = (node.error_message or "").strip().splitlines()
        lines.append(f"{node.error_type}: {message[0][:200] if message else ''}")
    return "\n".join(lines)


def _unstructured(nodes: Sequence[Any], node_url: Any, upstream: set[int]) -> SafeString:
    """Nodes whose paths describe no tree (rows from an old version): a grid, no edges."""
    context = _Context(node_url, None, None, upstream, timezone.now())
    columns = max(1, (MAX_WIDTH + _GAP_X) // (_BOX_W + _GAP_X))
    width = max(min(len(nodes), columns) * (_BOX_W + _GAP_X) - _GAP_X, _legend_width())
    width += 2 * _MARGIN
    rows = -(-len(nodes) // columns)
    height = _MARGIN + _LEGEND_HEIGHT + 20 + rows * (_BOX_H + _ROW_GAP) + _MARGIN
    parts = [_svg_open(width, height, len(nodes)), _DEFS, *_legend(nodes, upstream)]
    parts.append(
        f'<text x="{_MARGIN}" y="{_MARGIN + _LEGEND_HEIGHT + 8}" font-size="{_FONT}" '
        f'fill="#6b7280">The structure of this workflow is not recorded; its nodes in order:'
        "</text>"
    )
    for position, node in enumerate(nodes):
        row, column = divmod(position, columns)
        x = _MARGIN + column * (_BOX_W + _GAP_X)
        y = _MARGIN + _LEGEND_HEIGHT + 20 + row * (_BOX_H + _ROW_GAP)
        parts.append(_task_shape(node, x, y, False, context))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _legend_width() -> int:
    return (len(STATE_COLOURS) + 1) * 118


def _legend(nodes: Sequence[Any], upstream: set[int]) -> list[str]:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[str(node.state)] = counts.get(str(node.state), 0) + 1
    counts[State.FAILURE] = counts.get(State.FAILURE, 0) - len(upstream)
    entries = [
        (state.title(), fill, stroke, counts.get(state, 0), "")
        for state, (fill, stroke) in STATE_COLOURS.items()
    ]
    entries.append(
        ("Failed upstream", *UPSTREAM_FAILURE_COLOURS, len(upstream), ' stroke-dasharray="3 2"')
    )
    parts = ['<g class="legend" font-size="11" fill="#374151">']
    x = _MARGIN
    for label, fill, stroke, count, dash in entries:
        parts.append(
            f'<rect x="{x}" y="{_MARGIN}" width="14" height="14" rx="3" fill="{fill}" '
            f'stroke="{stroke}"{dash}/><text x="{x + 19}" y="{_MARGIN + 11}">'
            f"{escape(label)} {count}</text>"
        )
        x += 118
    parts.append("</g>")
    return parts
