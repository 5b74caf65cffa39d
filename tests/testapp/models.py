from __future__ import annotations

from django.db import models


class Execution(models.Model):
    """One execution of a test task, recorded by the task itself."""

    task = models.CharField(max_length=100)
    value = models.JSONField(null=True)
    created = models.DateTimeField(auto_now_add=True)
