"""The workflow admin: a workflow with its first nodes, a picture of its DAG, revoke."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Count, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
)
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_cloudtasks import dagsvg, engine
from django_cloudtasks.admin.base import (
    DAG_FIELDS,
    INLINE_NODES,
    WORKFLOW_FIELDS,
    OperatedAdmin,
    badge,
    change_url,
    json_block,
    search_by_uuid,
    short_pk,
)
from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.models import Node, Workflow


class _FirstNodes(BaseInlineFormSet):
    """The first :data:`INLINE_NODES` nodes of a workflow, in index order."""

    def get_queryset(self) -> QuerySet[Node]:
        """Slice once: the inline is read-only, nothing filters it afterwards."""
        if not hasattr(self, "_first_nodes"):
            self._first_nodes = super().get_queryset()[:INLINE_NODES]
        return self._first_nodes


class NodeInline(admin.TabularInline):
    """A workflow's nodes as a compact, read-only table linking to each node's page."""

    model = Node
    fk_name = "workflow"
    formset = _FirstNodes
    fields = (
        "node_link",
        "path",
        "task_label",
        "state_badge",
        "retries",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "nodes"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nodes are created by the engine only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only table."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only table."""
        return False

    @admin.display(description="node")
    def node_link(self, node: Node) -> SafeString:
        """``#index`` linking to the node's page."""
        return format_html(
            '<a href="{}">#{}</a>', change_url(self.admin_site, Node, node.pk), node.index
        )

    @admin.display(description="task")
    def task_label(self, node: Node) -> str:
        """The task name, or what the node is when it runs none."""
        return node.task_name or str(node.get_kind_display())

    @admin.display(description="state")
    def state_badge(self, node: Node) -> SafeString:
        """The state, coloured as in the picture."""
        return badge(node.state)


