"""The layout of a workflow's DAG picture: the expression tree, its sizes and its edges.

The tree comes from the nodes' ``path`` (``"header.0.1"``: where the compiler found each
step in the expression) and the group joins, which carry their group's path. A chain
stacks its members top to bottom; a group sets its members side by side inside a frame
and ends at its join at the bottom of the frame. Every edge runs down from the bottom of
a box to a horizontal lane in an empty gap, along it, and down into the top of the next
box; a box's column is empty below its exits and above its entries, so no edge crosses a
box, by construction. Sizes are in SVG units; :mod:`.shapes` draws what is laid out here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django_cloudtasks.constants import NodeKind

#: Around the picture, and the height of the legend above it.
MARGIN = 16
LEGEND_HEIGHT = 34
#: A node's box, and a node's square in a dense group.
BOX_W, BOX_H = 156, 50
DENSE = 14
#: Gaps, paddings and the join's diamond.
GAP_Y = 30  # between the members of a chain: room for the edge's lane and arrowhead
GAP_X = 16  # between the members of a group
ROW_GAP = 12  # between the rows of a wrapped group
PAD = 8  # inside a frame
TOP_PAD = 14  # inside a frame, above the members
JOIN_R = 8  # half the diagonal of a join's diamond
JOIN_AREA = 26 + 2 * JOIN_R  # below a group's members: the lane, the join, the padding
ERR_GAP = 26  # between a node and its error callback
#: The box of a collapsed group.
SUMMARY_W, SUMMARY_H = 2 * BOX_W + GAP_X, 64

#: The kinds of :class:`Item`.
TASK, CHAIN, GROUP = "task", "chain", "group"


@dataclass(eq=False)
class Item:
    """One part of the expression tree: a task, a chain or a group, and its place."""

    kind: str
    path: str
    node: Any = None  # the task of a TASK, the join of a GROUP
    members: list[Item] = field(default_factory=list)
    errbacks: list[Any] = field(default_factory=list)
    collapsible: bool = False  # a group with more members than the picture shows
    collapsed: bool = False
    wrapped: bool = False
    dense: bool = False
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    band: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # a wrapped group's
    rows: list[list[Item]] = field(default_factory=list)


@dataclass(frozen=True)
class Port:
    """Where an edge leaves (bottom centre) or enters (top centre) a box."""

    x: float
    y: float
    ref: str


class NoTree(Exception):
    """The nodes' paths do not describe one expression tree (old or damaged rows)."""


def build_tree(nodes: Sequence[Any], expanded: Collection[str], collapse_above: int) -> Item:
    """The tree of ``nodes``; a group of more than ``collapse_above`` members is collapsed
    unless its path is in ``expanded``.

    Raises:
        NoTree: when the paths do not account for every node exactly once.
    """
    tasks: dict[str, Any] = {}
    joins: dict[str, Any] = {}
    errbacks: dict[Any, list[Any]] = {}
    for node in nodes:
        if node.kind == NodeKind.ERRBACK:
            errbacks.setdefault(getattr(node, "errback_of_id", None), []).append(node)
            continue
        table = joins if node.kind == NodeKind.BARRIER else tasks
        if node.path in table:
            raise NoTree(f"two nodes share the path {node.path!r}")
        table[node.path] = node
    below: dict[str, set[str]] = {}
    for path in (*tasks, *joins):
        while path:
            parent, _, segment = path.rpartition(".")
            below.setdefault(parent, set()).add(segment)
            path = parent

    def build(path: str) -> Item:
        segments = below.get(path, ())
        if path in tasks:
            if segments or path in joins:
                raise NoTree(f"the task at {path!r} also contains other steps")
            node = tasks[path]
            return Item(TASK, path, node, errbacks=errbacks.get(node.pk, []))
        ordered = sorted(segments, key=_segment_order)
        members = [build(f"{path}.{s}" if path else s) for s in ordered]
        if path in joins:
            item = Item(GROUP, path, joins[path], members)
            item.collapsible = len(members) > collapse_above
            item.collapsed = item.collapsible and path not in expanded
            return item
        if not members:
            raise NoTree(f"nothing is at {path!r}")
        return members[0] if len(members) == 1 else Item(CHAIN, path, None, members)

    root = build("")
    drawn = sum(1 for _ in walk(root))
    if drawn != len(tasks) + len(joins):
        raise NoTree("some nodes are not in the tree their paths describe")
    return root


