"""The live workflow page: its progress and its timeline as JSON, polled by ``live.js``.

Both answer under the workflow's admin page (``<id>/progress/`` and ``<id>/timeline/``)
and need what the page needs: a staff user with the *view* permission on workflows.
The progress is one ``GROUP BY state`` count (see :mod:`django_cloudtasks.results.progress`),
cheap enough to poll every couple of seconds; the page fetches the timeline, which
reads the nodes, only when the counts moved.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models.functions import Substr
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_cloudtasks import dagsvg
from django_cloudtasks.admin.base import OperatedAdmin, badge, change_url, moment_of, seconds_text
from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.engine.join_shards import SHARD_OF
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.results.progress import Progress, workflow_progress

#: How many nodes the timeline draws (the first ones, in graph order).
MAX_TIMELINE_NODES = 2_000
#: How many of a node's earlier attempts the timeline draws.
MAX_TIMELINE_ATTEMPTS = 10
#: How much of an error message a timeline bar's tooltip shows.
TIMELINE_ERROR_CHARS = 300

#: The id the node page's URL is given, for the script to replace by a node's.
_NO_NODE = "00000000-0000-0000-0000-000000000000"

_TIMELINE_COLUMNS = (
    "index",
    "id",
    "task_name",
    "kind",
    "state",
    "ready_at",
    "started_at",
    "finished_at",
    "attempts",
    "error_type",
    "short_error",
    "attempt_log",
)


def progress_data(workflow: Workflow, progress: Progress | None = None) -> dict[str, Any]:
    """What the page polls: the workflow's status and its nodes counted by state."""
    progress = workflow_progress(workflow.pk) if progress is None else progress
    end = workflow.finished_at
    took = seconds_text(((end or timezone.now()) - workflow.created_at).total_seconds())
    return {
        "id": str(workflow.pk),
        "status": workflow.status,
        "finished": workflow.status != WorkflowStatus.PENDING,
        "finished_at": end.isoformat() if end else None,
        # as the page's fields show them (in the current time zone)
        "finished_text": timezone.localtime(end).strftime("%Y-%m-%d %H:%M:%S") if end else "-",
        "duration_text": took if end else f"{took} so far",
        **progress.as_json(),
    }


def timeline_data(workflow: Workflow) -> dict[str, Any]:
    """Each node's queued, started and finished moments, in seconds from the workflow's creation.

    ``nodes`` holds up to :data:`MAX_TIMELINE_NODES` rows, in graph order, each with
    ``i`` (index), ``id``, ``label``, ``state``, ``q``/``s``/``f`` (queued, started,
    finished; null when it has not happened), ``n`` (attempts), ``err`` and ``tries``
    (its last attempts: ``[start, end, outcome]``). ``now`` is the server's clock on the
    same axis, for the bars still running.
    """
    origin = workflow.created_at
    rows = (
        # The shards of a large join count for it and are not part of the canvas.
        Node.objects.filter(workflow=workflow)
        .exclude(options__has_key=SHARD_OF)
        .order_by("index")
        .annotate(short_error=Substr("error_message", 1, TIMELINE_ERROR_CHARS))
        .values_list(*_TIMELINE_COLUMNS)[:MAX_TIMELINE_NODES]
    )
    nodes = [_bar(dict(zip(_TIMELINE_COLUMNS, row, strict=True)), origin) for row in rows]
    end = workflow.finished_at or timezone.now()
    return {
        "id": str(workflow.pk),
        "status": workflow.status,
        "created_at": origin.isoformat(),
        "now": _offset(timezone.now(), origin),
        "end": _offset(end, origin),
        "size": workflow.size,
        "output": workflow.output_index,
        "shown": len(nodes),
        "nodes": nodes,
    }


