from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import drop_stale_test_databases


@pytest.mark.django_db
def test_the_suite_runs_on_the_database_it_was_asked_for():
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}
    assert connection.vendor == expected[os.environ.get("CLOUDTASKS_TEST_DATABASE", "sqlite")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def _postgres(dbname: str | None = None):
    import psycopg

    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        dbname=dbname or db["NAME"],
        autocommit=True,
    )


def _databases() -> set[str]:
    with _postgres() as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


@pytest.mark.postgres
@pytest.mark.django_db  # this run's own database exists
def test_the_databases_of_killed_runs_are_dropped_and_live_runs_keep_theirs():
    from psycopg import sql

    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    names = {
        "killed": f"test_cloudtasks_main_{killed.pid}",
        "killed under tox": f"test_cloudtasks_py312_django52_{killed.pid}",
        "live": f"test_cloudtasks_main_{live.pid}",
        "killed, in use elsewhere": f"test_cloudtasks_other_host_{killed.pid}",
        "not a run's": "test_cloudtasks_fixture",
    }
    with _postgres() as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    elsewhere = _postgres(names["killed, in use elsewhere"])
    try:
        dropped = drop_stale_test_databases()

        assert sorted(dropped) == sorted([names["killed"], names["killed under tox"]])
        remaining = _databases()
        assert not {names["killed"], names["killed under tox"]} & remaining
        assert {names["live"], names["killed, in use elsewhere"], names["not a run's"]} <= remaining
        assert settings.DATABASES["default"]["TEST"]["NAME"] in remaining
    finally:
        elsewhere.close()
        live.kill()
        live.wait()
        with _postgres() as conn:
            for name in names.values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
