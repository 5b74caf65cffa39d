from __future__ import annotations

import os

import pytest
from django.db import connection


@pytest.mark.django_db
def test_the_suite_runs_on_the_database_it_was_asked_for():
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}
    assert connection.vendor == expected[os.environ.get("CLOUDTASKS_TEST_DATABASE", "sqlite")]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
