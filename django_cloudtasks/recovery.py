"""Retrying a failed node by hand; the code lives in :mod:`django_cloudtasks.engine.resume`.

This module keeps the documented path ``django_cloudtasks.recovery.retry_node``.
"""

from __future__ import annotations

from django_cloudtasks.engine.resume import RetryRefused, RetryReport, retry_node

__all__ = ["RetryRefused", "RetryReport", "retry_node"]
