"""The node admin: a node with its data, links to its neighbours, revoke and retry."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
)
from django.urls import URLPattern, path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_cloudtasks import engine
from django_cloudtasks.admin.base import (
    MAX_LINKS,
    NODE_ARGUMENTS,
    NODE_ERROR,
    NODE_SUMMARY,
    NODE_TIMING,
    OperatedAdmin,
    attempt_table,
    badge,
    change_url,
    json_block,
    pre_block,
    search_by_uuid,
    short_pk,
)
from django_cloudtasks.constants import READY_STATES, NodeKind, State
from django_cloudtasks.engine import RetryRefused, retry_node
from django_cloudtasks.exceptions import NodeNotFound
from django_cloudtasks.models import Node, Workflow, id_prefix_range


@admin.register(Node)
class NodeAdmin(OperatedAdmin):
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

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        """Also the nodes of one flow-control key (linked from the keys' page)."""
        return lookup == "flow_key" or super().lookup_allowed(lookup, value, request)

    actions = ["revoke_nodes", "retry_nodes"]
    change_form_template = "admin/django_cloudtasks/node/change_form.html"
    readonly_fields = (
        *NODE_SUMMARY,
        *NODE_ERROR,
        "attempt_history",
        "result_json",
        *NODE_ARGUMENTS,
        *NODE_TIMING,
    )

    def get_fieldsets(self, request: HttpRequest, obj: Node | None = None) -> Any:
        """The node, its error when it has one, result, arguments, then timing."""
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [(None, {"fields": NODE_SUMMARY})]
        if obj is not None and (obj.error_type or obj.error_message or obj.error_traceback):
            fieldsets.append(("Error", {"fields": NODE_ERROR}))
        if obj is not None and obj.attempt_log:
            fieldsets.append(("Attempts", {"fields": ("attempt_history",)}))
        fieldsets += [
            ("Result", {"fields": ("result_json",)}),
            ("Arguments", {"fields": NODE_ARGUMENTS}),
            ("Timing", {"fields": NODE_TIMING}),
        ]
        return fieldsets

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Node], search_term: str
    ) -> tuple[QuerySet[Node], bool]:
        """A full UUID finds the node with that id or the nodes of that workflow; so does
        the start of one (the short id the lists show)."""
        found = search_by_uuid(search_term)
        if found is None:
            results, duplicates = super().get_search_results(request, queryset, search_term)
            ids = id_prefix_range(search_term)
            if ids is None:
                return results, duplicates
            in_workflow = Q(workflow_id__gte=ids[0], workflow_id__lte=ids[1])
            by_id = queryset.filter(Q(pk__range=ids) | in_workflow)
            return results | by_id, duplicates
        return queryset.filter(Q(pk=found) | Q(workflow_id=found)), False

    # columns and fields

    @admin.display(description="id", ordering="id")
    def short_id(self, node: Node) -> str:
        """The first characters of the id (the page shows it whole)."""
        return short_pk(node.pk)

    @admin.display(description="task", ordering="task_name")
    def task_label(self, node: Node) -> str:
        """The task name, or what the node is when it runs none."""
        return node.task_name or str(node.get_kind_display())

    @admin.display(description="state", ordering="state")
    def state_badge(self, node: Node) -> SafeString:
        """The state, coloured as in the picture."""
        return badge(node.state)

    @admin.display(description="workflow", ordering="workflow")
    def workflow_link(self, node: Node) -> SafeString:
        """Link to the node's workflow."""
        return format_html(
            '<a href="{}">{}</a>',
            change_url(self.admin_site, Workflow, node.workflow_id),
            short_pk(node.workflow_id),
        )

    @admin.display(description="error callback of")
    def errback_of_link(self, node: Node) -> SafeString | str:
        """For an error callback, the node whose failure it handles."""
        if node.errback_of_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            change_url(self.admin_site, Node, node.errback_of_id),
            short_pk(node.errback_of_id),
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
                    change_url(self.admin_site, Node, pk),
                    index,
                    task_name or "group join",
                    badge(state),
                )
                for pk, index, task_name, state in sorted(rows, key=lambda row: row[1])
            ),
        )
        more = len(indices) - len(shown)
        return format_html("{} and {} more", links, more) if more else links

    @admin.display(description="attempt history")
    def attempt_history(self, node: Node) -> SafeString | str:
        """Each finished attempt, oldest first: when it ran, how long, how it ended, its error."""
        return attempt_table(node.attempt_log)

    @admin.display(description="args")
    def args_json(self, node: Node) -> SafeString:
        """Positional arguments, as given in the signature."""
        return json_block(node.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, node: Node) -> SafeString:
        """Keyword arguments, as given in the signature."""
        return json_block(node.kwargs)

    @admin.display(description="input")
    def input_json(self, node: Node) -> SafeString:
        """What the parents handed this node (and how it receives it)."""
        return format_html(
            "{}<small>input rule: {}</small>", json_block(node.input), node.input_rule
        )

    @admin.display(description="options")
    def options_json(self, node: Node) -> SafeString:
        """The node's options (queue, countdown, retry policy, callbacks...)."""
        return json_block(node.options)

    @admin.display(description="result")
    def result_json(self, node: Node) -> SafeString:
        """The value the task returned (a group join: its members' results)."""
        return json_block(node.result)

    @admin.display(description="error message")
    def error_message_pre(self, node: Node) -> SafeString:
        """The exception's message."""
        return pre_block(node.error_message)

    @admin.display(description="traceback")
    def traceback_pre(self, node: Node) -> SafeString:
        """The traceback, preformatted."""
        return pre_block(node.error_traceback or "(none recorded)")

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
            self._audit(request, node, _revoked_message(revoked))
            self.message_user(request, f"Revoked {len(revoked)} node(s), downstream included.")
        else:
            self.message_user(request, "The node had already finished.", messages.WARNING)
        return self._back_to(node)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: retry one failed node."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        node = self._operated_object(request, object_id)
        self._retry(request, [node])
        return self._back_to(node)

    # actions

    @admin.action(
        description="Revoke selected nodes (and what is downstream)", permissions=["operate"]
    )
    def revoke_nodes(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        """Revoke each selected unfinished node and everything downstream of it."""
        selected = list(queryset.only("id", "workflow_id", "task_name", "kind", "state"))
        unfinished = [node for node in selected if node.state not in READY_STATES]
        revoked: set[str] = set()
        for node in unfinished:
            ids = engine.revoke_node(node.pk)
            if ids:
                self._audit(request, node, _revoked_message(ids))
            revoked.update(ids)
        text = (
            f"Revoked {len(revoked)} node(s): {len(unfinished)} selected, "
            f"{len(revoked - {str(node.pk) for node in unfinished})} downstream."
        )
        if len(selected) > len(unfinished):
            text += f" {len(selected) - len(unfinished)} selected node(s) had already finished."
        self.message_user(request, text, messages.SUCCESS if revoked else messages.WARNING)

    @admin.action(description="Retry selected failed nodes", permissions=["operate"])
    def retry_nodes(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        """Run each selected failed node again; its workflow continues from there."""
        self._retry(
            request,
            list(
                queryset.order_by("workflow", "index").only(
                    "id", "workflow_id", "task_name", "kind", "state"
                )
            ),
        )

    def _retry(self, request: HttpRequest, nodes: list[Node]) -> None:
        for node in nodes:
            try:
                report = retry_node(node.pk)
            except (RetryRefused, NodeNotFound) as exc:
                self.message_user(request, f"Not retried: {exc}.", messages.WARNING)
                continue
            self._audit(
                request,
                node,
                f"Retried the node ({len(report.reset)} downstream node(s) waiting on it again).",
            )
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


def _revoked_message(revoked: list[str]) -> str:
    return f"Revoked {len(revoked)} node(s), downstream included."
