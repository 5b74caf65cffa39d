"""The workflow list: each unfinished workflow's progress, read for the whole page in one
query, drawn as a bar; and a filter by the tasks a workflow runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from django_cloudtasks import dagsvg
from django_cloudtasks.constants import READY_STATES, State, WorkflowStatus
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry


def page_progress(workflow_ids: list[Any]) -> dict[Any, tuple[int, bool]]:
    """For each workflow: how many nodes are final, and whether any has begun."""
    rows = (
        Node.objects.filter(workflow_id__in=workflow_ids)
        .values("workflow_id")
        .annotate(
            done=Count("state", filter=Q(state__in=READY_STATES)),
            begun=Count("state", filter=Q(state__in=(State.STARTED, State.RETRY))),
        )
        .values_list("workflow_id", "done", "begun")
    )
    return {pk: (done, bool(begun)) for pk, done, begun in rows}


class WorkflowChangeList(ChangeList):
    """Reads the progress of the page's unfinished workflows in one query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        pending = [w.pk for w in self.result_list if w.status == WorkflowStatus.PENDING]
        progress = page_progress(pending) if pending else {}
        for workflow in self.result_list:
            workflow.progress = progress.get(workflow.pk, (0, False))


def progress_of(workflow: Workflow) -> tuple[int, bool]:
    """``(done, begun)`` as the change list read it, or read now (a detail page)."""
    progress = getattr(workflow, "progress", None)
    if progress is None:
        progress = page_progress([workflow.pk]).get(workflow.pk, (0, False))
    return progress


def progress_bar(workflow: Workflow) -> SafeString:
    """A bar of the nodes done out of the workflow's size, coloured by its status."""
    if workflow.status == WorkflowStatus.PENDING:
        done, _ = progress_of(workflow)
        colour = dagsvg.STATE_COLOURS[State.STARTED][1]
    else:
        done = workflow.size
        colour = dagsvg.STATE_COLOURS[str(workflow.status)][1]
    size = max(workflow.size, 1)
    percent = min(100.0, 100 * done / size)
    return format_html(
        '<span class="ct-list-progress" title="{} of {} nodes done" '
        'style="display:inline-block;width:90px;height:8px;border-radius:4px;'
        "background:var(--darkened-bg, #f3f4f6);border:1px solid var(--hairline-color, #ddd);"
        'vertical-align:middle;overflow:hidden"><span style="display:block;height:100%;'
        'width:{}%;background:{}"></span></span> <small>{}%</small>',
        done,
        workflow.size,
        f"{percent:.0f}",
        colour,
        f"{percent:.0f}",
    )


class TaskNameFilter(admin.SimpleListFilter):
    """Workflows with a node of the chosen task (the registered tasks, no query to list)."""

    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The names of the registered tasks."""
        return [(name, name) for name in sorted(registry.names())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> QuerySet[Workflow]:
        """Workflows holding a node of that task (the ``task_name`` index answers)."""
        name = self.value()
        if not name:
            return queryset
        return queryset.filter(pk__in=Node.objects.filter(task_name=name).values("workflow_id"))
