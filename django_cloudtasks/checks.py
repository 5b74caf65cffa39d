"""System checks for the configuration, with stable ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core import checks

from django_cloudtasks.auth import (
    SCOPE_KEYS,
    SCOPES,
    is_configured,
    oidc_audience,
    oidc_configured,
    oidc_issuers,
    oidc_scope,
)
from django_cloudtasks.conf import DEFAULTS, TRANSPORTS, conf
from django_cloudtasks.engine import result_expires
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.registry import registry
from django_cloudtasks.schedules import checks as schedule_checks  # noqa: F401 - registers them
from django_cloudtasks.transports import transport_class

#: Where Google publishes the certificates of its ID tokens (PEM, as the cache reads them).
GOOGLE_CERTS_URL = DEFAULTS["OIDC_CERTS_URL"][1]
#: The ``iss`` values of Google's ID tokens.
GOOGLE_ISSUERS = frozenset(DEFAULTS["OIDC_ISSUERS"][1])
#: A shared token shorter than this is reported by ``django_cloudtasks.W005``...
MIN_TOKEN_LENGTH = 32
#: ... and so is one made of fewer different characters (as Django's ``SECRET_KEY``
#: check does); a random hex token of 32 characters has more.
MIN_TOKEN_CHARACTERS = 8
#: A ``RESULT_EXPIRES`` above this many days is reported by ``django_cloudtasks.W030``.
MAX_EXPIRES_DAYS = 3650


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
    * ``django_cloudtasks.E007``: ``OIDC_SCOPES`` is not a dict of endpoint families
      (``run``, ``sweep``, ``revoke``) to dicts of ``service_accounts`` and
      ``audiences``, each a list of non-empty strings.
    * ``django_cloudtasks.E008``: ``OIDC_SCOPES["run"]`` refuses the tokens the Cloud
      Tasks transport asks for (``OIDC_SERVICE_ACCOUNT`` with ``OIDC_AUDIENCE`` or
      ``BASE_URL``): every delivery would be refused.
    * ``django_cloudtasks.W001``: a transport that calls the endpoints (not ``eager``
      or ``memory``) and no way to authenticate requests (neither
      ``AUTH_TOKEN`` nor a usable OIDC configuration); every request to the endpoints
      is refused.
    """
    messages: list[checks.CheckMessage] = []
    transport = conf.TRANSPORT
    in_process = False
    try:
        transport_path = transport_class(transport).__module__
        in_process = transport_class(transport).delivers_in_process
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
    messages += _check_scopes()
    if not is_configured() and not in_process:  # eager and memory call no endpoint
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


