"""The admin's Schedules page: each schedule's next and last run, run-now, pause, resume,
and the history of runs, each linked to its workflow's page (with its DAG)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from django_cloudtasks.models import ScheduleRun, ScheduleState, Workflow
from django_cloudtasks.schedules import runs
from django_cloudtasks.schedules.cloud import SchedulerJobs
from django_cloudtasks.schedules.declarations import Schedule, ScheduleError, all_schedules
from django_cloudtasks.schedules.overview import overview

#: The query parameter that asks the Schedules page to read the jobs and show drift.
DRIFT_PARAMETER = "drift"


class ScheduleRunAdmin(admin.ModelAdmin):
    """The Schedules page: the schedules above, their runs below (read-only)."""

    list_display = ("schedule", "slot", "state", "outcome_badge", "trigger", "workflow_link")
    list_filter = ("schedule", "state", "trigger")
    search_fields = ("schedule",)
    date_hierarchy = "slot"
    change_list_template = "admin/django_cloudtasks/schedulerun/change_list.html"
    readonly_fields = ("schedule", "slot", "state", "trigger", "workflow_link", "started_at")
    fields = readonly_fields
    list_select_related = ("workflow",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs are recorded by the schedules only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """No edit form."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A run's row is what makes its slot start once: it stays."""
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Run-now, pause and resume need the change permission on schedule runs."""
        return bool(request.user.has_perm("django_cloudtasks.change_schedulerun"))

    @admin.display(description="outcome")
    def outcome_badge(self, run: ScheduleRun) -> str:
        """The workflow's status for a started run, else the run's state."""
        return run.outcome

    @admin.display(description="workflow")
    def workflow_link(self, run: ScheduleRun) -> str:
        """A link to the workflow's page, where its DAG is drawn."""
        if run.workflow_id is None:
            return "-"
        opts = Workflow._meta
        url = reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
            args=[str(run.workflow_id)],
        )
        return format_html('<a href="{}">{}</a>', url, str(run.workflow_id)[:8])

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The run history, with the table of schedules above it.

        With ``?drift=1`` the table also says how each job on Cloud Scheduler differs
        from the code (reading the jobs, so only when asked).
        """
        with_drift = DRIFT_PARAMETER in request.GET
        if with_drift:  # not a filter of the run list: the changelist would refuse it
            query = request.GET.copy()
            del query[DRIFT_PARAMETER]
            request.GET = QueryDict(query.urlencode())
        problem = ""
        try:
            schedules = all_schedules()
            drift = self._drift(request, schedules) if with_drift else None
            lines = overview(schedules.values(), timezone.now(), drift)
        except ScheduleError as exc:
            lines, problem = [], str(exc)
        context = {
            "schedules": lines,
            "schedules_problem": problem,
            "with_drift": with_drift,
            "can_operate": self.has_operate_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def _drift(self, request: HttpRequest, schedules: dict[str, Schedule]) -> dict[str, str]:
        """Each schedule's drift; a warning, and no drift, when the jobs cannot be read."""
        jobs = SchedulerJobs()
        paused = ScheduleState.objects.filter(paused=True).values_list("name", flat=True)
        try:
            return jobs.drift(schedules, paused=list(paused))
        except (gexc.GoogleAPICallError, gexc.RetryError, auth_exceptions.GoogleAuthError) as exc:
            self.message_user(
                request, f"Cannot read the Cloud Scheduler jobs: {exc}", messages.WARNING
            )
            return {}
        finally:
            jobs.close()

    def get_urls(self) -> list[URLPattern]:
        """Add run-now, pause and resume."""
        wrap = self.admin_site.admin_view
        return [
            path(
                "schedule/<str:name>/<str:verb>/",
                wrap(self.operate_view),
                name="django_cloudtasks_schedule_operate",
            ),
            *super().get_urls(),
        ]

    def operate_view(self, request: HttpRequest, name: str, verb: str) -> HttpResponse:
        """POST: run-now, pause or resume one schedule, then show the page again."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied
        schedule = self._schedule(name)
        if verb == "run-now":
            fired = runs.run_now(schedule)
            assert fired.run is not None
            self.message_user(request, f"{name}: started workflow {fired.run.workflow_id}.")
        elif verb in ("pause", "resume"):
            self._pause(request, schedule, paused=verb == "pause")
        else:
            raise Http404(f"no operation {verb!r}")
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:django_cloudtasks_schedulerun_changelist")
        )

    def _schedule(self, name: str) -> Schedule:
        try:
            return all_schedules()[name]
        except (KeyError, ScheduleError):
            raise Http404(f"no schedule is called {name!r}") from None

    def _pause(self, request: HttpRequest, schedule: Schedule, paused: bool) -> None:
        word = "paused" if paused else "resumed"
        runs.set_paused(schedule.name, paused)
        jobs = SchedulerJobs()
        try:
            found = jobs.set_paused(schedule.name, paused)
        except (gexc.GoogleAPICallError, gexc.RetryError, auth_exceptions.GoogleAuthError) as exc:
            self.message_user(
                request,
                f"{schedule.name}: {word} in the database; Cloud Scheduler refused: {exc}",
                messages.WARNING,
            )
            return
        finally:
            jobs.close()
        where = "in Cloud Scheduler and the database" if found else "in the database (no job yet)"
        self.message_user(request, f"{schedule.name}: {word} {where}.")


admin.site.register(ScheduleRun, ScheduleRunAdmin)
