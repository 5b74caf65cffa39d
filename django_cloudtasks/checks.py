"""System checks for the configuration, with stable ids."""

from __future__ import annotations

from typing import Any

from django.core import checks

from django_cloudtasks.auth import is_configured, oidc_audience, oidc_issuers
from django_cloudtasks.conf import TRANSPORTS, conf
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.transports import transport_class


@checks.register("django_cloudtasks")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report missing or inconsistent ``CLOUDTASKS`` settings.

    * ``django_cloudtasks.E001``: ``TRANSPORT`` names no transport class.
    * ``django_cloudtasks.E002``: the ``cloudtasks`` transport without ``PROJECT``,
      ``LOCATION`` or ``BASE_URL``.
    * ``django_cloudtasks.E003``: ``BASE_URL`` is not an http(s) URL.
    * ``django_cloudtasks.E004``: ``OIDC_SERVICE_ACCOUNT`` without an audience
      (neither ``OIDC_AUDIENCE`` nor ``BASE_URL``): OIDC tokens cannot be verified.
    * ``django_cloudtasks.E005``: ``OIDC_CERTS_URL`` is not an http(s) URL.
    * ``django_cloudtasks.E006``: ``OIDC_ISSUERS`` is empty.
    * ``django_cloudtasks.W001``: no way to authenticate requests (neither
      ``AUTH_TOKEN`` nor a usable OIDC configuration); every request to the endpoints
      is refused.
    """
    messages: list[checks.CheckMessage] = []
    transport = conf.TRANSPORT
    try:
        transport_path = transport_class(transport).__module__
    except ConfigurationError:
        transport_path = ""
        messages.append(
            checks.Error(
                f"CLOUDTASKS['TRANSPORT'] is {transport!r}.",
                hint=f"Use one of: {', '.join(TRANSPORTS)}, or the dotted path of a "
                "django_cloudtasks.transports.Transport subclass.",
                id="django_cloudtasks.E001",
            )
        )
    if transport_path == "django_cloudtasks.transports.cloudtasks":
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
    messages += _check_oidc()
    if not is_configured():
        messages.append(
            checks.Warning(
                "Neither AUTH_TOKEN nor OIDC is configured: the /cloudtasks/ endpoints "
                "refuse every request.",
                hint="Set CLOUDTASKS['AUTH_TOKEN'] (or TASKAPP_AUTH_TOKEN), or "
                "CLOUDTASKS['OIDC_SERVICE_ACCOUNT'] (or TASKAPP_OIDC_SERVICE_ACCOUNT) with "
                "OIDC_AUDIENCE or BASE_URL.",
                id="django_cloudtasks.W001",
            )
        )
    return messages


def _check_oidc() -> list[checks.CheckMessage]:
    account = conf.OIDC_SERVICE_ACCOUNT
    if not account:
        return []
    messages: list[checks.CheckMessage] = []
    if not oidc_audience():
        messages.append(
            checks.Error(
                f"OIDC_SERVICE_ACCOUNT is {account!r} but no audience is set, so OIDC "
                "tokens cannot be verified.",
                hint="Set CLOUDTASKS['OIDC_AUDIENCE'] (TASKAPP_OIDC_AUDIENCE) or "
                "CLOUDTASKS['BASE_URL'] (TASKAPP_CLOUD_RUN_URL), the audience Cloud Tasks "
                "puts in the tokens.",
                id="django_cloudtasks.E004",
            )
        )
    certs_url = conf.OIDC_CERTS_URL
    if not str(certs_url or "").startswith(("http://", "https://")):
        messages.append(
            checks.Error(
                f"CLOUDTASKS['OIDC_CERTS_URL'] is {certs_url!r}, not an http(s) URL.",
                hint="Leave it unset for Google's https://www.googleapis.com/oauth2/v1/certs, "
                "or point it at the emulator's oidc_certs_url.",
                id="django_cloudtasks.E005",
            )
        )
    if not oidc_issuers():
        messages.append(
            checks.Error(
                "CLOUDTASKS['OIDC_ISSUERS'] is empty: no OIDC token can pass.",
                hint="Leave it unset for Google's issuers "
                "(https://accounts.google.com, accounts.google.com).",
                id="django_cloudtasks.E006",
            )
        )
    return messages
