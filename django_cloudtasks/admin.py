"""The admin: workflows with their nodes and a picture of the DAG, nodes with their data.

Both models are read-only here (the engine owns every state change). What an operator
may do goes through actions and buttons on the detail pages: revoke workflows or
nodes, and retry a failed node so that its workflow continues from there. Those need
the model's *change* permission; looking needs *view*.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_cloudtasks import dagsvg, engine
from django_cloudtasks.constants import READY_STATES, NodeKind, State, WorkflowStatus
from django_cloudtasks.engine import RetryRefused, retry_node
from django_cloudtasks.exceptions import NodeNotFound
from django_cloudtasks.models import Node, Workflow

#: How many nodes the workflow page lists inline; the node list has them all.
INLINE_NODES = 200
#: How much of a JSON value or traceback a detail page shows.
MAX_SHOWN_CHARS = 20_000
#: How many parent or child links a node page lists.
MAX_LINKS = 50

_NODE_FIELDS = (
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
)

_WORKFLOW_FIELDS = (
    "id",
    "name",
    "status_badge",
    "size",
    "state_counts",
    "failure",
    "output_link",
    "created_at",
    "not_before",
    "finished_at",
    "duration",
)
_NODE_SUMMARY = (
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
_NODE_ERROR = ("error_type", "error_module", "error_message_pre", "traceback_pre")
_NODE_ARGUMENTS = ("args_json", "kwargs_json", "input_json", "options_json")
_NODE_TIMING = (
    "created_at",
    "ready_at",
    "countdown",
    "eta",
    "parked",
    "started_at",
    "lease_until",
    "finished_at",
)


def _state_badge(state: str, label: str | None = None) -> SafeString:
    fill, stroke = dagsvg.STATE_COLOURS.get(state, dagsvg.STATE_COLOURS[State.PENDING])
    return format_html(
        '<span class="cloudtasks-state state-{}" style="background:{};border:1px solid {};'
        'border-radius:4px;padding:0 6px;color:#111827;white-space:nowrap">{}</span>',
        state,
        fill,
        stroke,
        label or state,
    )


def _pre(text: str) -> SafeString:
    if len(text) > MAX_SHOWN_CHARS:
        text = f"{text[:MAX_SHOWN_CHARS]}\n… ({len(text):,} characters in all)"
    return format_html(
        '<pre class="cloudtasks-pre" style="margin:0;max-height:32em;overflow:auto;'
        'white-space:pre;padding:8px;background:var(--darkened-bg, #f8f8f8)">{}</pre>',
        text,
    )


def _json(value: Any) -> SafeString:
    return _pre(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _short(pk: Any) -> str:
    return str(pk)[:8]


def _change_url(admin_site: admin.AdminSite, model: type[Model], pk: Any) -> str:
    opts = model._meta
    return reverse(
        f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change",
        args=[str(pk)],
    )


def _search_by_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


class _OperatedAdmin(admin.ModelAdmin):
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

    def _back_to(self, obj: Any) -> HttpResponseRedirect:
        return HttpResponseRedirect(_change_url(self.admin_site, self.model, obj.pk))

    def _url_name(self, verb: str) -> str:
        opts = self.model._meta
        return f"{opts.app_label}_{opts.model_name}_{verb}"

    def _url(self, verb: str, pk: Any) -> str:
        return reverse(f"{self.admin_site.name}:{self._url_name(verb)}", args=[str(pk)])


# -- workflows -------------------------------------------------------------------------


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
            '<a href="{}">#{}</a>', _change_url(self.admin_site, Node, node.pk), node.index
        )

    @admin.display(description="task")
    def task_label(self, node: Node) -> str:
        """The task name, or what the node is when it runs none."""
        return node.task_name or str(node.get_kind_display())

    @admin.display(description="state")
    def state_badge(self, node: Node) -> SafeString:
        """The state, coloured as in the picture."""
        return _state_badge(node.state)


@admin.register(Workflow)
class WorkflowAdmin(_OperatedAdmin):
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
        (None, {"fields": _WORKFLOW_FIELDS}),
        ("Expression", {"classes": ("collapse",), "fields": ("expression_json", "options_json")}),
    )
    readonly_fields = (*_WORKFLOW_FIELDS, "expression_json", "options_json")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Workflow], search_term: str
    ) -> tuple[QuerySet[Workflow], bool]:
        """A full UUID finds the workflow with that id or holding that node."""
        found = _search_by_uuid(search_term)
        if found is None:
            return super().get_search_results(request, queryset, search_term)
        holding = Node.objects.filter(pk=found).values("workflow_id")
        return queryset.filter(Q(pk=found) | Q(pk__in=holding)), False

    # columns and fields

    @admin.display(description="id", ordering="id")
    def short_id(self, workflow: Workflow) -> str:
        """The first characters of the id (the page shows it whole)."""
        return _short(workflow.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, workflow: Workflow) -> SafeString:
        """The status, coloured as in the picture."""
        return _state_badge(workflow.status)

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
                (_state_badge(state, f"{state} {counts[state]}"),)
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
            _change_url(self.admin_site, Node, failed.pk),
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
            _change_url(self.admin_site, Node, output.pk),
            output.index,
            output.task_name or output.get_kind_display(),
            _state_badge(output.state),
        )

    @admin.display(description="expression")
    def expression_json(self, workflow: Workflow) -> SafeString:
        """The canvas expression as submitted."""
        return _json(workflow.expression)

    @admin.display(description="options")
    def options_json(self, workflow: Workflow) -> SafeString:
        """The run-wide options given to ``apply_async``."""
        return _json(workflow.options)

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
            nodes = list(Node.objects.filter(workflow=workflow).only(*_NODE_FIELDS))
            template = _change_url(self.admin_site, Node, uuid.UUID(int=0))
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


# -- nodes -----------------------------------------------------------------------------


@admin.register(Node)
class NodeAdmin(_OperatedAdmin):
    """Nodes: list with filters, detail page with arguments, result and error."""

    list_display = (
        "short_id",
        "task_label",
        "state_badge",
        "workflow_link",
        "index",
        "retries",
        "attempts",
        "started_at",
        "finished_at",
    )
    list_display_links = ("short_id", "task_label")
    list_filter = ("state", "kind", "task_name")
    search_fields = ("id", "task_name", "workflow__id")
    search_help_text = "A node or workflow id (or part of one), or a task name."
    actions = ["revoke_nodes", "retry_nodes"]
    change_form_template = "admin/django_cloudtasks/node/change_form.html"
    readonly_fields = (
        *_NODE_SUMMARY,
        *_NODE_ERROR,
        "result_json",
        *_NODE_ARGUMENTS,
        *_NODE_TIMING,
    )

    def get_fieldsets(self, request: HttpRequest, obj: Node | None = None) -> Any:
        """The node, its error when it has one, result, arguments, then timing."""
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [(None, {"fields": _NODE_SUMMARY})]
        if obj is not None and (obj.error_type or obj.error_message or obj.error_traceback):
            fieldsets.append(("Error", {"fields": _NODE_ERROR}))
        fieldsets += [
            ("Result", {"fields": ("result_json",)}),
            ("Arguments", {"fields": _NODE_ARGUMENTS}),
            ("Timing", {"fields": _NODE_TIMING}),
        ]
        return fieldsets

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Node], search_term: str
    ) -> tuple[QuerySet[Node], bool]:
        """A full UUID finds the node with that id or the nodes of that workflow."""
        found = _search_by_uuid(search_term)
        if found is None:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(Q(pk=found) | Q(workflow_id=found)), False

    # columns and fields

    @admin.display(description="id", ordering="id")
    def short_id(self, node: Node) -> str:
        """The first characters of the id (the page shows it whole)."""
        return _short(node.pk)

    @admin.display(description="task", ordering="task_name")
    def task_label(self, node: Node) -> str:
        """The task name, or what the node is when it runs none."""
        return node.task_name or str(node.get_kind_display())

    @admin.display(description="state", ordering="state")
    def state_badge(self, node: Node) -> SafeString:
        """The state, coloured as in the picture."""
        return _state_badge(node.state)

    @admin.display(description="workflow", ordering="workflow")
    def workflow_link(self, node: Node) -> SafeString:
        """Link to the node's workflow."""
        return format_html(
            '<a href="{}">{}</a>',
            _change_url(self.admin_site, Workflow, node.workflow_id),
            _short(node.workflow_id),
        )

    @admin.display(description="error callback of")
    def errback_of_link(self, node: Node) -> SafeString | str:
        """For an error callback, the node whose failure it handles."""
        if node.errback_of_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            _change_url(self.admin_site, Node, node.errback_of_id),
            _short(node.errback_of_id),
        )

    @admin.display(description="parents")
    def parent_links(self, node: Node) -> SafeString | str:
        """Links to the nodes this one waits on."""
        return self._links(node, node.parents or [])

    @admin.display(description="children")
    def child_links(self, node: Node) -> SafeString | str:
        """Links to the nodes waiting on this one."""
        return self._links(node, node.children or [])

    def _links(self, node: Node, indices: list[int]) -> SafeString | str:
        if not indices:
            return "-"
        shown = sorted(indices)[:MAX_LINKS]
        rows = Node.objects.filter(workflow_id=node.workflow_id, index__in=shown).values_list(
            "pk", "index", "task_name", "state"
        )
        links = format_html_join(
            ", ",
            '<a href="{}">#{} {}</a> {}',
            (
                (
                    _change_url(self.admin_site, Node, pk),
                    index,
                    task_name or "group join",
                    _state_badge(state),
                )
                for pk, index, task_name, state in sorted(rows, key=lambda row: row[1])
            ),
        )
        more = len(indices) - len(shown)
        return format_html("{} and {} more", links, more) if more else links

    @admin.display(description="args")
    def args_json(self, node: Node) -> SafeString:
        """Positional arguments, as given in the signature."""
        return _json(node.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, node: Node) -> SafeString:
        """Keyword arguments, as given in the signature."""
        return _json(node.kwargs)

    @admin.display(description="input")
    def input_json(self, node: Node) -> SafeString:
        """What the parents handed this node (and how it receives it)."""
        return format_html("{}<small>input rule: {}</small>", _json(node.input), node.input_rule)

    @admin.display(description="options")
    def options_json(self, node: Node) -> SafeString:
        """The node's options (queue, countdown, retry policy, callbacks...)."""
        return _json(node.options)

    @admin.display(description="result")
    def result_json(self, node: Node) -> SafeString:
        """The value the task returned (a group join: its members' results)."""
        return _json(node.result)

    @admin.display(description="error message")
    def error_message_pre(self, node: Node) -> SafeString:
        """The exception's message."""
        return _pre(node.error_message)

    @admin.display(description="traceback")
    def traceback_pre(self, node: Node) -> SafeString:
        """The traceback, preformatted."""
        return _pre(node.error_traceback or "(none recorded)")

    # detail page

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The detail page, with revoke and retry buttons when they apply."""
        node = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if node is not None and self.has_operate_permission(request):
            if node.state not in READY_STATES:
                context["revoke_url"] = self._url("revoke", node.pk)
            if node.state == State.FAILURE and node.kind != NodeKind.BARRIER:
                context["retry_url"] = self._url("retry", node.pk)
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        """Add the revoke and retry buttons' endpoints."""
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/revoke/", wrap(self.revoke_view), name=self._url_name("revoke")),
            path("<path:object_id>/retry/", wrap(self.retry_view), name=self._url_name("retry")),
            *super().get_urls(),
        ]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: revoke one node and what is downstream of it."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        node = self._operated_object(request, object_id)
        revoked = engine.revoke_node(node.pk)
        if revoked:
            self.message_user(request, f"Revoked {len(revoked)} node(s), downstream included.")
        else:
            self.message_user(request, "The node had already finished.", messages.WARNING)
        return self._back_to(node)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: retry one failed node."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        node = self._operated_object(request, object_id)
        self._retry(request, [node.pk])
        return self._back_to(node)

    # actions

    @admin.action(
        description="Revoke selected nodes (and what is downstream)", permissions=["operate"]
    )
    def revoke_nodes(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        """Revoke each selected unfinished node and everything downstream of it."""
        selected = list(queryset.values_list("pk", "state"))
        unfinished = [pk for pk, state in selected if state not in READY_STATES]
        revoked: set[str] = set()
        for pk in unfinished:
            revoked.update(engine.revoke_node(pk))
        text = (
            f"Revoked {len(revoked)} node(s): {len(unfinished)} selected, "
            f"{len(revoked - {str(pk) for pk in unfinished})} downstream."
        )
        if len(selected) > len(unfinished):
            text += f" {len(selected) - len(unfinished)} selected node(s) had already finished."
        self.message_user(request, text, messages.SUCCESS if revoked else messages.WARNING)

    @admin.action(description="Retry selected failed nodes", permissions=["operate"])
    def retry_nodes(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        """Run each selected failed node again; its workflow continues from there."""
        self._retry(
            request, list(queryset.order_by("workflow", "index").values_list("pk", flat=True))
        )

    def _retry(self, request: HttpRequest, pks: list[Any]) -> None:
        for pk in pks:
            try:
                report = retry_node(pk)
            except (RetryRefused, NodeNotFound) as exc:
                self.message_user(request, f"Not retried: {exc}.", messages.WARNING)
                continue
            text = f"Retrying node #{report.index} ({report.task_name})"
            if report.reset:
                text += f"; {len(report.reset)} downstream node(s) are waiting on it again"
            if report.resumed:
                text += "; the workflow is running again."
            else:
                blockers = ", ".join(f"#{i}" for i in report.blocked_by) or "other failed nodes"
                verb = "is" if len(report.blocked_by) == 1 else "are"
                text += f"; the workflow stays failed until {blockers} {verb} retried too."
            self.message_user(request, text, messages.SUCCESS)
