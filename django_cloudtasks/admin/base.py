"""What the workflow and node admins share: limits, formatting, and operated objects."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import (
    Http404,
    HttpRequest,
    HttpResponseRedirect,
)
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_cloudtasks import dagsvg
from django_cloudtasks.constants import State
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.admin")

#: How many nodes the workflow page lists inline; the node list has them all.
INLINE_NODES = 200
#: How much of a JSON value or traceback a detail page shows.
MAX_SHOWN_CHARS = 20_000
#: How many parent or child links a node page lists.
MAX_LINKS = 50

DAG_FIELDS = (
    "id",
    "workflow_id",
    "index",
    "kind",
    "task_name",
    "path",
    "state",
    "parents",
    "errback_of_id",
    "error_type",
    "error_message",
    # for the picture's labels: short arguments, duration, when a scheduled node is due
    "args",
    "kwargs",
    "input_rule",
    "retries",
    "countdown",
    "eta",
    "ready_at",
    "started_at",
    "finished_at",
)

WORKFLOW_FIELDS = (
    "id",
    "name",
    "status_badge",
    "size",
    "state_counts",
    "failure",
    "output_link",
    "created",
    "not_before",
    "finished",
    "duration",
)
NODE_SUMMARY = (
    "id",
    "workflow_link",
    "index",
    "path",
    "kind",
    "task_name",
    "state_badge",
    "queue",
    "retries",
    "attempts",
    "errback_of_link",
    "parent_links",
    "child_links",
)
NODE_ERROR = ("error_type", "error_module", "error_message_pre", "traceback_pre")
NODE_ARGUMENTS = ("args_json", "kwargs_json", "input_json", "options_json")
NODE_TIMING = (
    "created_at",
    "ready_at",
    "countdown",
    "eta",
    "parked",
    "started_at",
    "lease_until",
    "finished_at",
)


def badge(state: str, label: str | None = None) -> SafeString:
    fill, stroke = dagsvg.STATE_COLOURS.get(state, dagsvg.STATE_COLOURS[State.PENDING])
    return format_html(
        '<span class="cloudtasks-state state-{}" style="background:{};border:1px solid {};'
        'border-radius:4px;padding:0 6px;color:#111827;white-space:nowrap">{}</span>',
        state,
        fill,
        stroke,
        label or state,
    )


def attempt_table(log: list[dict[str, Any]] | None) -> SafeString | str:
    """A node's attempt log as a table: attempt, start, end, duration, outcome, error."""
    if not log:
        return "-"
    rows = []
    for entry in log:
        start, end = moment_of(entry.get("started_at")), moment_of(entry.get("finished_at"))
        took = seconds_text((end - start).total_seconds()) if start and end else "-"
        error = ": ".join(p for p in (entry.get("error_type"), entry.get("error_message")) if p)
        rows.append(
            format_html(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                entry.get("attempt", "?"),
                time_html(start) if start else "-",
                time_html(end) if end else "-",
                took,
                badge(str(entry.get("outcome") or "?")),
                error or entry.get("detail") or "",
            )
        )
    return format_html(
        '<table class="ct-attempts"><thead><tr><th>attempt</th><th>started</th>'
        "<th>finished</th><th>took</th><th>outcome</th><th>error</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        format_html_join("", "{}", ((row,) for row in rows)),
    )


def moment_of(text: Any) -> datetime | None:
    """The moment an ISO 8601 text names (an attempt log's times), or None."""
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def time_html(moment: datetime) -> SafeString:
    """A date and time to the second, in the current time zone, kept on one line."""
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    return format_html(
        '<time datetime="{}" style="white-space:nowrap">{}</time>',
        moment.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S"),
    )


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def pre_block(text: str) -> SafeString:
    if len(text) > MAX_SHOWN_CHARS:
        text = f"{text[:MAX_SHOWN_CHARS]}\n… ({len(text):,} characters in all)"
    return format_html(
        '<pre class="cloudtasks-pre" style="margin:0;max-height:32em;overflow:auto;'
        'white-space:pre;padding:8px;background:var(--darkened-bg, #f8f8f8)">{}</pre>',
        text,
    )


def json_block(value: Any) -> SafeString:
    return pre_block(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def short_pk(pk: Any) -> str:
    return str(pk)[:8]


def change_url(admin_site: admin.AdminSite, model: type[Model], pk: Any) -> str:
    opts = model._meta
    return reverse(
        f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change",
        args=[str(pk)],
    )


def search_by_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


class OperatedAdmin(admin.ModelAdmin):
    """A read-only model admin whose actions need the model's change permission."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows are created by the engine only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No edit form: the change page is a detail page."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Deleting is ``cloudtasks_purge``'s job; a half-deleted DAG would hang."""
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Revoke and retry need the model's change permission."""
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def _operated_object(self, request: HttpRequest, object_id: str) -> Any:
        """The object a button acts on, after checking the permission (403, 404)."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"no {self.model._meta.verbose_name} has the id {object_id}")
        return obj

    def _audit(self, request: HttpRequest, obj: Workflow | Node, message: str) -> None:
        """Record what the user did to ``obj``: a ``LogEntry`` and a log line, both naming them."""
        self.log_change(request, obj, message)
        user = request.user.get_username()
        ids = {"workflow_id": str(obj.workflow_id if isinstance(obj, Node) else obj.pk)}
        if isinstance(obj, Node):
            ids["node_id"] = str(obj.pk)
        logger.info("%s (by %s in the admin)", message, user, extra={**ids, "user": user})

    def _back_to(self, obj: Any) -> HttpResponseRedirect:
        return HttpResponseRedirect(change_url(self.admin_site, self.model, obj.pk))

    def _url_name(self, verb: str) -> str:
        opts = self.model._meta
        return f"{opts.app_label}_{opts.model_name}_{verb}"

    def _url(self, verb: str, pk: Any) -> str:
        return reverse(f"{self.admin_site.name}:{self._url_name(verb)}", args=[str(pk)])


# -- workflows -------------------------------------------------------------------------
