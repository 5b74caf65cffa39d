"""The benchmark's app: it only holds the tasks (``tasks.py`` is autodiscovered)."""

from __future__ import annotations

from django.apps import AppConfig


class BenchConfig(AppConfig):
    """``benchmarks.cloudtasks_bench``."""

    name = "benchmarks.cloudtasks_bench"
    label = "cloudtasks_bench"
    verbose_name = "Cloud Tasks benchmark"
