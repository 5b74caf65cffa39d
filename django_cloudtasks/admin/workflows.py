"""The workflow admin: a workflow with its first nodes, a picture of its DAG, revoke."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
)
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from django_cloudtasks import dagsvg, engine
from django_cloudtasks.admin.base import (
    DAG_FIELDS,
    INLINE_NODES,
    WORKFLOW_FIELDS,
    badge,
    change_url,
    json_block,
    search_by_uuid,
    seconds_text,
    short_pk,
    time_html,
)
from django_cloudtasks.admin.listing import (
    TaskNameFilter,
    WorkflowChangeList,
    progress_bar,
    progress_of,
)
from django_cloudtasks.admin.live import LivePage, progress_data, progress_html
from django_cloudtasks.constants import NodeKind, State, WorkflowStatus
from django_cloudtasks.engine.join_shards import SHARD_OF
from django_cloudtasks.models import Node, Workflow, id_prefix_range


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
        "attempts",
        "started",
        "finished",
        "duration",
        "error_summary",
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

    @admin.display(description="started")
    def started(self, node: Node) -> SafeString | str:
        """When its run began, to the second."""
        return time_html(node.started_at) if node.started_at else "-"

    @admin.display(description="finished")
    def finished(self, node: Node) -> SafeString | str:
        """When it reached its final state, to the second."""
        return time_html(node.finished_at) if node.finished_at else "-"

    @admin.display(description="duration")
    def duration(self, node: Node) -> str:
        """How long its run took (or has taken so far)."""
        if node.started_at is None:
            return "-"
        if node.finished_at is None:
            return f"{seconds_text((timezone.now() - node.started_at).total_seconds())} so far"
        return seconds_text((node.finished_at - node.started_at).total_seconds())

    @admin.display(description="error")
    def error_summary(self, node: Node) -> str:
        """The error's type and the start of its message (the node's page has it whole)."""
        if not node.error_type:
            return ""
        message = node.error_message or ""
        short = message if len(message) <= 80 else f"{message[:79]}…"
        return f"{node.error_type}: {short}" if short else node.error_type

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
class WorkflowAdmin(LivePage):
    """Workflows: list with status, progress, filters and search; a detail page with its
    live progress and timeline, its nodes and its DAG."""

    list_display = (
        "short_id",
        "name",
        "status_badge",
        "progress_column",
        "size",
        "created",
        "finished",
        "duration",
    )
    list_display_links = ("short_id", "name")
    list_filter = ("status", TaskNameFilter, "created_at", "finished_at")
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
        """A full UUID finds the workflow with that id or holding that node; so does the
        start of one (the short id the lists show)."""
        found = search_by_uuid(search_term)
        if found is None:
            results, duplicates = super().get_search_results(request, queryset, search_term)
            ids = id_prefix_range(search_term)
            if ids is None:
                return results, duplicates
            holding = Node.objects.filter(pk__range=ids).values("workflow_id")
            by_id = queryset.filter(Q(pk__range=ids) | Q(pk__in=holding))
            return results | by_id, duplicates
        holding = Node.objects.filter(pk=found).values("workflow_id")
        return queryset.filter(Q(pk=found) | Q(pk__in=holding)), False

    # columns and fields

    @admin.display(description="id", ordering="id")
    def short_id(self, workflow: Workflow) -> str:
        """The first characters of the id (the page shows it whole)."""
        return short_pk(workflow.pk)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        """A change list that reads the progress of the unfinished workflows it shows."""
        return WorkflowChangeList

    @admin.display(description="status", ordering="status")
    def status_badge(self, workflow: Workflow) -> SafeString:
        """The status, coloured as in the picture; RUNNING with its progress once begun."""
        if workflow.status != WorkflowStatus.PENDING:
            return badge(workflow.status)
        done, begun = progress_of(workflow)
        if not (done or begun):
            return badge(WorkflowStatus.PENDING)
        return badge(State.STARTED, f"RUNNING {done}/{workflow.size}")

    @admin.display(description="created", ordering="created_at")
    def created(self, workflow: Workflow) -> SafeString:
        """When it was created, to the second."""
        return time_html(workflow.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, workflow: Workflow) -> SafeString | str:
        """When it ended, to the second."""
        return time_html(workflow.finished_at) if workflow.finished_at else "-"

    @admin.display(description="duration")
    def duration(self, workflow: Workflow) -> str:
        """From creation to the end; for an unfinished workflow, so far."""
        end = workflow.finished_at
        if end is None:
            return f"{seconds_text((timezone.now() - workflow.created_at).total_seconds())} so far"
        return seconds_text((end - workflow.created_at).total_seconds())

    @admin.display(description="progress")
    def progress_column(self, workflow: Workflow) -> SafeString:
        """A bar of the nodes done out of all (full once the workflow has finished)."""
        return progress_bar(workflow)

    @admin.display(description="progress")
    def state_counts(self, workflow: Workflow) -> SafeString:
        """A bar of the nodes done and the count in each state, kept up to date by the
        page's script; and a link to the node list."""
        nodes_url = reverse(f"{self.admin_site.name}:django_cloudtasks_node_changelist")
        return format_html(
            '<div id="ct-live-progress">{}</div><a href="{}?workflow__id__exact={}">'
            "list all nodes</a>",
            progress_html(progress_data(workflow)),
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
            # The shards of a large join count for it and are not part of the canvas.
            rows = Node.objects.filter(workflow=workflow).exclude(options__has_key=SHARD_OF)
            nodes = list(rows.only(*DAG_FIELDS))
            template = change_url(self.admin_site, Node, uuid.UUID(int=0))
            blank = str(uuid.UUID(int=0))
            expanded = set(request.GET.getlist("expand"))

            def expand_url(group_path: str, expand: bool) -> str:
                paths = expanded | {group_path} if expand else expanded - {group_path}
                query = urlencode([("expand", p) for p in sorted(paths)])
                return f"?{query}#workflow-graph" if query else "?#workflow-graph"

            picture = dagsvg.draw(
                nodes,
                lambda node: template.replace(blank, str(node.pk)),
                expanded=expanded,
                expand_url=expand_url,
                not_before=workflow.not_before,
            )
        nodes_url = reverse(f"{self.admin_site.name}:django_cloudtasks_node_changelist")
        return {
            **self.live_context(workflow),
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
        """Add the revoke button's endpoint, and the progress and timeline the page polls."""
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=self._url_name("revoke")),
            *self.live_urls(),
            *super().get_urls(),
        ]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: revoke one workflow, then show its page again."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        workflow = self._operated_object(request, object_id)
        revoked = engine.revoke_workflow(workflow.pk)
        text = f"Revoked the workflow ({len(revoked)} unfinished nodes)."
        if revoked:
            self._audit(request, workflow, text)
        self.message_user(request, text)
        return self._back_to(workflow)

    # actions

    @admin.action(description="Revoke selected workflows", permissions=["operate"])
    def revoke_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        """Revoke every unfinished node of each selected unfinished workflow."""
        unfinished = list(
            queryset.filter(status=WorkflowStatus.PENDING).only("id", "name", "status")
        )
        skipped = queryset.count() - len(unfinished)
        nodes = 0
        for workflow in unfinished:
            revoked = engine.revoke_workflow(workflow.pk)
            if revoked:
                self._audit(
                    request, workflow, f"Revoked the workflow ({len(revoked)} unfinished nodes)."
                )
            nodes += len(revoked)
        text = f"Revoked {len(unfinished)} workflow(s) ({nodes} unfinished nodes)."
        if skipped:
            text += f" {skipped} already finished workflow(s) left as they were."
        self.message_user(request, text, messages.SUCCESS if unfinished else messages.WARNING)


# -- nodes -----------------------------------------------------------------------------
