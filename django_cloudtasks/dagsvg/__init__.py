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

:mod:`.layout` builds the tree and places its boxes and edges; :mod:`.shapes` writes the
SVG markup. This module holds the limits, read at each call so they can be changed here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from django_cloudtasks.constants import State
from django_cloudtasks.dagsvg.layout import (
    LEGEND_HEIGHT,
    MARGIN,
    Item,
    NoTree,
    build_tree,
    edges,
    measure,
    place,
)
from django_cloudtasks.dagsvg.shapes import (
    DEFS,
    STATE_COLOURS,
    UPSTREAM_FAILURE_COLOURS,
    Context,
    boxes,
    frames,
    legend,
    legend_width,
    svg_open,
    unstructured,
)

__all__ = [
    "COLLAPSE_ABOVE",
    "DENSE_ABOVE",
    "MAX_NODES",
    "MAX_WIDTH",
    "STATE_COLOURS",
    "UPSTREAM_FAILURE_COLOURS",
    "draw",
    "too_large",
    "tree",
]

#: Beyond this many nodes no picture is drawn (the node list is the better view).
MAX_NODES = 3000
#: The widest the picture gets, in SVG units; a wider group wraps its members.
MAX_WIDTH = 1200
#: A group with more members is drawn as one box until it is expanded.
COLLAPSE_ABOVE = 50
#: An expanded group of more plain tasks than this draws them as small squares.
DENSE_ABOVE = 200


def tree(nodes: Sequence[Any]) -> Item:
    """The expression tree of a workflow's nodes, from their paths and group joins.

    Raises:
        ValueError: when the paths do not account for every node exactly once.
    """
    try:
        return build_tree(nodes, (), COLLAPSE_ABOVE)
    except NoTree as exc:
        raise ValueError(str(exc)) from None


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
        root = build_tree(nodes, expanded, COLLAPSE_ABOVE)
    except NoTree:
        return unstructured(nodes, node_url, upstream, MAX_WIDTH)
    measure(root, MAX_WIDTH, DENSE_ABOVE)
    width = max(root.w + 2 * MARGIN, legend_width() + 2 * MARGIN)
    place(root, (width - root.w) / 2, MARGIN + LEGEND_HEIGHT)
    height = root.y + root.h + MARGIN
    context = Context(node_url, expand_url, not_before, upstream, timezone.now())

    parts = [svg_open(width, height, len(nodes)), DEFS]
    parts.extend(legend(nodes, upstream))
    parts.extend(frames(root, context))
    parts.append('<g class="edges" fill="none" stroke="#64748b" stroke-width="1.2">')
    for start, end, points in edges(root):
        d = "M" + " L".join(f"{px:.1f} {py:.1f}" for px, py in points)
        parts.append(
            f'<path class="edge" data-from="{escape(start.ref)}" data-to="{escape(end.ref)}" '
            f'd="{d}" marker-end="url(#ct-arrow)"/>'
        )
    parts.append("</g>")
    parts.extend(boxes(root, context))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def too_large(count: int) -> SafeString:
    """The note shown instead of a picture of ``count`` nodes (more than :data:`MAX_NODES`)."""
    return mark_safe(
        f'<p class="cloudtasks-dag-note">This workflow has {count:,} nodes; the picture is '
        f"drawn for up to {MAX_NODES:,}. The node list shows them all.</p>"
    )
