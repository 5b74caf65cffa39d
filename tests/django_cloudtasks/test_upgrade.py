"""Upgrading a database: from the original package (1.9.0) and from version 0.2.

The original shipped its own ``0001_initial`` under our app label; a database it
migrated must migrate cleanly here, keep its rows, and end with the schema of a fresh
install. The test marked ``upgrade`` installs 1.9.0 from the package index into a
throwaway virtualenv and is selected with ``-m upgrade`` (``.ci/run`` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

HERE = Path(__file__).parent / "upgrade"
ROOT = Path(__file__).parents[2]
ORIGINAL = "django-gcp-cloudtasks==1.9.0"


@pytest.fixture
def make_database(tmp_path: Path) -> Iterator[Callable[[], dict[str, str]]]:
    """Make throwaway databases of the suite's vendor, as Django DATABASES entries."""
    default = settings.DATABASES["default"]
    made: list[str] = []
    params = {"host": default["HOST"], "port": default["PORT"], "user": default["USER"]}

    def make() -> dict[str, str]:
        name = f"cloudtasks_upgrade_{uuid.uuid4().hex[:12]}"
        if not default["ENGINE"].endswith("postgresql"):
            return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / name)}
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": default["USER"],
            "HOST": default["HOST"],
            "PORT": str(default["PORT"]),
        }

    yield make
    if made:
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(make_database: Callable[[], dict[str, str]]) -> dict[str, str]:
    """One throwaway database."""
    return make_database()


def _fresh_schema(make_database: Callable[[], dict[str, str]]) -> dict:
    """The app's schema on a database this library migrated from nothing."""
    return _run(sys.executable, "new_side.py", make_database(), "schema")["schema"]


def _run(python: str, script: str, database: dict[str, str], *args: str, **env: str) -> dict:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TASKAPP_"))},
        "UPGRADE_DATABASE": json.dumps(database),
        **env,
    }
    done = subprocess.run(
        [python, str(HERE / script), *args],
        cwd=ROOT if python == sys.executable else HERE,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _migrate_new(database: dict[str, str], *target: str) -> None:
    subprocess.run(
        [sys.executable, "-c", _MIGRATE, *target],
        cwd=ROOT,
        env={**os.environ, "UPGRADE_DATABASE": json.dumps(database)},
        check=True,
        timeout=300,
    )


_MIGRATE = """
import json, os, sys
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_cloudtasks"],
    DATABASES={"default": json.loads(os.environ["UPGRADE_DATABASE"])}, USE_TZ=True,
)
django.setup()
from django.core.management import call_command
call_command("migrate", "django_cloudtasks", *sys.argv[1:], verbosity=0)
"""


def test_upgrade_from_version_0_2_adds_the_original_tables(
    database: dict[str, str], make_database: Callable[[], dict[str, str]]
) -> None:
    """A database at 0.2's last migration gains the 1.x tables and ends like a fresh one."""
    _migrate_new(database, "0004")
    upgraded = _run(sys.executable, "new_side.py", database, "workflows", TASKAPP_DEBUG_MODE="true")
    assert upgraded["readme"] == 19
    assert upgraded["chain_status"] == "SUCCESS"
    assert upgraded["old_chains"] == {}
    assert upgraded["pages"] == {"chains": 200, "chain": None, "tasks": 200, "workflows": 200}
    assert {"django_cloudtasks_cloudchain", "django_cloudtasks_cloudtask"} <= set(
        upgraded["schema"]
    )
    assert upgraded["schema"] == _fresh_schema(make_database)


@pytest.fixture(scope="module")
def original_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv with the original package installed from the package index."""
    venv = tmp_path_factory.mktemp("original") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    packages = [ORIGINAL]
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        packages.append("psycopg[binary]>=3.1")
    done = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"could not install {packages}:\n{done.stderr}"
    return python


@pytest.mark.upgrade
def test_upgrade_from_the_original_package(
    original_python: str, database: dict[str, str], make_database: Callable[[], dict[str, str]]
) -> None:
    """1.9.0 migrates and runs its README's chain; this library then migrates the same
    database cleanly, keeps those rows (shown in the admin) and runs workflows."""
    original = _run(
        original_python,
        "original_side.py",
        database,
        TASKAPP_DEBUG_MODE="true",
        TASKAPP_AUTH_TOKEN="upgrade-token",
    )
    assert sorted(original["chains"].values()) == ["SUCCESS", "SUCCESS"]
    assert original["results"] == [6, 9, 9, 19]

    upgraded = _run(sys.executable, "new_side.py", database, "workflows", TASKAPP_DEBUG_MODE="true")
    assert upgraded["old_chains"] == original["chains"]
    assert upgraded["old_results"] == original["results"]
    assert upgraded["readme"] == 19
    assert upgraded["chain_status"] == "SUCCESS"
    assert upgraded["group"] == [3, 7]
    assert upgraded["canvas"] == [3, 7, 0]
    assert upgraded["revoke_unknown"] is False
    assert upgraded["pages"] == {"chains": 200, "chain": 200, "tasks": 200, "workflows": 200}
    assert upgraded["schema"] == _fresh_schema(make_database)
