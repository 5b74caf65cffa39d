"""Settings of the benchmark project, read from ``CLOUDTASKS_BENCH_CONFIG`` (JSON).

Keys: ``db`` (NAME, HOST, PORT, USER, PASSWORD), ``emulator`` (host:port),
``base_url`` (the gunicorn server), ``log_dir`` (where the query counter writes).
A deployment-like configuration: persistent database connections, no debug, and only
the middleware that counts queries.
"""

from __future__ import annotations

import json
import os

CONFIG = json.loads(os.environ.get("CLOUDTASKS_BENCH_CONFIG") or "{}")
_DB = CONFIG.get("db", {})

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchmarks.cloudtasks_bench.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WSGI_APPLICATION = "benchmarks.cloudtasks_bench.wsgi.application"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_cloudtasks",
    "benchmarks.cloudtasks_bench",
]

MIDDLEWARE = ["benchmarks.cloudtasks_bench.middleware.QueryCounter"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _DB.get("NAME", "cloudtasks_bench"),
        "USER": _DB.get("USER", "postgres"),
        "PASSWORD": _DB.get("PASSWORD", ""),
        "HOST": _DB.get("HOST", "127.0.0.1"),
        "PORT": str(_DB.get("PORT", 5432)),
        # One connection per worker for its whole life, as a deployment would have.
        "CONN_MAX_AGE": None,
        # ``--synchronous-commit off`` trades the last moments of commits in a database
        # crash for commits that do not wait for the disk (Redis does not fsync either).
        "OPTIONS": {"options": f"-c synchronous_commit={CONFIG.get('synchronous_commit', 'on')}"},
    }
}

CLOUDTASKS = {
    "PROJECT": "bench-project",
    "LOCATION": "us-central1",
    "QUEUE": "bench",
    "TRANSPORT": "cloudtasks",
    "EMULATOR_HOST": CONFIG.get("emulator"),
    "BASE_URL": CONFIG.get("base_url", "http://127.0.0.1:8000"),
    "AUTH_TOKEN": "bench-token",
    "QUEUES": {"bench": {"shards": int(CONFIG.get("shards", 1))}},
}
if CONFIG.get("inline_seconds") is not None:  # unset: the library's default
    CLOUDTASKS["INLINE_SECONDS"] = CONFIG["inline_seconds"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}