def _bar(row: dict[str, Any], origin: datetime) -> dict[str, Any]:
    error = f"{row['error_type']}: {row['short_error']}" if row["error_type"] else ""
    tries = []
    for entry in (row["attempt_log"] or [])[-MAX_TIMELINE_ATTEMPTS:]:
        start, end = moment_of(entry.get("started_at")), moment_of(entry.get("finished_at"))
        if start is not None and end is not None:
            tries.append([_offset(start, origin), _offset(end, origin), entry.get("outcome")])
    kind = row["kind"]
    label = row["task_name"] or ("group join" if kind == NodeKind.BARRIER else str(kind))
    return {
        "i": row["index"],
        "id": str(row["id"]),
        "label": label,
        "state": row["state"],
        "q": _offset(row["ready_at"], origin),
        "s": _offset(row["started_at"], origin),
        "f": _offset(row["finished_at"], origin),
        "n": row["attempts"],
        "err": error,
        "tries": tries,
    }


def _offset(moment: datetime | None, origin: datetime) -> float | None:
    return None if moment is None else round((moment - origin).total_seconds(), 3)


def progress_html(data: dict[str, Any]) -> SafeString:
    """The progress bar and the counts by state, as the page first shows them."""
    total, done = data["total"], data["done"]
    percent = 100 * done / total if total else 100
    counts = format_html_join(
        " ",
        '<span class="ct-count" data-state="{}">{}</span>',
        (
            (state, badge(state, f"{state} {n}"))
            for state, n in data["counts"].items()
            if n or state == State.SUCCESS
        ),
    )
    return format_html(
        '<div class="ct-progress"><div class="ct-progress-bar" role="progressbar" '
        'aria-valuemin="0" aria-valuemax="{}" aria-valuenow="{}">'
        '<span style="width:{}%"></span></div> '
        '<span class="ct-progress-text">{} / {} nodes done</span></div>'
        '<div class="ct-counts">{}</div>',
        total,
        done,
        f"{percent:.1f}",
        done,
        total,
        counts,
    )


def colours_json() -> str:
    """``{state: [fill, stroke]}``, the picture's colours, for the script."""
    return json.dumps({state: list(pair) for state, pair in dagsvg.STATE_COLOURS.items()})


class LivePage(OperatedAdmin):
    """The workflow admin's JSON endpoints and what its page needs to poll them.

    Mixed into :class:`~django_cloudtasks.admin.workflows.WorkflowAdmin`, whose
    ``admin_site`` wraps the views: a staff user with the *view* permission only.
    """

    #: How often the page of an unfinished workflow asks for its progress.
    poll_seconds = 2.0

    def live_urls(self) -> list[URLPattern]:
        """``<id>/progress/`` and ``<id>/timeline/``, behind the admin's login."""
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/progress/",
                wrap(self.progress_view),
                name=self._url_name("progress"),
            ),
            path(
                "<path:object_id>/timeline/",
                wrap(self.timeline_view),
                name=self._url_name("timeline"),
            ),
        ]

    def live_context(self, workflow: Workflow) -> dict[str, Any]:
        """The progress as first shown, and where and how often the page polls."""
        url = self._url
        return {
            "progress": progress_html(progress_data(workflow)),
            "progress_url": url("progress", workflow.pk),
            "timeline_url": url("timeline", workflow.pk),
            "poll_ms": int(self.poll_seconds * 1000),
            "node_url": change_url(self.admin_site, Node, _NO_NODE),
            "state_colours": colours_json(),
        }

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """GET: the workflow's status and its nodes counted by state (see :func:`progress_data`)."""
        return JsonResponse(progress_data(self._viewed(request, object_id)))

    def timeline_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """GET: each node's queued, started and finished moments (see :func:`timeline_data`)."""
        return JsonResponse(timeline_data(self._viewed(request, object_id)))

    def _viewed(self, request: HttpRequest, object_id: str) -> Workflow:
        """The workflow, once the user may view it (403), if it exists (404)."""
        workflow = self.get_object(request, unquote(object_id))
        if workflow is None:
            raise Http404(f"no workflow has the id {object_id}")
        if not self.has_view_permission(request, workflow):
            raise PermissionDenied
        return workflow
