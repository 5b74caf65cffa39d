"""Settings for the test suite. ``CLOUDTASKS_TEST_DATABASE=postgres`` selects PostgreSQL."""

from __future__ import annotations

import os
import tempfile
from typing import Any

DATABASE = os.environ.get("CLOUDTASKS_TEST_DATABASE", "sqlite")

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the live server serves the admin's CSS and scripts
    "django_cloudtasks",
    "tests.testapp",
]

MIDDLEWARE = [
    "tests.gateway.FlakyGateway",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# One test database per test run (inherited by servers the run starts), so that
# concurrent runs on one machine never share a database.
_SUFFIX = os.environ.setdefault(
    "CLOUDTASKS_TEST_DB_SUFFIX", f"{os.environ.get('TOX_ENV_NAME', 'main')}_{os.getpid()}"
)
_TEST_DB_NAME = "test_cloudtasks_" + _SUFFIX.replace("-", "_").replace(".", "_")

if DATABASE == "postgres":
    DATABASES: dict[str, dict[str, Any]] = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "test"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": _TEST_DB_NAME},
        }
    }
else:
    # A file, not ":memory:", so that the end-to-end tests' HTTP server threads each
    # open their own connection, as a deployed SQLite site does.
    DATABASES: dict[str, dict[str, Any]] = {  # type: ignore[no-redef]
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tempfile.gettempdir(), "cloudtasks-tests.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), _TEST_DB_NAME + ".sqlite3")},
        }
    }

CLOUDTASKS = {
    "PROJECT": "test-project",
    "LOCATION": "us-central1",
    "QUEUE": "default",
    "BASE_URL": "http://testserver",
    "AUTH_TOKEN": "test-token",
    "TRANSPORT": "memory",
}

if os.environ.get("CLOUDTASKS_TEST_SERVER"):
    # A server process started by a test serves the test run's database.
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]

if os.environ.get("CLOUDTASKS_TEST_OVERRIDES"):
    # Settings a test hands to a server process it starts (JSON merged into CLOUDTASKS).
    import json

    CLOUDTASKS = {**CLOUDTASKS, **json.loads(os.environ["CLOUDTASKS_TEST_OVERRIDES"])}
