"""The workflow picture: laid out from the expression tree, checked by geometry and in Chromium.

Every picture drawn here is checked for what a reader relies on: one shape per node,
arrowheads on edges that end on their target's box, and no edge segment crossing a box
other than its two ends. The browser tests keep their screenshots (and SVGs) in
``artifacts/dag/`` (``CLOUDTASKS_ARTIFACTS`` to move it), which CI keeps.
"""

from __future__ import annotations

import itertools
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

import canvas
from django_cloudtasks import chain, chord, dagsvg, group
from django_cloudtasks.constants import State
from django_cloudtasks.engine.join_shards import SHARD_OF
from django_cloudtasks.models import Node
from tests.canvas.test_properties import expressions
from tests.django_cloudtasks.browser import read_png, screenshot
from tests.testapp.tasks import add, fail, identity, on_error, tsum

pytestmark = pytest.mark.django_db(transaction=True)

SVG = "{http://www.w3.org/2000/svg}"
ARTIFACTS = Path(os.environ.get("CLOUDTASKS_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))


# -- reading a picture back -----------------------------------------------------------------


def _points(d: str) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    assert re.fullmatch(r"M[-\d. ]+( L[-\d. ]+)*", d), f"not a polyline: {d}"
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def _bbox(shape: ET.Element) -> tuple[float, float, float, float]:
    if shape.tag == f"{SVG}rect":
        x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
        return x, y, x + float(shape.get("width", 0)), y + float(shape.get("height", 0))
    xs_ys = [tuple(map(float, p.split(","))) for p in shape.get("points", "").split()]
    xs, ys = [p[0] for p in xs_ys], [p[1] for p in xs_ys]
    return min(xs), min(ys), max(xs), max(ys)


def read_picture(svg: str) -> SimpleNamespace:
    """Boxes by reference, edges as ``(from, to, points, has_arrow)``, classes by node."""
    root = ET.fromstring(svg)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    classes: dict[str, str] = {}
    for g in root.iter(f"{SVG}g"):
        cls = g.get("class", "")
        if cls.startswith("node "):
            shape = next(e for e in g.iter() if e.tag in (f"{SVG}rect", f"{SVG}polygon"))
            assert g.get("data-node") not in boxes, "a node is drawn twice"
            boxes[g.get("data-node")] = _bbox(shape)
            classes[g.get("data-node")] = cls
        elif cls == "group-summary":
            shape = next(e for e in g.iter() if e.tag == f"{SVG}rect")
            boxes[f"group:{g.get('data-group')}"] = _bbox(shape)
    bands = {}
    for frame in root.iter(f"{SVG}g"):
        if frame.get("class") == "frame":
            for rect in frame.iter(f"{SVG}rect"):
                if rect.get("class") == "band":
                    bands[f"band:{frame.get('data-path')}"] = _bbox(rect)
    edges = [
        (p.get("data-from"), p.get("data-to"), _points(p.get("d")), bool(p.get("marker-end")))
        for p in root.iter(f"{SVG}path")
        if "edge" in p.get("class", "").split()
    ]
    return SimpleNamespace(boxes=boxes, bands=bands, edges=edges, classes=classes)


def _crosses(a: tuple[float, float], b: tuple[float, float], box: tuple) -> bool:
    """Whether segment a-b passes through the inside of ``box`` (Liang-Barsky clipping)."""
    x0, y0, x1, y1 = box[0] + 0.5, box[1] + 0.5, box[2] - 0.5, box[3] - 0.5
    dx, dy = b[0] - a[0], b[1] - a[1]
    low, high = 0.0, 1.0
    for p, q in ((-dx, a[0] - x0), (dx, x1 - a[0]), (-dy, a[1] - y0), (dy, y1 - a[1])):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def check_geometry(svg: str) -> SimpleNamespace:
    """No edge crosses a box other than its ends; every edge ends on its target."""
    picture = read_picture(svg)
    targets = {**picture.boxes, **picture.bands}
    for start, end, points, arrow in picture.edges:
        assert arrow, f"edge {start} -> {end} has no arrowhead"
        x0, y0, x1, y1 = targets[end]
        ex, ey = points[-1]
        assert x0 - 1 <= ex <= x1 + 1 and y0 - 1 <= ey <= y1 + 1, f"{start} -> {end} misses"
        for a, b in itertools.pairwise(points):
            for ref, box in picture.boxes.items():
                if ref not in (start, end):
                    assert not _crosses(a, b, box), f"edge {start} -> {end} crosses {ref}"
    boxes = list(picture.boxes.items())
    for i, (ref, box) in enumerate(boxes):
        for other, second in boxes[i + 1 :]:
            overlap = min(box[2], second[2]) - max(box[0], second[0]) > 0.5 and (
                min(box[3], second[3]) - max(box[1], second[1]) > 0.5
            )
            assert not overlap, f"{ref} overlaps {other}"
    return picture


def test_the_geometric_check_sees_a_crossing():
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg">'
        '<g class="node state-SUCCESS kind-task" data-node="a"><rect x="0" y="0" width="10" '
        'height="10"/></g><g class="node state-SUCCESS kind-task" data-node="b"><rect x="0" '
        'y="20" width="10" height="10"/></g><g class="node state-SUCCESS kind-task" '
        'data-node="c"><rect x="0" y="40" width="10" height="10"/></g>'
        '<path class="edge" data-from="a" data-to="c" d="M5 10 L5 40" marker-end="url(#m)"/>'
        "</svg>"
    )
    with pytest.raises(AssertionError, match="crosses b"):
        check_geometry(svg)


# -- pictures of real workflows ---------------------------------------------------------------


def picture_of(admin_client, workflow_id: Any, query: str = "") -> str:
    url = reverse("admin:django_cloudtasks_workflow_change", args=[workflow_id])
    page = admin_client.get(url + query).content.decode()
    return re.search(r'<svg [^>]*class="cloudtasks-dag".*?</svg>', page, re.S).group(0)


def node_ids(workflow_id: Any, **filters: Any) -> set[str]:
    """The ids of the workflow's nodes as its canvas was written (not a join's shards)."""
    rows = Node.objects.filter(workflow_id=workflow_id, **filters).exclude(
        options__has_key=SHARD_OF
    )
    return {str(pk) for pk in rows.values_list("pk", flat=True)}


def ten_in_a_chain(memory) -> str:
    """A chain of 10: six done, the seventh due in an hour, three waiting."""
    steps = [add.si(i, i) for i in range(6)] + [add.si(6, 6).set(countdown=3600)]
    steps += [add.s(i) for i in range(7, 10)]
    result = chain(*steps).apply_async()
    memory.drain(limit=6)
    return result.workflow_id


def chord_of_50_with_failures(memory) -> str:
    members = [add.si(i, i) for i in range(47)]
    members += [fail.si(i).on_error(on_error.s()) for i in range(3)]
    result = chord(members, tsum.s()).apply_async()
    memory.drain()
    return result.workflow_id


def nested_canvas(memory) -> str:
    """``group(chain(a, group(b, c)), d) | e | group(f, g) | h``, partly run."""
    a, d = add.si(1, 1), add.si(4, 4)
    b, c = add.s(2), add.s(3)
    e, f, g, h = identity.s(), identity.s(), identity.s(), identity.s()
    result = (group(chain(a, group(b, c)), d) | e | group(f, g) | h).apply_async()
    memory.drain(limit=4)
    return result.workflow_id


def chord_of_1200(memory) -> str:
    result = chord([add.si(i, i) for i in range(1200)], tsum.s()).apply_async()
    memory.drain(limit=700)
    return result.workflow_id


def test_a_chain_stacks_with_arrows_and_shows_when_the_scheduled_node_is_due(admin_client, memory):
    workflow_id = ten_in_a_chain(memory)
    svg = picture_of(admin_client, workflow_id)
    picture = check_geometry(svg)
    assert set(picture.boxes) == node_ids(workflow_id)
    nodes = {n.index: str(n.pk) for n in Node.objects.filter(workflow_id=workflow_id)}
    tops = [picture.boxes[nodes[i]][1] for i in range(10)]
    assert tops == sorted(tops) and len(set(tops)) == 10  # one above the other
    assert len({picture.boxes[nodes[i]][0] for i in range(10)}) == 1  # in one column
    assert len(picture.edges) == 9
    scheduled = Node.objects.get(workflow_id=workflow_id, index=6)
    assert scheduled.state == State.SCHEDULED
    due = timezone.localtime(scheduled.due_at()).strftime("%H:%M:%S")
    # The date is shown too when the node is due on another day than today.
    assert re.search(rf"due (\d{{4}}-\d\d-\d\d )?{due}<", svg)
    assert "#0 add" in svg and "(0, 0)" in svg  # index, task and short arguments
    assert re.search(r"success in \d\.\d\d s", svg)  # a duration


def test_a_chord_of_50_frames_its_members_and_tells_failures_apart(admin_client, memory):
    workflow_id = chord_of_50_with_failures(memory)
    svg = picture_of(admin_client, workflow_id)
    picture = check_geometry(svg)
    assert set(picture.boxes) == node_ids(workflow_id)  # errbacks included
    self_failed = {ref for ref, cls in picture.classes.items() if "failed-self" in cls}
    upstream = {ref for ref, cls in picture.classes.items() if "failed-upstream" in cls}
    assert self_failed == node_ids(workflow_id, task_name="fail")
    join_and_body = node_ids(workflow_id, kind="barrier") | node_ids(workflow_id, task_name="tsum")
    assert upstream == join_and_body
    assert svg.count(">upstream failed</text>") == 1  # the body; the join is a diamond
    # Each error callback sits to the right of the node it guards, on the same row.
    for errback in Node.objects.filter(workflow_id=workflow_id, kind="errback"):
        guarded = picture.boxes[str(errback.errback_of_id)]
        beside = picture.boxes[str(errback.pk)]
        assert beside[1] == guarded[1] and beside[0] > guarded[2]
    assert 'class="frame"' in svg and "group of 50" in svg


def test_a_nested_canvas_nests_its_frames(admin_client, memory):
    workflow_id = nested_canvas(memory)
    svg = picture_of(admin_client, workflow_id)
    picture = check_geometry(svg)
    assert set(picture.boxes) == node_ids(workflow_id)
    frames = dict(re.findall(r'<g class="frame" data-path="([^"]*)"><rect x="([\d.]+)"', svg))
    assert set(frames) == {"header", "header.0.1", "body.1"}
    outer = re.search(
        r'data-path="header"><rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" '
        r'height="([\d.]+)"',
        svg,
    ).groups()
    inner = re.search(
        r'data-path="header.0.1"><rect x="([\d.]+)" y="([\d.]+)" '
        r'width="([\d.]+)" height="([\d.]+)"',
        svg,
    ).groups()
    ox, oy, ow, oh = map(float, outer)
    ix, iy, iw, ih = map(float, inner)
    assert ox < ix and oy < iy and ix + iw < ox + ow and iy + ih < oy + oh
    states = Counter(cls.split()[1] for cls in picture.classes.values())
    assert states == {"state-SUCCESS": 6, "state-QUEUED": 1, "state-PENDING": 4}


def test_a_group_above_50_members_is_one_box_until_expanded(admin_client, memory):
    workflow_id = chord_of_1200(memory)
    # 1,200 members: five shards of up to 250 (JOIN_SHARD_SIZE), never drawn
    assert Node.objects.filter(workflow_id=workflow_id, options__has_key=SHARD_OF).count() == 5
    svg = picture_of(admin_client, workflow_id)
    picture = check_geometry(svg)
    assert set(picture.boxes) == {
        "group:header",
        *node_ids(workflow_id, kind="barrier"),
        *node_ids(workflow_id, task_name="tsum"),
    }
    assert "group of 1,200" in svg and "700 success · 500 queued" in svg
    bars = dict(re.findall(r'class="bar state-(\w+)" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg))
    assert float(bars["SUCCESS"]) / float(bars["QUEUED"]) == pytest.approx(700 / 500, rel=0.01)
    expand = re.search(r'<a class="expand" href="([^"]+)"', svg).group(1)
    assert expand.replace("&amp;", "&").startswith("?expand=header")

    expanded = picture_of(admin_client, workflow_id, expand.replace("&amp;", "&"))
    picture = check_geometry(expanded)
    assert set(picture.boxes) == node_ids(workflow_id)
    assert "collapse" in expanded and "band:header" in picture.bands


def test_nodes_without_a_recorded_structure_are_drawn_in_order_without_edges():
    nodes = [
        SimpleNamespace(
            pk=i, index=i, parents=[], kind="task", task_name="t", path="", state="PENDING"
        )
        for i in range(3)
    ]
    svg = dagsvg.draw(nodes)
    assert "not recorded" in svg and check_geometry(svg).edges == []
    assert len(read_picture(svg).boxes) == 3


def test_the_tree_follows_the_paths_the_compiler_records(memory):
    result = (
        group(chain(add.si(1, 1), group(add.s(2), add.s(3))), add.si(4, 4)) | identity.s()
    ).apply_async()
    root = dagsvg.tree(list(Node.objects.filter(workflow_id=result.workflow_id)))

    def shape(item):
        if item.kind == "task":
            return item.node.index
        return (item.kind, [shape(m) for m in item.members])

    assert shape(root) == ("chain", [("group", [("chain", [0, ("group", [1, 2])]), 4]), 6])


# -- in a real browser ---------------------------------------------------------------------------


SCENARIOS = {
    "chain-of-10": (ten_in_a_chain, ""),
    "chord-of-50-with-failures": (chord_of_50_with_failures, ""),
    "nested-canvas": (nested_canvas, ""),
    "chord-of-1200": (chord_of_1200, ""),
    "chord-of-1200-expanded": (chord_of_1200, "?expand=header"),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_chromium_draws_the_picture(admin_client, memory, chromium, name):
    make, query = SCENARIOS[name]
    workflow_id = make(memory)
    svg = picture_of(admin_client, workflow_id, query)
    check_geometry(svg)
    width, height = map(float, re.search(r'viewBox="0 0 (\S+) (\S+)"', svg).groups())
    assert width <= 1400
    out = ARTIFACTS / "dag"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.svg").write_text(svg)
    html = out / f"{name}.html"
    html.write_text(
        '<!doctype html><meta charset="utf-8"><body style="margin:0;background:#fff">'
        f'<div style="width:{width:.0f}px">{svg}</div></body>'
    )
    png = out / f"{name}.png"
    shown_h = int(min(height, 2400))
    screenshot(chromium, html, png, int(width), shown_h)
    png_w, png_h, rows = read_png(png)
    assert (png_w, png_h) == (int(width), shown_h)
    pixels = Counter(row[x : x + 3] for row in rows for x in range(0, len(row), 3))

    def near(hex_colour: str) -> int:
        target = bytes.fromhex(hex_colour.lstrip("#"))
        return sum(
            n
            for rgb, n in pixels.items()
            if all(abs(a - b) <= 6 for a, b in zip(rgb, target, strict=True))
        )

    if name == "chord-of-1200":  # one box: its state bar is painted in the states' outlines
        assert near(dagsvg.STATE_COLOURS[State.SUCCESS][1]) > 700 * 0.2 * 10
        assert near(dagsvg.STATE_COLOURS[State.QUEUED][1]) > 500 * 0.2 * 10
    else:
        assert near(dagsvg.STATE_COLOURS[State.SUCCESS][0]) > 1000  # green boxes painted
    if name == "chord-of-50-with-failures":
        assert near(dagsvg.STATE_COLOURS[State.FAILURE][0]) > 3 * 4000  # three failed boxes
        assert near(dagsvg.UPSTREAM_FAILURE_COLOURS[0]) > 4000  # the body, failed upstream


# -- any expression ------------------------------------------------------------------------------


def _fake_nodes(expression, states):
    """The rows a workflow of ``expression`` would have, without a database."""
    graph = canvas.compile(expression)
    return [
        SimpleNamespace(
            pk=f"n{node.id}",
            index=node.id,
            kind=node.kind,
            task_name=node.task_name,
            path=node.path,
            parents=list(node.parents),
            args=list(node.args),
            kwargs=dict(node.kwargs),
            state=states[node.id % len(states)],
            error_type="",
            error_message="",
        )
        for node in graph.nodes
    ]


@settings(max_examples=150, deadline=None)
@given(
    expressions,
    st.lists(st.sampled_from([State.SUCCESS, State.FAILURE, State.PENDING]), min_size=1),
    st.sampled_from([(dagsvg.MAX_WIDTH, dagsvg.COLLAPSE_ABOVE), (420, 3), (900, 2)]),
)
def test_no_edge_crosses_a_box_for_any_expression(expression, states, limits):
    nodes = _fake_nodes(expression, states)
    with (
        mock.patch.object(dagsvg, "MAX_WIDTH", limits[0]),
        mock.patch.object(dagsvg, "COLLAPSE_ABOVE", limits[1]),
    ):
        svg = dagsvg.draw(nodes)
    picture = check_geometry(svg)
    assert "not recorded" not in svg
    drawn = set(picture.boxes)
    assert drawn <= {n.pk for n in nodes} | {r for r in drawn if r.startswith("group:")}
    if limits[1] == dagsvg.COLLAPSE_ABOVE:
        assert drawn == {n.pk for n in nodes}
    # Every edge of the graph is drawn, unless it ends inside a wrapped or collapsed group.
    drawn_edges = {(a, b) for a, b, _, _ in picture.edges}
    for node in nodes:
        for parent in node.parents:
            edge = (f"n{parent}", node.pk)
            if edge[0] in drawn and edge[1] in drawn and edge not in drawn_edges:
                ends = [a for a, b in drawn_edges if b == node.pk] + [
                    b for a, b in drawn_edges if a == f"n{parent}"
                ]
                assert any(e.startswith(("band:", "group:")) for e in ends), edge
