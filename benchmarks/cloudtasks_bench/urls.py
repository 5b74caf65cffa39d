"""Only the library's endpoints."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("cloudtasks/", include("django_cloudtasks.urls"))]