@checks.register("django_cloudtasks")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report tasks a server may not be able to run as configured.

    * ``django_cloudtasks.W007``: a task's ``queue`` is neither ``QUEUE`` nor a key of
      ``QUEUES``.
    * ``django_cloudtasks.W008``: with a transport that calls the endpoints, a task
      registered after startup, by a module that is not (and is not imported by) an
      installed app's ``tasks`` module: a server that has not imported that module
      answers its deliveries 404.
    """
    messages: list[checks.CheckMessage] = []
    configured = {str(conf.QUEUE or "default"), *(conf.QUEUES or {})}
    try:
        in_process = transport_class(conf.TRANSPORT).delivers_in_process
    except ConfigurationError:  # E001
        in_process = False
    for task in registry.tasks():
        queue = task.policy.queue
        if queue and queue not in configured:
            messages.append(
                checks.Warning(
                    f"Task {task.name!r} sends to queue {queue!r}, which is not configured.",
                    hint=f"Add it to CLOUDTASKS['QUEUES'] ({{{queue!r}: {{}}}} keeps Cloud "
                    "Tasks' defaults) and run `manage.py cloudtasks_queues`, which creates "
                    "it.",
                    obj=task.name,
                    id="django_cloudtasks.W007",
                )
            )
        if not in_process and not registry.known_at_startup(task.name):
            module = getattr(task.__wrapped__, "__module__", "?")
            messages.append(
                checks.Warning(
                    f"Task {task.name!r} is registered by {module}, which is imported after "
                    "startup: a server that has not imported it answers the task's "
                    "deliveries 404 (unknown task).",
                    hint="Define the task in (or import it from) the tasks.py module of an "
                    "installed app: every process imports those at startup.",
                    obj=task.name,
                    id="django_cloudtasks.W008",
                )
            )
    return messages


@checks.register("django_cloudtasks", deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn about settings meant for development, with ``manage.py check --deploy``.

    * ``django_cloudtasks.W002``: ``EMULATOR_HOST`` is set: tasks go to an emulator.
    * ``django_cloudtasks.W003``: OIDC is used and ``OIDC_CERTS_URL`` is not Google's.
    * ``django_cloudtasks.W004``: OIDC is used and ``OIDC_ISSUERS`` trusts an issuer
      other than Google's, or one without https.
    * ``django_cloudtasks.W005``: the shared ``AUTH_TOKEN`` is shorter than
      :data:`MIN_TOKEN_LENGTH` characters or made of fewer than
      :data:`MIN_TOKEN_CHARACTERS` different ones.
    * ``django_cloudtasks.W006``: the ``eager`` or ``memory`` transport (for
      development and tests; ``TASKAPP_DEBUG_MODE`` selects ``eager``) is configured.
    """
    messages: list[checks.CheckMessage] = []
    if conf.EMULATOR_HOST:
        messages.append(
            checks.Warning(
                f"CLOUDTASKS['EMULATOR_HOST'] is {conf.EMULATOR_HOST!r}: tasks are sent to a "
                "Cloud Tasks emulator, not to Google.",
                hint="Unset EMULATOR_HOST (and the CLOUDTASKS_EMULATOR_HOST environment "
                "variable) in production.",
                id="django_cloudtasks.W002",
            )
        )
    if any(oidc_configured(scope) for scope in SCOPES):
        certs_url = str(conf.OIDC_CERTS_URL or "")
        if certs_url != GOOGLE_CERTS_URL:
            messages.append(
                checks.Warning(
                    f"CLOUDTASKS['OIDC_CERTS_URL'] is {certs_url!r}: OIDC tokens are "
                    "verified against keys that are not Google's.",
                    hint=f"Leave OIDC_CERTS_URL unset for Google's {GOOGLE_CERTS_URL}.",
                    id="django_cloudtasks.W003",
                )
            )
        untrusted = [i for i in oidc_issuers() if i not in GOOGLE_ISSUERS]
        if untrusted:
            plain = [i for i in untrusted if not i.startswith("https://")]
            detail = f" ({', '.join(map(repr, plain))} without https)" if plain else ""
            messages.append(
                checks.Warning(
                    f"CLOUDTASKS['OIDC_ISSUERS'] trusts {', '.join(map(repr, untrusted))}"
                    f"{detail}, besides Google's issuers.",
                    hint="Leave OIDC_ISSUERS unset for Google's "
                    "(https://accounts.google.com, accounts.google.com).",
                    id="django_cloudtasks.W004",
                )
            )
    token = str(conf.AUTH_TOKEN or "")
    if token and (len(token) < MIN_TOKEN_LENGTH or len(set(token)) < MIN_TOKEN_CHARACTERS):
        messages.append(
            checks.Warning(
                "CLOUDTASKS['AUTH_TOKEN'] is short or easy to guess: it should have at least "
                f"{MIN_TOKEN_LENGTH} characters, of at least {MIN_TOKEN_CHARACTERS} "
                "different ones.",
                hint='Generate one with: python -c "import secrets; '
                'print(secrets.token_urlsafe(32))", or use OIDC tokens instead.',
                id="django_cloudtasks.W005",
            )
        )
    if conf.TRANSPORT in ("eager", "memory"):
        messages.append(
            checks.Warning(
                f"CLOUDTASKS['TRANSPORT'] is {conf.TRANSPORT!r}, a transport for development "
                "and tests: nothing goes to Cloud Tasks.",
                hint="Set CLOUDTASKS['TRANSPORT'] to 'cloudtasks' and unset "
                "TASKAPP_TRANSPORT and TASKAPP_DEBUG_MODE in production.",
                id="django_cloudtasks.W006",
            )
        )
    return messages


