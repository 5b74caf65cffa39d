"""System checks report missing or inconsistent ``CLOUDTASKS`` settings with stable ids."""

from __future__ import annotations

import logging

import pytest
from django.core import checks
from django.test import override_settings

from django_cloudtasks import task
from django_cloudtasks.checks import check_settings, check_tasks
from django_cloudtasks.registry import registry
from django_cloudtasks.transports import reset_transport
from django_cloudtasks.transports.base import Transport

GOOD_CLOUDTASKS = {
    "PROJECT": "my-project",
    "LOCATION": "europe-west1",
    "QUEUE": "default",
    "BASE_URL": "https://app-xyz.a.run.app",
    "AUTH_TOKEN": "s3cret",
    "TRANSPORT": "cloudtasks",
}


pytestmark = pytest.mark.usefixtures("no_environment")


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def configured(**changes):
    """``override_settings`` with the good configuration changed (None removes a key)."""
    settings = {**GOOD_CLOUDTASKS, **changes}
    return override_settings(CLOUDTASKS={k: v for k, v in settings.items() if v is not None})


def test_a_good_configuration_passes_every_check():
    with configured():
        assert check_settings() == []
        assert run_our_checks() == []


def _registered_by_a_test_module(message) -> bool:
    """W008 for a task a test module defines: those are registered after startup."""
    if message.id != "django_cloudtasks.W008":
        return False
    module = registry.get(message.obj).__wrapped__.__module__
    return module.startswith("tests.") and module != "tests.testapp.tasks"


@pytest.fixture
def late_task():
    """A task registered now, after startup, by this test module."""

    @task(name="checks_late_task", queue="emails")
    def late():
        return 1

    yield late
    registry.unregister("checks_late_task")


def test_w007_a_task_sends_to_a_queue_that_is_not_configured(late_task):
    with configured(TRANSPORT="memory"):
        (message,) = [m for m in check_tasks() if m.obj == "checks_late_task"]
    assert message.id == "django_cloudtasks.W007"
    assert "'emails', which is not configured" in message.msg
    assert "CLOUDTASKS['QUEUES']" in message.hint and "cloudtasks_queues" in message.hint
    with configured(TRANSPORT="memory", QUEUES={"emails": {}}):
        assert [m for m in check_tasks() if m.obj == "checks_late_task"] == []


def test_w008_a_task_registered_after_startup_may_be_unknown_to_a_server(late_task):
    with configured(QUEUES={"emails": {}}):
        (message,) = [m for m in check_tasks() if m.obj == "checks_late_task"]
    assert message.id == "django_cloudtasks.W008"
    assert "tests.django_cloudtasks.test_checks" in message.msg
    assert "404" in message.msg and "tasks.py" in message.hint


def test_w008_is_quiet_for_the_tasks_of_an_apps_tasks_module_and_in_process_transports(
    late_task,
):
    with configured():
        assert "add" not in {m.obj for m in check_tasks()}
    with configured(TRANSPORT="eager", QUEUES={"emails": {}}):
        assert [m for m in check_tasks() if m.obj == "checks_late_task"] == []


class RecordingTransport(Transport):
    """A transport that hands deliveries elsewhere (it keeps them): not in-process."""

    name = "recording"

    def send(self, dispatches):
        pass


@pytest.mark.django_db
def test_enqueueing_a_task_registered_after_startup_logs_why_a_server_may_404(late_task, caplog):
    path = f"{__name__}.RecordingTransport"
    with configured(TRANSPORT=path), caplog.at_level(logging.WARNING, "django_cloudtasks"):
        reset_transport()
        try:
            late_task.delay()
            late_task.delay()
        finally:
            reset_transport()
    warnings = [r.getMessage() for r in caplog.records if "checks_late_task" in r.getMessage()]
    assert len(warnings) == 1  # once per task
    assert "registered after startup" in warnings[0] and "tasks.py" in warnings[0]


def test_the_test_suite_configuration_passes_every_check():
    assert run_our_checks() == []


def run_our_checks():
    """Our checks, without W008 for the tasks this suite's test modules define."""
    messages = checks.run_checks(tags=["django_cloudtasks"])
    return [m for m in messages if not _registered_by_a_test_module(m)]


@pytest.mark.django_db  # Django 6 model checks ask the database about JSON support
def test_the_checks_are_registered_with_django():
    with configured(TRANSPORT="carrier-pigeon"):
        assert "django_cloudtasks.E001" in ids(checks.run_checks())


