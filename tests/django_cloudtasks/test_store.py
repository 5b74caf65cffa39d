"""The store: one class per database, and the check that refuses the others."""

from __future__ import annotations

import pytest
from django.core import checks
from django.db import connection, connections

from django_cloudtasks.store import check_database, get_store


def test_the_store_speaks_the_dialect_of_the_database():
    assert get_store().vendor == connection.vendor


def test_the_test_database_passes_the_database_check():
    assert check_database() == []


@pytest.mark.parametrize("vendor", ["mysql", "oracle", "microsoft"])
def test_any_other_database_is_refused_with_e010(monkeypatch, vendor):
    monkeypatch.setattr(connections["default"], "vendor", vendor)
    messages = check_database()
    assert [m.id for m in messages] == ["django_cloudtasks.E010"]
    assert messages[0].level == checks.ERROR
    assert vendor in messages[0].msg and "PostgreSQL or SQLite" in messages[0].msg


def test_the_database_check_is_registered_with_django():
    assert check_database in checks.registry.registry.get_checks()
