"""The flow-control keys: per key, the nodes running and waiting, its limit and its rate."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from django_cloudtasks.admin.base import OperatedAdmin
from django_cloudtasks.models import FlowKey, Node


@admin.register(FlowKey)
class FlowKeyAdmin(OperatedAdmin):
    """Read-only: the engine keeps the counts; the sweeper deletes idle keys."""

    list_display = ("key", "running", "waiting_nodes", "capacity", "rate_shown", "next_start_at")
    search_fields = ("key",)
    list_filter = ()
    ordering = ("-waiting", "-running", "key")
    fields = ("key", "running", "waiting_nodes", "capacity", "rate_shown", "next_start_at")
    readonly_fields = fields

    @admin.display(description="waiting", ordering="waiting")
    def waiting_nodes(self, key: FlowKey) -> str:
        """The count of nodes in line, linking to them."""
        if not key.waiting:
            return "0"
        opts = Node._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return format_html(
            '<a href="{}?flow_key={}&state=WAITING">{}</a>', url, key.key, key.waiting
        )

    @admin.display(description="rate")
    def rate_shown(self, key: FlowKey) -> str:
        """Starts per second, or a dash for a key without a rate limit."""
        return "-" if key.rate is None else f"{key.rate:g}/s"

    @admin.display(description="next start allowed at")
    def next_start_at(self, key: FlowKey) -> datetime | None:
        """When the key's rate limit lets the next node start."""
        return None if key.next_start is None else datetime.fromtimestamp(key.next_start, UTC)
