"""System checks for the configuration, with stable ids."""

from __future__ import annotations

from typing import Any

from django.core import checks

from django_cloudtasks.auth import is_configured
from django_cloudtasks.conf import TRANSPORTS, conf


@checks.register("django_cloudtasks")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report missing or inconsistent ``CLOUDTASKS`` settings.

    * ``django_cloudtasks.E001``: unknown ``TRANSPORT``.
    * ``django_cloudtasks.E002``: the ``cloudtasks`` transport without ``PROJECT``,
      ``LOCATION`` or ``BASE_URL``.
    * ``django_cloudtasks.E003``: ``BASE_URL`` is not an http(s) URL.
    * ``django_cloudtasks.W001``: no way to authenticate requests (no ``AUTH_TOKEN``);
      every request to the endpoints is refused.
    """
    messages: list[checks.CheckMessage] = []
    transport = conf.TRANSPORT
    if transport not in TRANSPORTS:
        messages.append(
            checks.Error(
                f"CLOUDTASKS['TRANSPORT'] is {transport!r}.",
                hint=f"Use one of: {', '.join(TRANSPORTS)}.",
                id="django_cloudtasks.E001",
            )
        )
    if transport == "cloudtasks":
        missing = [k for k in ("PROJECT", "LOCATION", "BASE_URL") if not getattr(conf, k)]
        if missing:
            messages.append(
                checks.Error(
                    "The cloudtasks transport needs " + ", ".join(missing) + ".",
                    hint="Set them in settings.CLOUDTASKS or the TASKAPP_* environment "
                    "variables (TASKAPP_GCP_PROJECT, TASKAPP_GCP_LOCATION, "
                    "TASKAPP_CLOUD_RUN_URL).",
                    id="django_cloudtasks.E002",
                )
            )
    base_url = conf.BASE_URL
    if base_url and not str(base_url).startswith(("http://", "https://")):
        messages.append(
            checks.Error(
                f"CLOUDTASKS['BASE_URL'] is {base_url!r}, not an http(s) URL.",
                hint="Use the public URL of this service, e.g. https://app-xyz.a.run.app.",
                id="django_cloudtasks.E003",
            )
        )
    if not is_configured():
        messages.append(
            checks.Warning(
                "No AUTH_TOKEN: the /cloudtasks/ endpoints refuse every request.",
                hint="Set CLOUDTASKS['AUTH_TOKEN'] (or TASKAPP_AUTH_TOKEN); OIDC_SERVICE_ACCOUNT "
                "alone is not enough, the endpoints do not verify OIDC tokens yet.",
                id="django_cloudtasks.W001",
            )
        )
    return messages
