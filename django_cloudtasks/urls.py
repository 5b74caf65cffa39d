"""``path("cloudtasks/", include("django_cloudtasks.urls"))``."""

from __future__ import annotations

from django.urls import path

from django_cloudtasks import views

app_name = "cloudtasks"

urlpatterns = [
    path("run/<str:task_name>/", views.run, name="run"),
    path("tracker/", views.tracker, name="tracker"),
    path("revoke/", views.revoke, name="revoke"),
    path("sweep/", views.sweep, name="sweep"),
    path("schedule/<str:name>/", views.schedule, name="schedule"),
    path("schedules/tick/", views.schedules_tick, name="schedules-tick"),
]
