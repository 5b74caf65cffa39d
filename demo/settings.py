"""Settings of the demo site, shared by the showcase process and the HTTP server it starts.

The runner passes the addresses it picked through environment variables, so that both
processes see the same database, server URL, emulator and token:

``DEMO_DIR``            directory of the SQLite database (and the logs)
``DEMO_BASE_URL``       URL of the Django server that Cloud Tasks calls back
``DEMO_EMULATOR_HOST``  ``host:port`` of the local Cloud Tasks emulator
``DEMO_AUTH_TOKEN``     shared bearer token between Cloud Tasks and the endpoints
``DEMO_LOG_FILE``       where this process writes its logs (default: stderr)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DEMO_DIR = Path(os.environ.get("DEMO_DIR") or Path(tempfile.gettempdir()) / "cloudtasks-demo")

SECRET_KEY = "demo-only-not-secret"
DEBUG = True  # loopback only; lets runserver serve the admin's static files
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "demo.urls"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_cloudtasks",
    "demo",  # its tasks module holds the showcase's tasks
]

MIDDLEWARE = [
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

# SQLite serving concurrent deliveries: immediate transactions take the write lock up
# front, the busy timeout waits for it, WAL lets readers (the live table) run alongside.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DEMO_DIR / "demo.sqlite3"),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        },
    }
}

CLOUDTASKS = {
    "PROJECT": "demo-project",
    "LOCATION": "us-central1",
    "QUEUE": "default",
    "BASE_URL": os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000"),
    "AUTH_TOKEN": os.environ.get("DEMO_AUTH_TOKEN", "demo-token"),
    "TRANSPORT": "cloudtasks",
    "EMULATOR_HOST": os.environ.get("DEMO_EMULATOR_HOST", "127.0.0.1:8123"),
    # Created by `manage.py cloudtasks_queues` (the demo runs it at start): short retry
    # backoffs, where the service's default would double up to an hour.
    "QUEUES": {"default": {"max_attempts": 20, "min_backoff": 1, "max_backoff": 2}},
    # Fired by the emulator's Cloud Scheduler, whose clock the demo runs 30 times faster:
    # a minute lasts two seconds.
    "SCHEDULES": {
        "heartbeat": {"task": "add", "args": [20, 22], "cron": "* * * * *", "overlap": "skip"},
    },
}

_LOG_FILE = os.environ.get("DEMO_LOG_FILE")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {
        "out": (
            {"class": "logging.FileHandler", "filename": _LOG_FILE, "formatter": "plain"}
            if _LOG_FILE
            else {"class": "logging.StreamHandler", "formatter": "plain"}
        )
    },
    "root": {"handlers": ["out"], "level": "INFO"},
    # Django's own console handler would write into the live table of the showcase.
    "loggers": {"django": {"handlers": ["out"], "level": "INFO", "propagate": False}},
}