@admin.register(Workflow)
class WorkflowAdmin(OperatedAdmin):
    """Workflows: list with status and search, detail page with nodes and DAG."""

    list_display = (
        "short_id",
        "name",
        "status_badge",
        "size",
        "created_at",
        "finished_at",
        "duration",
    )
    list_display_links = ("short_id", "name")
    list_filter = ("status", "created_at")
    search_fields = ("id", "name", "nodes__task_name")
    search_help_text = "A workflow or node id (or part of one), a name or a task name."
    actions = ["revoke_workflows"]
    inlines = [NodeInline]
    change_form_template = "admin/django_cloudtasks/workflow/change_form.html"
    fieldsets = (
        (None, {"fields": WORKFLOW_FIELDS}),
        ("Expression", {"classes": ("collapse",), "fields": ("expression_json", "options_json")}),
    )
    readonly_fields = (*WORKFLOW_FIELDS, "expression_json", "options_json")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Workflow], search_term: str
    ) -> tuple[QuerySet[Workflow], bool]:
        """A full UUID finds the workflow with that id or holding that node."""
        found = search_by_uuid(search_term)
        if found is None:
            return super().get_search_results(request, queryset, search_term)
        holding = Node.objects.filter(pk=found).values("workflow_id")
        return queryset.filter(Q(pk=found) | Q(pk__in=holding)), False

    # columns and fields

    @admin.display(description="id", ordering="id")
    def short_id(self, workflow: Workflow) -> str:
        """The first characters of the id (the page shows it whole)."""
        return short_pk(workflow.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, workflow: Workflow) -> SafeString:
        """The status, coloured as in the picture."""
        return badge(workflow.status)

    @admin.display(description="duration")
    def duration(self, workflow: Workflow) -> str:
        """From creation to the end, when it ended."""
        if workflow.finished_at is None:
            return "-"
        seconds = (workflow.finished_at - workflow.created_at).total_seconds()
        return f"{seconds:.3f} s" if seconds < 60 else f"{seconds / 60:.1f} min"

    @admin.display(description="nodes by state")
    def state_counts(self, workflow: Workflow) -> SafeString:
        """How many nodes are in each state, linking to the node list."""
        counts = dict(
            Node.objects.filter(workflow=workflow)
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        nodes_url = reverse(f"{self.admin_site.name}:django_cloudtasks_node_changelist")
        badges = format_html_join(
            " ",
            "{}",
            (
                (badge(state, f"{state} {counts[state]}"),)
                for state in State.values
                if counts.get(state)
            ),
        )
        return format_html(
            '{} <a href="{}?workflow__id__exact={}">list all nodes</a>',
            badges,
            nodes_url,
            workflow.pk,
        )

    @admin.display(description="failed at")
    def failure(self, workflow: Workflow) -> SafeString | str:
        """The node where the workflow failed, with its error."""
        if workflow.status != WorkflowStatus.FAILURE:
            return "-"
        failed = (
            Node.objects.filter(workflow=workflow, state=State.FAILURE)
            .exclude(kind=NodeKind.BARRIER)
            .order_by("finished_at", "index")
            .only("id", "index", "task_name", "error_type", "error_message")
            .first()
        )
        if failed is None:
            return "-"
        return format_html(
            '<a href="{}">#{} {}</a>: {}: {}',
            change_url(self.admin_site, Node, failed.pk),
            failed.index,
            failed.task_name,
            failed.error_type,
            (failed.error_message or "")[:300],
        )

    @admin.display(description="output node")
    def output_link(self, workflow: Workflow) -> SafeString | str:
        """The node whose result is the workflow's result."""
        output = (
            Node.objects.filter(workflow=workflow, index=workflow.output_index)
            .only("id", "index", "task_name", "kind", "state")
            .first()
        )
        if output is None:
            return "-"
        return format_html(
            '<a href="{}">#{} {}</a> {}',
            change_url(self.admin_site, Node, output.pk),
            output.index,
            output.task_name or output.get_kind_display(),
            badge(output.state),
        )

    @admin.display(description="expression")
    def expression_json(self, workflow: Workflow) -> SafeString:
        """The canvas expression as submitted."""
        return json_block(workflow.expression)

    @admin.display(description="options")
    def options_json(self, workflow: Workflow) -> SafeString:
        """The run-wide options given to ``apply_async``."""
        return json_block(workflow.options)

    # detail page

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The detail page, with the DAG picture and a revoke button."""
        workflow = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if workflow is not None:
            context.update(self._detail_context(request, workflow))
        return super().change_view(request, object_id, form_url, context)

    def _detail_context(self, request: HttpRequest, workflow: Workflow) -> dict[str, Any]:
        if workflow.size > dagsvg.MAX_NODES:
            picture = dagsvg.too_large(workflow.size)
        else:
            nodes = list(Node.objects.filter(workflow=workflow).only(*DAG_FIELDS))
            template = change_url(self.admin_site, Node, uuid.UUID(int=0))
            blank = str(uuid.UUID(int=0))
            picture = dagsvg.draw(nodes, lambda node: template.replace(blank, str(node.pk)))
        nodes_url = reverse(f"{self.admin_site.name}:django_cloudtasks_node_changelist")
        return {
            "dag": picture,
            "inline_limit": INLINE_NODES,
            "nodes_truncated": workflow.size > INLINE_NODES,
            "all_nodes_url": f"{nodes_url}?workflow__id__exact={workflow.pk}",
            "revoke_url": (
                self._url("revoke", workflow.pk)
                if workflow.status == WorkflowStatus.PENDING
                and self.has_operate_permission(request)
                else None
            ),
        }

    def get_urls(self) -> list[URLPattern]:
        """Add the revoke button's endpoint."""
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=self._url_name("revoke")),
            *super().get_urls(),
        ]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: revoke one workflow, then show its page again."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        workflow = self._operated_object(request, object_id)
        revoked = engine.revoke_workflow(workflow.pk)
        self.message_user(request, f"Revoked the workflow ({len(revoked)} unfinished nodes).")
        return self._back_to(workflow)

    # actions

    @admin.action(description="Revoke selected workflows", permissions=["operate"])
    def revoke_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        """Revoke every unfinished node of each selected unfinished workflow."""
        unfinished = list(
            queryset.filter(status=WorkflowStatus.PENDING).values_list("pk", flat=True)
        )
        skipped = queryset.count() - len(unfinished)
        nodes = sum(len(engine.revoke_workflow(pk)) for pk in unfinished)
        text = f"Revoked {len(unfinished)} workflow(s) ({nodes} unfinished nodes)."
        if skipped:
            text += f" {skipped} already finished workflow(s) left as they were."
        self.message_user(request, text, messages.SUCCESS if unfinished else messages.WARNING)
