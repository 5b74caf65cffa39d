"""Settings are read lazily from ``settings.CLOUDTASKS``, then ``TASKAPP_*`` variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from django_cloudtasks.conf import DEFAULTS, conf

pytestmark = pytest.mark.usefixtures("no_environment")


def without(settings, *keys: str) -> None:
    settings.CLOUDTASKS = {k: v for k, v in settings.CLOUDTASKS.items() if k not in keys}


def test_the_test_settings_are_what_conf_reports():
    assert conf.PROJECT == "test-project"
    assert conf.TRANSPORT == "memory"
    assert conf.AUTH_TOKEN == "test-token"


def test_a_setting_changed_after_import_is_seen_at_the_next_access(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUE": "emails"}
    assert conf.QUEUE == "emails"
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUE": "reports"}
    assert conf.QUEUE == "reports"


def test_override_settings_applies_inside_and_is_undone_after():
    with override_settings(CLOUDTASKS={"PROJECT": "other", "MAX_BODY_BYTES": 10}):
        assert conf.PROJECT == "other"
        assert conf.MAX_BODY_BYTES == 10
        assert conf.TRANSPORT == "cloudtasks"  # a key left out takes its default
    assert conf.PROJECT == "test-project"
    assert conf.MAX_BODY_BYTES == 1_048_576


@override_settings(CLOUDTASKS={"QUEUE": "decorated"})
def test_override_settings_works_as_a_decorator():
    assert conf.QUEUE == "decorated"


def test_without_a_cloudtasks_setting_every_key_has_its_default(settings):
    del settings.CLOUDTASKS
    for name, (_, default) in DEFAULTS.items():
        assert getattr(conf, name) == default, name


def test_a_cloudtasks_setting_of_none_means_the_defaults(settings):
    settings.CLOUDTASKS = None
    assert conf.QUEUE == "default"
    assert conf.AUTH_TOKEN is None


@pytest.mark.parametrize(
    ("name", "env_name"),
    [
        ("PROJECT", "TASKAPP_GCP_PROJECT"),
        ("LOCATION", "TASKAPP_GCP_LOCATION"),
        ("QUEUE", "TASKAPP_GCP_QUEUE"),
        ("BASE_URL", "TASKAPP_CLOUD_RUN_URL"),
        ("AUTH_TOKEN", "TASKAPP_AUTH_TOKEN"),
    ],
)
def test_a_key_missing_from_the_settings_falls_back_to_its_environment_variable(
    settings, monkeypatch, name, env_name
):
    without(settings, name)
    monkeypatch.setenv(env_name, f"from-{env_name}")
    assert getattr(conf, name) == f"from-{env_name}"
    monkeypatch.setenv(env_name, "changed")
    assert getattr(conf, name) == "changed"


@pytest.mark.parametrize(
    ("name", "env_name"),
    [
        ("PROJECT", "TASKAPP_GCP_PROJECT"),
        ("LOCATION", "TASKAPP_GCP_LOCATION"),
        ("QUEUE", "TASKAPP_GCP_QUEUE"),
        ("BASE_URL", "TASKAPP_CLOUD_RUN_URL"),
        ("AUTH_TOKEN", "TASKAPP_AUTH_TOKEN"),
    ],
)
def test_the_settings_dict_wins_over_the_environment(settings, monkeypatch, name, env_name):
    monkeypatch.setenv(env_name, "from-env")
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, name: "from-settings"}
    assert getattr(conf, name) == "from-settings"


def test_an_empty_environment_variable_counts_as_unset(settings, monkeypatch):
    without(settings, "QUEUE", "PROJECT")
    monkeypatch.setenv("TASKAPP_GCP_QUEUE", "")
    monkeypatch.setenv("TASKAPP_GCP_PROJECT", "")
    assert conf.QUEUE == "default"
    assert conf.PROJECT is None


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_debug_mode_means_the_eager_transport(settings, monkeypatch, value):
    without(settings, "TRANSPORT")
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", value)
    assert conf.TRANSPORT == "eager"


@pytest.mark.parametrize("value", ["false", "0", "no", ""])
def test_debug_mode_off_keeps_the_default_transport(settings, monkeypatch, value):
    without(settings, "TRANSPORT")
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", value)
    assert conf.TRANSPORT == "cloudtasks"


def test_debug_mode_wins_over_the_transport_variable(settings, monkeypatch):
    without(settings, "TRANSPORT")
    monkeypatch.setenv("TASKAPP_TRANSPORT", "memory")
    assert conf.TRANSPORT == "memory"
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", "true")
    assert conf.TRANSPORT == "eager"


def test_a_transport_in_the_settings_wins_over_debug_mode(settings, monkeypatch):
    monkeypatch.setenv("TASKAPP_DEBUG_MODE", "true")
    assert conf.TRANSPORT == "memory"


def test_an_unknown_setting_raises_attribute_error():
    with pytest.raises(AttributeError, match="unknown Cloud Tasks setting 'AUTH_TOKENS'"):
        conf.AUTH_TOKENS  # noqa: B018
    assert not hasattr(conf, "NOPE")


def test_run_url_base_drops_the_trailing_slash(settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "BASE_URL": "https://app.example.com/"}
    assert conf.run_url_base == "https://app.example.com"
    without(settings, "BASE_URL")
    assert conf.run_url_base == ""


@pytest.mark.django_db
def test_a_token_from_the_environment_authenticates_requests(client, settings, monkeypatch):
    without(settings, "AUTH_TOKEN")
    monkeypatch.setenv("TASKAPP_AUTH_TOKEN", "env-token")

    accepted = client.post("/cloudtasks/sweep/", headers={"Authorization": "Bearer env-token"})
    refused = client.post("/cloudtasks/sweep/", headers={"Authorization": "Bearer test-token"})

    assert accepted.status_code == 200
    assert refused.status_code == 403


def test_importing_conf_reads_no_settings():
    code = (
        "import django_cloudtasks.conf as c\n"
        "from django.core.exceptions import ImproperlyConfigured\n"
        "try:\n"
        "    c.conf.PROJECT\n"
        "except ImproperlyConfigured:\n"
        "    print('lazy')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "lazy"