def _segment_order(segment: str) -> tuple[int, int, str]:
    if segment.isdigit():
        return (0, int(segment), "")
    return (1, {"header": 0, "body": 1}.get(segment, 2), segment)


def walk(item: Item) -> Iterable[Any]:
    """The task and join nodes of ``item`` (errbacks aside)."""
    stack = [item]
    while stack:
        current = stack.pop()
        if current.node is not None:
            yield current.node
        stack.extend(current.members)


# -- sizes and positions ------------------------------------------------------------------


def measure(item: Item, max_width: float, dense_above: int) -> None:
    """Set ``w`` and ``h`` of ``item`` and everything inside it, bottom-up.

    A group wider than ``max_width`` wraps its members into rows; one of more than
    ``dense_above`` plain tasks draws them as small squares.
    """
    if item.kind == TASK:
        side_w = DENSE if item.dense else BOX_W
        item.w = side_w + len(item.errbacks) * (ERR_GAP + side_w)
        item.h = DENSE if item.dense else BOX_H
        return
    if item.kind == CHAIN:
        for member in item.members:
            measure(member, max_width, dense_above)
        item.w = max(m.w for m in item.members)
        item.h = sum(m.h for m in item.members) + GAP_Y * (len(item.members) - 1)
        return
    if item.collapsed:
        item.w = SUMMARY_W + 2 * PAD
        item.h = TOP_PAD + SUMMARY_H + JOIN_AREA
        return
    plain = all(m.kind == TASK and not m.errbacks for m in item.members)
    for member in item.members:
        member.dense = plain and len(item.members) > dense_above
        measure(member, max_width, dense_above)
    if not item.members:
        item.w, item.h = BOX_W / 2 + 2 * PAD, TOP_PAD + JOIN_AREA
        return
    gap = 4 if item.members[0].dense else GAP_X
    row_w = sum(m.w for m in item.members) + gap * (len(item.members) - 1)
    item.wrapped = row_w > max_width - 2 * PAD
    if not item.wrapped:
        item.rows = [item.members]
        item.w = row_w + 2 * PAD
        item.h = TOP_PAD + max(m.h for m in item.members) + JOIN_AREA
        return
    limit = max_width - 4 * PAD
    item.rows = [[]]
    width = 0.0
    for member in item.members:
        if item.rows[-1] and width + gap + member.w > limit:
            item.rows.append([])
            width = 0.0
        width += member.w + (gap if item.rows[-1] else 0)
        item.rows[-1].append(member)
    row_gap = 4 if item.members[0].dense else ROW_GAP
    inner_w = max(sum(m.w for m in row) + gap * (len(row) - 1) for row in item.rows)
    inner_h = sum(max(m.h for m in row) for row in item.rows) + row_gap * (len(item.rows) - 1)
    item.w = inner_w + 4 * PAD
    item.h = TOP_PAD + inner_h + 2 * PAD + JOIN_AREA


