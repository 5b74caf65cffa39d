"""A picture of a workflow's DAG as server-rendered SVG, coloured by node state.

The layout is layered: a node's layer is the length of the longest path from a root,
layers run top to bottom, and a layer wider than the picture wraps onto several rows.
The box size is chosen from the widest layer, so a chord of 100 keeps labelled boxes
and a chord of 1,000 becomes a grid of small squares. No JavaScript is involved; each
node is a link to its admin page with a tooltip.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from django_cloudtasks.constants import NodeKind, State

#: Beyond this many nodes no picture is drawn (the node list is the better view).
MAX_NODES = 3000
#: The widest the picture gets, in SVG units; wider layers wrap.
MAX_WIDTH = 1200
_MARGIN = 16
_LEGEND_HEIGHT = 34

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


@dataclass(frozen=True)
class _Size:
    """Box size and spacing of one drawing density."""

    box_w: int
    box_h: int
    gap_x: int
    gap_y: int
    layer_gap: int
    font: int  # 0: no labels

    def columns(self) -> int:
        return max(1, (MAX_WIDTH + self.gap_x) // (self.box_w + self.gap_x))


#: Densities from roomiest to tightest, with the most rows the widest layer may take.
_SIZES = (
    (_Size(124, 30, 12, 10, 42, 12), 16),
    (_Size(64, 20, 6, 6, 32, 9), 24),
    (_Size(12, 12, 4, 4, 26, 0), None),
)


@dataclass
class _Placed:
    node: Any
    layer: int
    x: float = 0.0
    y: float = 0.0


def layers(nodes: Sequence[Any]) -> dict[int, int]:
    """Map each node index to its layer: the longest path from a root to it.

    Parents are the ``parents`` indices; an error callback hangs below the node it
    handles (``errback_of_id``). Computed iteratively (Kahn's order), so a chain of
    10,000 is fine; a node caught in a cycle, which a compiled graph never has, goes
    below everything else.
    """
    parents = _parents(nodes)
    children: dict[int, list[int]] = {index: [] for index in parents}
    missing = {index: 0 for index in parents}
    for index, ups in parents.items():
        for parent in ups:
            children[parent].append(index)
            missing[index] += 1
    layer = {index: 0 for index in parents}
    ready = deque(sorted(index for index, count in missing.items() if count == 0))
    done = set()
    while ready:
        index = ready.popleft()
        done.add(index)
        for child in children[index]:
            layer[child] = max(layer[child], layer[index] + 1)
            missing[child] -= 1
            if missing[child] == 0:
                ready.append(child)
    deepest = max(layer.values(), default=0)
    for index in parents:
        if index not in done:
            layer[index] = deepest + 1
    return layer


def _parents(nodes: Sequence[Any]) -> dict[int, list[int]]:
    """Parent indices of each node, restricted to the nodes given."""
    index_of_pk = {node.pk: node.index for node in nodes}
    known = set(index_of_pk.values())
    parents: dict[int, list[int]] = {}
    for node in nodes:
        if node.kind == NodeKind.ERRBACK:
            origin = index_of_pk.get(getattr(node, "errback_of_id", None))
            parents[node.index] = [origin] if origin is not None else []
        else:
            parents[node.index] = [p for p in (node.parents or ()) if p in known]
    return parents


def _choose_size(widest: int) -> _Size:
    for size, max_rows in _SIZES:
        if max_rows is None or math.ceil(widest / size.columns()) <= max_rows:
            return size
    return _SIZES[-1][0]


def draw(
    nodes: Iterable[Any],
    node_url: Callable[[Any], str] | None = None,
) -> SafeString:
    """Return an inline ``<svg>`` picturing ``nodes`` (a workflow's :class:`Node` rows).

    Each node is one ``<g class="node state-<STATE> kind-<kind>" data-node="<id>">``
    holding a ``<title>`` tooltip and, when ``node_url`` is given, a link to that URL.
    Task nodes are rounded boxes labelled with the task name; group joins are small
    diamonds. The ``viewBox`` carries the size and the element scales to its container
    (``width="100%"``, never wider than its natural size). Above :data:`MAX_NODES`
    nodes a short note replaces the picture.
    """
    nodes = sorted(nodes, key=lambda node: node.index)
    if not nodes:
        return mark_safe('<p class="cloudtasks-dag-note">This workflow has no nodes.</p>')
    if len(nodes) > MAX_NODES:
        return too_large(len(nodes))
    layer_of = layers(nodes)
    parents = _parents(nodes)
    by_layer: dict[int, list[Any]] = {}
    for node in nodes:
        by_layer.setdefault(layer_of[node.index], []).append(node)
    size = _choose_size(max(len(members) for members in by_layer.values()))
    columns = size.columns()
    widest_row = min(columns, max(len(members) for members in by_layer.values()))
    content_w = widest_row * (size.box_w + size.gap_x) - size.gap_x
    width = max(content_w + 2 * _MARGIN, _legend_width() + 2 * _MARGIN)

    placed: dict[int, _Placed] = {}
    y = float(_MARGIN + _LEGEND_HEIGHT)
    for depth in sorted(by_layer):
        members = _order(by_layer[depth], parents, placed)
        for start in range(0, len(members), columns):
            row = members[start : start + columns]
            row_w = len(row) * (size.box_w + size.gap_x) - size.gap_x
            x = (width - row_w) / 2
            for node in row:
                placed[node.index] = _Placed(node, depth, x, y)
                x += size.box_w + size.gap_x
            y += size.box_h + size.gap_y
        y += size.layer_gap - size.gap_y
    height = y - size.layer_gap + _MARGIN

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="cloudtasks-dag" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="100%" '
        f'style="max-width:{width:.0f}px;height:auto" role="img" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
        f'aria-label="Workflow graph of {len(nodes)} nodes">'
    ]
    parts.extend(_legend(nodes))
    parts.append('<g class="edges" fill="none" stroke="#94a3b8" stroke-width="1">')
    for index, ups in parents.items():
        child = placed[index]
        if len(ups) > columns and len({placed[p].layer for p in ups}) == 1:
            parts.append(_band([placed[p] for p in ups], child, size))
            continue
        dashed = child.node.kind == NodeKind.ERRBACK
        for parent_index in ups:
            parts.append(_edge(placed[parent_index], child, size, dashed))
    parts.append("</g>")
    for entry in placed.values():
        parts.append(_shape(entry, size, node_url))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def too_large(count: int) -> SafeString:
    """The note shown instead of a picture of ``count`` nodes (more than :data:`MAX_NODES`)."""
    return mark_safe(
        f'<p class="cloudtasks-dag-note">This workflow has {count:,} nodes; the picture is '
        f"drawn for up to {MAX_NODES:,}. The node list shows them all.</p>"
    )


def _order(
    members: list[Any], parents: dict[int, list[int]], placed: dict[int, _Placed]
) -> list[Any]:
    """Order a layer by the mean position of each node's parents (fewer crossings)."""

    def key(node: Any) -> tuple[float, int]:
        xs = [placed[p].x for p in parents[node.index] if p in placed]
        return (sum(xs) / len(xs) if xs else -1.0, node.index)

    return sorted(members, key=key)


def _edge(parent: _Placed, child: _Placed, size: _Size, dashed: bool) -> str:
    x1, y1 = parent.x + size.box_w / 2, parent.y + size.box_h - _inset(parent, size)
    x2, y2 = child.x + size.box_w / 2, child.y + _inset(child, size)
    bend = max(8.0, (y2 - y1) / 2)
    extra = ' stroke-dasharray="4 3" stroke="#dc2626"' if dashed else ""
    return (
        f'<path d="M{x1:.1f} {y1:.1f} C{x1:.1f} {y1 + bend:.1f} '
        f'{x2:.1f} {y2 - bend:.1f} {x2:.1f} {y2:.1f}"{extra}/>'
    )


def _band(members: list[_Placed], child: _Placed, size: _Size) -> str:
    """One shaded band behind a wide group and one edge to its join, not hundreds."""
    pad = size.gap_x / 2 + 2
    left = min(m.x for m in members) - pad
    top = min(m.y for m in members) - pad
    right = max(m.x for m in members) + size.box_w + pad
    bottom = max(m.y for m in members) + size.box_h + pad
    x2, y2 = child.x + size.box_w / 2, child.y + _inset(child, size)
    x1 = (left + right) / 2
    return (
        f'<rect class="band" x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
        f'height="{bottom - top:.1f}" rx="6" fill="#f1f5f9" stroke="#cbd5e1"/>'
        f'<path d="M{x1:.1f} {bottom:.1f} C{x1:.1f} {(bottom + y2) / 2:.1f} '
        f'{x2:.1f} {(bottom + y2) / 2:.1f} {x2:.1f} {y2:.1f}"/>'
    )


def _inset(entry: _Placed, size: _Size) -> float:
    """How far inside its slot a shape starts: a group join's diamond is smaller."""
    if entry.node.kind != NodeKind.BARRIER:
        return 0.0
    return size.box_h / 2 - _diamond_radius(size)


def _diamond_radius(size: _Size) -> float:
    return min(size.box_h, 16) / 2


def _shape(entry: _Placed, size: _Size, node_url: Callable[[Any], str] | None) -> str:
    node = entry.node
    state = str(node.state)
    fill, stroke = STATE_COLOURS.get(state, STATE_COLOURS[State.PENDING])
    dash = ' stroke-dasharray="3 2"' if state == State.REVOKED else ""
    cx, cy = entry.x + size.box_w / 2, entry.y + size.box_h / 2
    if node.kind == NodeKind.BARRIER:
        r = _diamond_radius(size)
        body = (
            f'<polygon points="{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy:.1f} '
            f'{cx:.1f},{cy + r:.1f} {cx - r:.1f},{cy:.1f}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"{dash}/>'
        )
    else:
        radius = min(6, size.box_h / 4)
        body = (
            f'<rect x="{entry.x:.1f}" y="{entry.y:.1f}" width="{size.box_w}" '
            f'height="{size.box_h}" rx="{radius:.0f}" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="1.5"{dash}/>'
        )
        if size.font:
            label = _truncate(node.task_name or node.path or str(node.index), size)
            body += (
                f'<text x="{cx:.1f}" y="{cy:.1f}" font-size="{size.font}" '
                f'text-anchor="middle" dominant-baseline="central" fill="#111827">'
                f"{escape(label)}</text>"
            )
    if node_url is not None:
        body = f'<a href="{escape(node_url(node))}">{body}</a>'
    return (
        f'<g class="node state-{escape(state)} kind-{escape(node.kind)}" '
        f'data-node="{escape(str(node.pk))}"><title>{escape(_tooltip(node))}</title>'
        f"{body}</g>"
    )


def _truncate(label: str, size: _Size) -> str:
    fits = max(3, int((size.box_w - 10) / (size.font * 0.6)))
    return label if len(label) <= fits else label[: fits - 1] + "…"


def _tooltip(node: Any) -> str:
    if node.kind == NodeKind.BARRIER:
        what = "group join"
    elif node.kind == NodeKind.ERRBACK:
        what = f"error callback {node.task_name}"
    else:
        what = node.task_name
    lines = [f"#{node.index} {what} — {node.state}"]
    if node.path:
        lines.append(f"at {node.path}")
    if node.state == State.FAILURE and node.error_type:
        message = (node.error_message or "").strip().splitlines()
        lines.append(f"{node.error_type}: {message[0][:200] if message else ''}")
    return "\n".join(lines)


def _legend_width() -> int:
    return len(STATE_COLOURS) * 118


def _legend(nodes: Sequence[Any]) -> list[str]:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[str(node.state)] = counts.get(str(node.state), 0) + 1
    parts = ['<g class="legend" font-size="11" fill="#374151">']
    x = _MARGIN
    for state, (fill, stroke) in STATE_COLOURS.items():
        count = counts.get(state, 0)
        parts.append(
            f'<rect x="{x}" y="{_MARGIN}" width="14" height="14" rx="3" fill="{fill}" '
            f'stroke="{stroke}"/><text x="{x + 19}" y="{_MARGIN + 11}">'
            f"{escape(state.title())} {count}</text>"
        )
        x += 118
    parts.append("</g>")
    return parts
