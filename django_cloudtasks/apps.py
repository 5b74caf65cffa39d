"""Django app configuration: discovers tasks, installs the engine, registers checks."""

from __future__ import annotations

from django.apps import AppConfig


class CloudTasksConfig(AppConfig):
    """The ``django_cloudtasks`` app."""

    name = "django_cloudtasks"
    label = "django_cloudtasks"
    verbose_name = "Cloud Tasks workflows"
    default_auto_field = "django.db.models.BigAutoField"