def place(item: Item, x: float, y: float) -> None:
    """Put ``item`` with its top-left corner at ``(x, y)``, and its parts inside it."""
    item.x, item.y = x, y
    if item.kind == CHAIN:
        top = y
        for member in item.members:
            place(member, x + (item.w - member.w) / 2, top)
            top += member.h + GAP_Y
        return
    if item.kind != GROUP or item.collapsed or not item.members:
        return
    gap = 4 if item.members[0].dense else GAP_X
    if not item.wrapped:
        left = x + PAD
        for member in item.members:
            place(member, left, y + TOP_PAD)
            left += member.w + gap
        return
    row_gap = 4 if item.members[0].dense else ROW_GAP
    band_top = y + TOP_PAD
    top = band_top + PAD
    for row in item.rows:
        left = x + 2 * PAD
        for member in row:
            place(member, left, top)
            left += member.w + gap
        top += max(m.h for m in row) + row_gap
    band_h = top - row_gap + PAD - band_top
    item.band = (x + PAD, band_top, item.w - 2 * PAD, band_h)


def join_centre(item: Item) -> tuple[float, float]:
    """The centre of a group's join diamond."""
    return item.x + item.w / 2, item.y + item.h - PAD - JOIN_R


def summary_box(item: Item) -> tuple[float, float, float, float]:
    """``(x, y, width, height)`` of a collapsed group's box."""
    return item.x + PAD, item.y + TOP_PAD, SUMMARY_W, SUMMARY_H


def side(item: Item) -> float:
    """The width of a task's box (its error callbacks aside)."""
    return DENSE if item.dense else BOX_W


def _entries(item: Item) -> list[Port]:
    """Where edges coming into ``item`` end."""
    if item.kind == TASK:
        return [Port(item.x + side(item) / 2, item.y, str(item.node.pk))]
    if item.kind == CHAIN:
        return _entries(item.members[0])
    if item.collapsed:
        sx, sy, sw, _ = summary_box(item)
        return [Port(sx + sw / 2, sy, f"group:{item.path}")]
    if not item.members:
        cx, cy = join_centre(item)
        return [Port(cx, cy - JOIN_R, str(item.node.pk))]
    if item.wrapped:
        bx, by, bw, _ = item.band
        return [Port(bx + bw / 2, by, f"band:{item.path}")]
    return [port for member in item.members for port in _entries(member)]


def _exit(item: Item) -> Port:
    """Where edges leaving ``item`` start."""
    if item.kind == TASK:
        return Port(item.x + side(item) / 2, item.y + item.h, str(item.node.pk))
    if item.kind == CHAIN:
        return _exit(item.members[-1])
    cx, cy = join_centre(item)
    return Port(cx, cy + JOIN_R, str(item.node.pk))


def edges(item: Item) -> Iterable[tuple[Port, Port, list[tuple[float, float]]]]:
    """Every edge inside ``item`` as ``(from, to, points)``."""
    if item.kind == TASK:
        return
    if item.kind == CHAIN:
        for before, after in zip(item.members, item.members[1:], strict=False):
            start = _exit(before)
            lane = before.y + before.h + GAP_Y / 2 - 2
            for end in _entries(after):
                yield start, end, _route(start, end, lane)
        for member in item.members:
            yield from edges(member)
        return
    cx, cy = join_centre(item)
    join = Port(cx, cy - JOIN_R, str(item.node.pk))
    if item.collapsed:
        sx, sy, sw, sh = summary_box(item)
        start = Port(sx + sw / 2, sy + sh, f"group:{item.path}")
        yield start, join, [(start.x, start.y), (join.x, join.y)]
        return
    if item.wrapped:
        bx, by, bw, bh = item.band
        start = Port(bx + bw / 2, by + bh, f"band:{item.path}")
        yield start, join, [(start.x, start.y), (join.x, join.y)]
    else:
        lane = join.y - 12
        for member in item.members:
            start = _exit(member)
            yield start, join, _route(start, join, lane)
    for member in item.members:
        yield from edges(member)


def _route(start: Port, end: Port, lane: float) -> list[tuple[float, float]]:
    """Down from ``start`` to the lane, along it, down into ``end``."""
    if abs(start.x - end.x) < 0.05:
        return [(start.x, start.y), (end.x, end.y)]
    return [(start.x, start.y), (start.x, lane), (end.x, lane), (end.x, end.y)]
