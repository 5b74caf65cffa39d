"""Suite-wide set-up: choose which tests run on which database, clear what killed runs left."""

from __future__ import annotations

import os
import re

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


#: A test database of this suite: ``test_cloudtasks_<env>_<pid of the run>`` (settings.py).
_TEST_DATABASE = re.compile(r"test_cloudtasks_\w*_(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def drop_stale_test_databases() -> list[str]:
    """Drop the PostgreSQL test databases of runs that were killed; return their names.

    A run names its database after its process id and drops it when it ends; a killed
    run leaves it behind. A database whose process is gone is dropped, unless someone
    is connected to it (a run on another host sharing the server: PostgreSQL then
    refuses the drop). This run's own database and live runs' are never touched.
    """
    import psycopg
    from psycopg import sql

    db = settings.DATABASES["default"]
    own = db["TEST"]["NAME"]
    dropped = []
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        dbname=db["NAME"],
        connect_timeout=3,
        autocommit=True,
    ) as conn:
        names = [
            name
            for (name,) in conn.execute(
                r"SELECT datname FROM pg_database WHERE datname LIKE 'test\_cloudtasks\_%'"
            )
        ]
        for name in names:
            match = _TEST_DATABASE.fullmatch(name)
            if name == own or match is None or _alive(int(match.group(1))):
                continue
            try:
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.ObjectInUse:
                continue
            dropped.append(name)
    return dropped


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "writes_outside_the_engine: writes node rows from outside the engine on purpose "
        "(tests/django_cloudtasks/writers.py)",
    )


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
            drop_stale_test_databases()
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
