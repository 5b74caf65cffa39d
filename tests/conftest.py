"""Suite-wide set-up: choose which tests run on which database."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

# The helper users add to their own conftest.py.
pytest_plugins = ["django_cloudtasks.testing"]


def _postgres_problem() -> str | None:
    import psycopg

    db = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], connect_timeout=3
        ).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "upgrade" not in (config.getoption("markexpr") or ""):
        skip_upgrade = pytest.mark.skip(
            reason="installs django-gcp-cloudtasks 1.9.0 from the package index into a "
            "throwaway virtualenv: select it with -m upgrade (.ci/run does)"
        )
        for item in items:
            if item.get_closest_marker("upgrade"):
                item.add_marker(skip_upgrade)
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        problem = _postgres_problem()
        if problem is None:
            return
        if os.environ.get("CI"):
            raise pytest.UsageError(f"PostgreSQL is required in CI but unreachable: {problem}")
        skip = pytest.mark.skip(
            reason=f"PostgreSQL is not reachable at 127.0.0.1:5432 ({problem}); "
            "start it to run the PostgreSQL half of the suite"
        )
        for item in items:
            item.add_marker(skip)
        return
    skip_pg = pytest.mark.skip(
        reason="needs PostgreSQL: runs in the CLOUDTASKS_TEST_DATABASE=postgres pass"
    )
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip_pg)
