"""The SVG markup of a laid-out workflow DAG: frames, node boxes, summaries, the legend.

Each node is a link to its admin page with a tooltip; no JavaScript is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from django_cloudtasks.constants import NodeKind, State
from django_cloudtasks.dagsvg.layout import (
    BOX_H,
    BOX_W,
    CHAIN,
    DENSE,
    ERR_GAP,
    GAP_X,
    GROUP,
    JOIN_R,
    LEGEND_HEIGHT,
    MARGIN,
    ROW_GAP,
    TASK,
    Item,
    join_centre,
    side,
    summary_box,
    walk,
)

_FONT = 11

#: Fill and outline colour of each state.
STATE_COLOURS: dict[str, tuple[str, str]] = {
    State.PENDING: ("#f3f4f6", "#9ca3af"),
    State.WAITING: ("#e0f2fe", "#0891b2"),
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
    State.WAITING,
    State.PENDING,
)


@dataclass(frozen=True)
class Context:
    """What every shape of one picture may need: links, the workflow's start, now."""

    node_url: Callable[[Any], str] | None
    expand_url: Callable[[str, bool], str] | None
    not_before: datetime | None
    upstream: set[int]
    now: datetime


#: The arrowhead every edge ends in.
DEFS = (
    '<defs><marker id="ct-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
    'markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L8 4 L0 8 z" '
    'fill="#64748b"/></marker></defs>'
)


def svg_open(width: float, height: float, count: int) -> str:
    """The opening ``<svg>`` tag of a picture of ``count`` nodes."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="cloudtasks-dag" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="100%" '
        f'style="max-width:{width:.0f}px;height:auto" role="img" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
        f'aria-label="Workflow graph of {count} nodes">'
    )


def frames(item: Item, context: Context) -> Iterable[str]:
    """The frames of every group, outermost first (drawn under everything else)."""
    if item.kind == CHAIN:
        for member in item.members:
            yield from frames(member, context)
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
    _, cy = join_centre(item)
    yield (
        f'<text x="{item.x + 6:.1f}" y="{cy + 4:.1f}" font-size="10" fill="#64748b">'
        f"{escape(label)}</text>"
    )
    if item.collapsible and not item.collapsed and context.expand_url is not None:
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
        yield from frames(member, context)


def boxes(item: Item, context: Context) -> Iterable[str]:
    """The shapes of every node (and group summary) inside ``item``."""
    if item.kind == TASK:
        yield _task_shape(item.node, item.x, item.y, item.dense, context)
        left = item.x + side(item)
        for errback in item.errbacks:
            cy = item.y + item.h / 2
            yield (
                f'<path class="edge errback-edge" data-from="{escape(str(item.node.pk))}" '
                f'data-to="{escape(str(errback.pk))}" d="M{left:.1f} {cy:.1f} '
                f'L{left + ERR_GAP:.1f} {cy:.1f}" fill="none" stroke="#dc2626" '
                f'stroke-dasharray="4 3" marker-end="url(#ct-arrow)"/>'
            )
            left += ERR_GAP
            yield _task_shape(errback, left, item.y, item.dense, context)
            left += side(item)
        return
    if item.kind == GROUP:
        if item.collapsed:
            yield _summary(item, context)
        yield _join_shape(item, context)
    for member in item.members if not item.collapsed else ():
        yield from boxes(member, context)


def _node_group(node: Any, body: str, context: Context, extra: str = "") -> str:
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


def _colours(node: Any, context: Context) -> tuple[str, str]:
    state = str(node.state)
    if state == State.FAILURE and node.index in context.upstream:
        return UPSTREAM_FAILURE_COLOURS
    return STATE_COLOURS.get(state, STATE_COLOURS[State.PENDING])


def _task_shape(node: Any, x: float, y: float, dense: bool, context: Context) -> str:
    fill, stroke = _colours(node, context)
    state = str(node.state)
    upstream = node.index in context.upstream
    width, dash = 1.5, ""
    if state == State.REVOKED or upstream:
        dash = ' stroke-dasharray="4 3"'
    elif state == State.FAILURE:
        width = 3.0
    side_w, side_h = (DENSE, DENSE) if dense else (BOX_W, BOX_H)
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


def _join_shape(item: Item, context: Context) -> str:
    node = item.node
    fill, stroke = _colours(node, context)
    cx, cy = join_centre(item)
    r = JOIN_R
    body = (
        f'<polygon points="{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy:.1f} {cx:.1f},{cy + r:.1f} '
        f'{cx - r:.1f},{cy:.1f}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        f'<text x="{cx + r + 4:.1f}" y="{cy + 4:.1f}" font-size="10" fill="#374151">'
        f"#{node.index} join</text>"
    )
    return _node_group(node, body, context)


def _summary(item: Item, context: Context) -> str:
    """One box for a collapsed group: what it runs, a state bar, counts, a link."""
    x, y, w, h = summary_box(item)
    counts: dict[str, int] = {}
    upstream = 0
    names: dict[str, int] = {}
    for node in walk(Item(CHAIN, item.path, None, item.members)):
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


def _summary_tooltip(item: Item, counts: dict[str, int], upstream: int) -> str:
    return f"group of {len(item.members):,} at {item.path or 'the top'}\n" + _count_text(
        counts, upstream
    )


def _label_lines(node: Any, context: Context) -> list[tuple[str, str]]:
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


def _timing(node: Any, context: Context) -> str:
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


def _tooltip(node: Any, context: Context) -> str:
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


def unstructured(
    nodes: Sequence[Any], node_url: Any, upstream: set[int], max_width: int
) -> SafeString:
    """Nodes whose paths describe no tree (rows from an old version): a grid, no edges."""
    context = Context(node_url, None, None, upstream, timezone.now())
    columns = max(1, (max_width + GAP_X) // (BOX_W + GAP_X))
    width = max(min(len(nodes), columns) * (BOX_W + GAP_X) - GAP_X, legend_width())
    width += 2 * MARGIN
    rows = -(-len(nodes) // columns)
    height = MARGIN + LEGEND_HEIGHT + 20 + rows * (BOX_H + ROW_GAP) + MARGIN
    parts = [svg_open(width, height, len(nodes)), DEFS, *legend(nodes, upstream)]
    parts.append(
        f'<text x="{MARGIN}" y="{MARGIN + LEGEND_HEIGHT + 8}" font-size="{_FONT}" '
        f'fill="#6b7280">The structure of this workflow is not recorded; its nodes in order:'
        "</text>"
    )
    for position, node in enumerate(nodes):
        row, column = divmod(position, columns)
        x = MARGIN + column * (BOX_W + GAP_X)
        y = MARGIN + LEGEND_HEIGHT + 20 + row * (BOX_H + ROW_GAP)
        parts.append(_task_shape(node, x, y, False, context))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def legend_width() -> int:
    """The width of the legend."""
    return (len(STATE_COLOURS) + 1) * 118


def legend(nodes: Sequence[Any], upstream: set[int]) -> list[str]:
    """The legend: each state's colour and how many of ``nodes`` are in it."""
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
    x = MARGIN
    for label, fill, stroke, count, dash in entries:
        parts.append(
            f'<rect x="{x}" y="{MARGIN}" width="14" height="14" rx="3" fill="{fill}" '
            f'stroke="{stroke}"{dash}/><text x="{x + 19}" y="{MARGIN + 11}">'
            f"{escape(label)} {count}</text>"
        )
        x += 118
    parts.append("</g>")
    return parts