@pytest.mark.parametrize("transport", ["carrier-pigeon", "CloudTasks", "", None])
def test_e001_an_unknown_transport(transport):
    with override_settings(CLOUDTASKS={**GOOD_CLOUDTASKS, "TRANSPORT": transport}):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E001"]
    assert messages[0].level == checks.ERROR
    assert repr(transport) in messages[0].msg
    assert "cloudtasks, eager, memory" in messages[0].hint


@pytest.mark.parametrize("transport", ["eager", "memory"])
def test_the_in_process_transports_need_no_project(transport):
    with configured(TRANSPORT=transport, PROJECT=None, LOCATION=None, BASE_URL=None):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        (("PROJECT",), "PROJECT"),
        (("LOCATION",), "LOCATION"),
        (("BASE_URL",), "BASE_URL"),
        (("PROJECT", "LOCATION", "BASE_URL"), "PROJECT, LOCATION, BASE_URL"),
    ],
)
def test_e002_the_cloudtasks_transport_without_project_location_or_base_url(missing, named):
    with configured(**dict.fromkeys(missing)):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E002"]
    assert messages[0].msg == f"The cloudtasks transport needs {named}."
    assert "TASKAPP_GCP_PROJECT" in messages[0].hint


def test_e002_counts_an_empty_value_as_missing():
    with configured(PROJECT=""):
        assert ids(check_settings()) == ["django_cloudtasks.E002"]


def test_e002_is_satisfied_by_the_environment_variables(monkeypatch):
    monkeypatch.setenv("TASKAPP_GCP_PROJECT", "env-project")
    monkeypatch.setenv("TASKAPP_GCP_LOCATION", "us-east1")
    monkeypatch.setenv("TASKAPP_CLOUD_RUN_URL", "https://env.example.com")
    with configured(PROJECT=None, LOCATION=None, BASE_URL=None):
        assert check_settings() == []


def test_e002_is_the_default_when_nothing_is_configured():
    with override_settings(CLOUDTASKS={"AUTH_TOKEN": "s3cret"}):
        assert ids(check_settings()) == ["django_cloudtasks.E002"]


def test_debug_mode_runs_eagerly_so_no_project_is_needed(monkeypatch):
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", "true")
    with override_settings(CLOUDTASKS={"AUTH_TOKEN": "s3cret"}):
        assert check_settings() == []


@pytest.mark.parametrize("base_url", ["app-xyz.a.run.app", "ftp://files.example.com", "/relative"])
def test_e003_a_base_url_that_is_not_http(base_url):
    with configured(BASE_URL=base_url):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E003"]
    assert repr(base_url) in messages[0].msg


@pytest.mark.parametrize("base_url", ["http://localhost:8000", "https://app-xyz.a.run.app/"])
def test_http_and_https_base_urls_pass(base_url):
    with configured(BASE_URL=base_url):
        assert check_settings() == []


def test_e003_applies_to_a_base_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("TASKAPP_CLOUD_RUN_URL", "app-xyz.a.run.app")
    with configured(BASE_URL=None, TRANSPORT="memory"):
        assert ids(check_settings()) == ["django_cloudtasks.E003"]


@pytest.mark.parametrize("token", [None, ""])
def test_w001_no_auth_token_means_every_request_is_refused(token):
    with configured(AUTH_TOKEN=token):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.W001"]
    assert messages[0].level == checks.WARNING
    assert "refuse every request" in messages[0].msg


@pytest.mark.parametrize("transport", ["eager", "memory"])
def test_w001_is_quiet_for_the_in_process_transports_which_call_no_endpoint(transport):
    with configured(AUTH_TOKEN=None, TRANSPORT=transport):
        assert "django_cloudtasks.W001" not in ids(check_settings())


def test_w001_is_quiet_in_the_original_debug_mode(monkeypatch):
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", "true")
    with override_settings(CLOUDTASKS={}):
        assert check_settings() == []


ACCOUNT = "tasks@my-project.iam.gserviceaccount.com"


def test_w001_is_satisfied_by_an_oidc_service_account_with_an_audience():
    with configured(AUTH_TOKEN=None, OIDC_SERVICE_ACCOUNT=ACCOUNT):
        assert check_settings() == []
    with configured(
        AUTH_TOKEN=None, OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_AUDIENCE="https://aud.example.com"
    ):
        assert check_settings() == []


def test_w001_says_which_settings_would_let_requests_in():
    with configured(AUTH_TOKEN=None):
        (message,) = check_settings()
    assert "Neither AUTH_TOKEN nor OIDC" in message.msg
    assert "AUTH_TOKEN" in message.hint
    assert "OIDC_SERVICE_ACCOUNT" in message.hint


