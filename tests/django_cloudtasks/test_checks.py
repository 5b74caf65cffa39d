"""System checks report missing or inconsistent ``CLOUDTASKS`` settings with stable ids."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import override_settings

from django_cloudtasks.checks import check_settings

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


def test_the_test_suite_configuration_passes_every_check():
    assert run_our_checks() == []


def run_our_checks():
    return checks.run_checks(tags=["django_cloudtasks"])


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
    # Without an audience no token can be verified, so nothing authenticates either.
    assert ids(messages) == ["django_cloudtasks.E004", "django_cloudtasks.W001"]
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