def _check_oidc() -> list[checks.CheckMessage]:
    account = conf.OIDC_SERVICE_ACCOUNT
    if not account and not any(oidc_configured(scope) for scope in SCOPES):
        return []
    messages: list[checks.CheckMessage] = []
    if account and not oidc_audience():
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


def _check_scopes() -> list[checks.CheckMessage]:
    scopes = conf.OIDC_SCOPES
    if not scopes:
        return []
    problems = list(_scope_problems(scopes))
    messages: list[checks.CheckMessage] = [
        checks.Error(
            f"CLOUDTASKS['OIDC_SCOPES']{problem}.",
            hint='Use {"run": {"service_accounts": ["tasks@PROJECT.iam.gserviceaccount.com"], '
            '"audiences": ["https://app.example.com"]}, "sweep": {...}, "revoke": {...}}; '
            "a family or key left out accepts OIDC_SERVICE_ACCOUNT and OIDC_AUDIENCE (or "
            "BASE_URL).",
            id="django_cloudtasks.E007",
        )
        for problem in problems
    ]
    account, audience = conf.OIDC_SERVICE_ACCOUNT, oidc_audience()
    run = oidc_scope("run")
    if not problems and account and audience and conf.TRANSPORT == "cloudtasks":
        refused = []
        if str(account).lower() not in {a.lower() for a in run.service_accounts}:
            refused.append(f"OIDC_SERVICE_ACCOUNT ({account!r})")
        if audience not in run.audiences:
            refused.append(f"the audience {audience!r}")
        if refused:
            messages.append(
                checks.Error(
                    "CLOUDTASKS['OIDC_SCOPES']['run'] does not accept "
                    + " or ".join(refused)
                    + ", which the Cloud Tasks transport puts in its tokens: every "
                    "delivery would be refused.",
                    hint="Add them to OIDC_SCOPES['run'], or leave those keys out.",
                    id="django_cloudtasks.E008",
                )
            )
    return messages


def _scope_problems(scopes: Any) -> list[str]:
    """What is wrong with the shape of ``OIDC_SCOPES``, one phrase per problem."""
    if not isinstance(scopes, Mapping):
        return [f" is {type(scopes).__name__}, not a dict of endpoint families"]
    problems = []
    for scope, entry in scopes.items():
        where = f"[{scope!r}]"
        if scope not in SCOPES:
            problems.append(
                f" names {scope!r}, not an endpoint family (one of {', '.join(SCOPES)}; "
                "'run' covers run and tracker)"
            )
        elif not isinstance(entry, Mapping):
            problems.append(f"{where} is {type(entry).__name__}, not a dict")
        else:
            for key, value in entry.items():
                if key not in SCOPE_KEYS:
                    problems.append(
                        f"{where} has the key {key!r}; known keys: {', '.join(SCOPE_KEYS)}"
                    )
                elif not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) and v.strip() for v in value
                ):
                    problems.append(
                        f"{where}[{key!r}] is {value!r}, not a list of non-empty strings"
                    )
    return problems


@checks.register("django_cloudtasks")
def check_retention(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report a ``RESULT_EXPIRES`` the sweeper cannot use.

    * ``django_cloudtasks.E030``: ``RESULT_EXPIRES`` is not a number of days above
      zero, a positive timedelta or None.
    * ``django_cloudtasks.W030``: it is a number above :data:`MAX_EXPIRES_DAYS`:
      probably seconds, as Celery's ``result_expires`` counts.
    """
    try:
        expires = result_expires()
    except ConfigurationError as exc:
        return [
            checks.Error(
                str(exc),
                hint="Use a number of days (7, 0.5), a datetime.timedelta, or None to "
                "keep finished workflows until `manage.py cloudtasks_purge` deletes them.",
                id="django_cloudtasks.E030",
            )
        ]
    number = isinstance(conf.RESULT_EXPIRES, int | float)
    if number and expires is not None and expires.days > MAX_EXPIRES_DAYS:
        return [
            checks.Warning(
                f"CLOUDTASKS['RESULT_EXPIRES'] is {conf.RESULT_EXPIRES!r} days.",
                hint="The number counts days, not seconds as Celery's result_expires "
                "does; write timedelta(seconds=...) for seconds.",
                id="django_cloudtasks.W030",
            )
        ]
    return []