def test_e004_an_oidc_service_account_without_audience_or_base_url():
    with configured(
        AUTH_TOKEN=None, OIDC_SERVICE_ACCOUNT=ACCOUNT, BASE_URL=None, TRANSPORT="memory"
    ):
        messages = check_settings()
    # Without an audience no token can be verified; W001 stays quiet only because the
    # memory transport calls no endpoint.
    assert ids(messages) == ["django_cloudtasks.E004"]
    assert messages[0].level == checks.ERROR
    assert repr(ACCOUNT) in messages[0].msg
    assert "OIDC_AUDIENCE" in messages[0].hint


def test_e004_with_a_shared_token_still_reports_the_unusable_oidc_setting():
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, BASE_URL=None, TRANSPORT="memory"):
        assert ids(check_settings()) == ["django_cloudtasks.E004"]


def test_e004_is_satisfied_by_the_audience_environment_variable(monkeypatch):
    monkeypatch.setenv("TASKAPP_OIDC_AUDIENCE", "https://aud.example.com")
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, BASE_URL=None, TRANSPORT="memory"):
        assert check_settings() == []


@pytest.mark.parametrize("url", ["", None, "www.googleapis.com/oauth2/v1/certs", "file:///x"])
def test_e005_an_oidc_certs_url_that_is_not_http(url):
    oidc = {"OIDC_SERVICE_ACCOUNT": ACCOUNT, "OIDC_CERTS_URL": url}
    with override_settings(CLOUDTASKS={**GOOD_CLOUDTASKS, **oidc}):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E005"]
    assert repr(url) in messages[0].msg


@pytest.mark.parametrize("issuers", [[], (), "", " , "])
def test_e006_empty_oidc_issuers(issuers):
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_ISSUERS=issuers):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E006"]


def test_the_oidc_checks_are_quiet_without_an_oidc_service_account():
    with configured(OIDC_CERTS_URL="nonsense", OIDC_ISSUERS=[]):
        assert check_settings() == []


def test_w001_is_satisfied_by_the_environment_variable(monkeypatch):
    monkeypatch.setenv("TASKAPP_AUTH_TOKEN", "from-env")
    with configured(AUTH_TOKEN=None):
        assert check_settings() == []


def test_several_problems_are_all_reported():
    with override_settings(CLOUDTASKS={"TRANSPORT": "cloudtasks", "BASE_URL": "example.com"}):
        assert ids(check_settings()) == [
            "django_cloudtasks.E002",
            "django_cloudtasks.E003",
            "django_cloudtasks.W001",
        ]


# -- OIDC_SCOPES -------------------------------------------------------------------------

OTHER = "scheduler@my-project.iam.gserviceaccount.com"


def test_well_formed_oidc_scopes_pass():
    scopes = {
        "run": {"service_accounts": [ACCOUNT], "audiences": ["https://app-xyz.a.run.app"]},
        "sweep": {"service_accounts": [OTHER]},
        "revoke": {"service_accounts": ("ops@my-project.iam.gserviceaccount.com",)},
    }
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_SCOPES=scopes):
        assert check_settings() == []


def test_a_scope_that_accepts_no_oidc_token_is_allowed():
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_SCOPES={"revoke": {"service_accounts": []}}):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("scopes", "problem"),
    [
        ([("run", {})], "is list, not a dict of endpoint families"),
        ({"tracker": {}}, "names 'tracker', not an endpoint family"),
        ({"sweep": [OTHER]}, "['sweep'] is list, not a dict"),
        ({"sweep": {"service_account": [OTHER]}}, "['sweep'] has the key 'service_account'"),
        ({"sweep": {"service_accounts": OTHER}}, "is '" + OTHER + "', not a list"),
        ({"revoke": {"audiences": ["https://a.example.com", ""]}}, "not a list of non-empty"),
        ({"revoke": {"audiences": [None]}}, "['revoke']['audiences'] is [None]"),
    ],
)
def test_e007_oidc_scopes_of_another_shape(scopes, problem):
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_SCOPES=scopes):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E007"]
    assert problem in messages[0].msg
    assert "service_accounts" in messages[0].hint


def test_e007_reports_every_problem():
    scopes = {"tracker": {}, "sweep": {"service_accounts": OTHER, "audience": []}}
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_SCOPES=scopes):
        assert ids(check_settings()) == ["django_cloudtasks.E007"] * 3


@pytest.mark.parametrize(
    ("run", "refused"),
    [
        ({"service_accounts": [OTHER]}, f"OIDC_SERVICE_ACCOUNT ({ACCOUNT!r})"),
        ({"audiences": ["https://elsewhere.example.com"]}, "'https://app-xyz.a.run.app'"),
    ],
)
def test_e008_a_run_scope_that_refuses_the_tokens_cloud_tasks_sends(run, refused):
    with configured(OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_SCOPES={"run": run}):
        messages = check_settings()
    assert ids(messages) == ["django_cloudtasks.E008"]
    assert refused in messages[0].msg


