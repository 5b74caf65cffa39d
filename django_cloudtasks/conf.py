"""Settings, read lazily: ``settings.CLOUDTASKS[KEY]``, then ``TASKAPP_*`` variables."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

#: The short names of the in-tree transports, with the dotted path each stands for.
TRANSPORTS = {
    "cloudtasks": "django_cloudtasks.transports.cloudtasks.CloudTasksTransport",
    "eager": "django_cloudtasks.transports.eager.EagerTransport",
    "memory": "django_cloudtasks.transports.memory.MemoryTransport",
}

#: Each key: (environment variable of the original package or None, default).
DEFAULTS: dict[str, tuple[str | None, Any]] = {
    "PROJECT": ("TASKAPP_GCP_PROJECT", None),
    "LOCATION": ("TASKAPP_GCP_LOCATION", None),
    "QUEUE": ("TASKAPP_GCP_QUEUE", "default"),
    "BASE_URL": ("TASKAPP_CLOUD_RUN_URL", None),
    "AUTH_TOKEN": ("TASKAPP_AUTH_TOKEN", None),
    "TRANSPORT": ("TASKAPP_TRANSPORT", "cloudtasks"),
    "EMULATOR_HOST": ("CLOUDTASKS_EMULATOR_HOST", None),
    "OIDC_SERVICE_ACCOUNT": ("TASKAPP_OIDC_SERVICE_ACCOUNT", None),
    "OIDC_AUDIENCE": ("TASKAPP_OIDC_AUDIENCE", None),
    "OIDC_CERTS_URL": (None, "https://www.googleapis.com/oauth2/v1/certs"),
    "OIDC_ISSUERS": (None, ("https://accounts.google.com", "accounts.google.com")),
    "OIDC_SCOPES": (None, {}),
    "DISPATCH_DEADLINE": (None, 600),
    "SWEEP_GRACE": (None, 300),
    "INLINE_SECONDS": (None, None),
    "MAX_BODY_BYTES": (None, 1_048_576),
    "MAX_ARGS_BYTES": (None, 100_000),
    "QUEUES": (None, {}),
    "SCHEDULES": (None, {}),
    "SCHEDULER_LOCATION": (None, None),
    "SCHEDULE_JOB_PREFIX": (None, "cloudtasks-schedule-"),
    "SCHEDULE_GRACE": (None, 120),
    "EAGER_PROPAGATES": (None, False),
    "RESULT_EXPIRES": (None, 7),
}


class CloudTasksSettings:
    """The library's settings, each read when accessed (never at import time).

    ``conf.PROJECT`` reads ``settings.CLOUDTASKS["PROJECT"]`` and falls back to the
    ``TASKAPP_GCP_PROJECT`` environment variable, then to the default; so
    ``override_settings(CLOUDTASKS=...)`` works in tests.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown Cloud Tasks setting {name!r}")
        configured = getattr(settings, "CLOUDTASKS", None) or {}
        if name in configured:
            return configured[name]
        env_name, default = DEFAULTS[name]
        debug = os.environ.get("TASKAPP_DEBUG_MODE", "").lower() in ("1", "true", "yes")
        if name == "TRANSPORT" and debug:
            return "eager"
        if env_name and os.environ.get(env_name):
            value: Any = os.environ[env_name]
            return value
        return default

    @property
    def run_url_base(self) -> str:
        """``BASE_URL`` without a trailing slash."""
        return str(self.BASE_URL or "").rstrip("/")


conf = CloudTasksSettings()
