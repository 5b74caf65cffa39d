"""Read-only admin pages for the rows the original package (1.x) stored.

Upgrading keeps its ``cloudchain`` and ``cloudtask`` tables; these pages let an operator
look at that history. Nothing here can add, change or delete a row.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from django_cloudtasks.models import CloudChain, CloudTask


class _ReadOnly(admin.ModelAdmin):
    """Every field shown, nothing editable, no add or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class CloudTaskInline(admin.TabularInline):
    """The tasks of a 1.x chain."""

    model = CloudTask
    fk_name = "chain"
    extra = 0
    fields = ("id", "endpoint_path", "status", "is_group", "payload", "execution_result")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CloudChain)
class CloudChainAdmin(_ReadOnly):
    """Chains from 1.x, read-only."""

    list_display = ("id", "status", "parent_chain", "created_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("id",)
    inlines = [CloudTaskInline]


@admin.register(CloudTask)
class CloudTaskAdmin(_ReadOnly):
    """Tasks from 1.x, read-only."""

    list_display = ("id", "endpoint_path", "status", "chain", "is_group", "created_at")
    list_filter = ("status", "is_group")
    search_fields = ("id", "endpoint_path", "external_task_name")
    list_select_related = ("chain",)
