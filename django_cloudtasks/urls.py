"""``path("cloudtasks/", include("django_cloudtasks.urls"))``."""

from __future__ import annotations

from django.urls import path, register_converter

from django_cloudtasks import views
from django_cloudtasks.context import is_async
from django_cloudtasks.registry import registry


class AsyncTaskName:
    """A path segment naming a registered ``async def`` task; any other name does not match.

    It routes the deliveries of async tasks to the async run view, and leaves every
    other task (and an unknown name, which gets its 404) to the plain one.
    """

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        """``value`` when it names an async task.

        Raises:
            ValueError: otherwise, so that the next pattern is tried.
        """
        if value in registry and is_async(registry.get(value).__wrapped__):
            return value
        raise ValueError(f"{value!r} is not an async task")

    def to_url(self, value: str) -> str:
        """The name as it is."""
        return value


register_converter(AsyncTaskName, "cloudtasks_async_task")

app_name = "cloudtasks"

urlpatterns = [
    path("run/<cloudtasks_async_task:task_name>/", views.run_async, name="run-async"),
    path("run/<str:task_name>/", views.run, name="run"),
    path("spawn/", views.spawn, name="spawn"),
    path("tracker/", views.tracker, name="tracker"),
    path("revoke/", views.revoke, name="revoke"),
    path("sweep/", views.sweep, name="sweep"),
    path("schedule/<str:name>/", views.schedule, name="schedule"),
    path("schedules/tick/", views.schedules_tick, name="schedules-tick"),
]