def test_a_scope_alone_makes_the_oidc_settings_checked():
    scopes = {"revoke": {"service_accounts": [OTHER]}}
    with configured(OIDC_SCOPES=scopes, OIDC_CERTS_URL="nonsense"):
        assert ids(check_settings()) == ["django_cloudtasks.E005"]


# -- manage.py check --deploy ------------------------------------------------------------

STRONG_TOKEN = "Jx0-4lN2vUq9ZrT7cWm1sEo8bHk3yFd6aPg5"


def deploy_checks() -> list:
    messages = checks.run_checks(tags=["django_cloudtasks"], include_deployment_checks=True)
    return [m for m in messages if not _registered_by_a_test_module(m)]


def test_a_production_configuration_passes_the_deployment_checks():
    with configured(AUTH_TOKEN=STRONG_TOKEN, OIDC_SERVICE_ACCOUNT=ACCOUNT):
        assert deploy_checks() == []


def test_the_deployment_checks_run_only_with_deploy():
    with configured(EMULATOR_HOST="localhost:8123", AUTH_TOKEN="short"):
        assert run_our_checks() == []
        assert ids(deploy_checks()) == ["django_cloudtasks.W002", "django_cloudtasks.W005"]


def test_w002_the_emulator_host_is_set(monkeypatch):
    monkeypatch.setenv("CLOUDTASKS_EMULATOR_HOST", "127.0.0.1:8123")
    with configured(AUTH_TOKEN=STRONG_TOKEN):
        messages = deploy_checks()
    assert ids(messages) == ["django_cloudtasks.W002"]
    assert "'127.0.0.1:8123'" in messages[0].msg


def test_w003_certificates_that_are_not_googles():
    url = "http://127.0.0.1:8124/oauth2/v1/certs"
    with configured(AUTH_TOKEN=STRONG_TOKEN, OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_CERTS_URL=url):
        messages = deploy_checks()
    assert ids(messages) == ["django_cloudtasks.W003"]
    assert repr(url) in messages[0].msg


@pytest.mark.parametrize(
    ("issuers", "shown"),
    [
        (["https://accounts.google.com", "https://emulator.local"], "'https://emulator.local'"),
        ("accounts.google.com,http://issuer.example.com", "without https"),
        (["evil.example.com"], "'evil.example.com'"),
    ],
)
def test_w004_an_extra_or_plain_http_issuer_is_trusted(issuers, shown):
    with configured(AUTH_TOKEN=STRONG_TOKEN, OIDC_SERVICE_ACCOUNT=ACCOUNT, OIDC_ISSUERS=issuers):
        messages = deploy_checks()
    assert ids(messages) == ["django_cloudtasks.W004"]
    assert shown in messages[0].msg


def test_the_oidc_deployment_checks_are_quiet_without_oidc():
    with configured(
        AUTH_TOKEN=STRONG_TOKEN, OIDC_CERTS_URL="http://x/certs", OIDC_ISSUERS=["http://x"]
    ):
        assert deploy_checks() == []


@pytest.mark.parametrize(
    "token",
    ["s3cret", "test-token", "x" * 31, "password" * 4, "ab" * 40],
)
def test_w005_a_short_or_low_entropy_shared_token(token):
    with configured(AUTH_TOKEN=token):
        messages = deploy_checks()
    assert ids(messages) == ["django_cloudtasks.W005"]
    assert token not in messages[0].msg
    assert "secrets.token_urlsafe" in messages[0].hint


@pytest.mark.parametrize("token", ["0" * 32, "0123456789abcdef" * 2, STRONG_TOKEN])
def test_w005_accepts_long_varied_tokens(token):
    expected = ["django_cloudtasks.W005"] if len(set(token)) < 8 else []
    with configured(AUTH_TOKEN=token):
        assert ids(deploy_checks()) == expected


@pytest.mark.parametrize("transport", ["eager", "memory"])
def test_w006_a_transport_for_development(transport):
    with configured(AUTH_TOKEN=STRONG_TOKEN, TRANSPORT=transport):
        messages = deploy_checks()
    assert ids(messages) == ["django_cloudtasks.W006"]
    assert repr(transport) in messages[0].msg


def test_w006_debug_mode_selects_the_eager_transport(monkeypatch):
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", "1")
    with configured(AUTH_TOKEN=STRONG_TOKEN, TRANSPORT=None):
        assert ids(deploy_checks()) == ["django_cloudtasks.W006"]
