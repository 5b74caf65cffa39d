"""Suite-wide set-up: choose which tests run on which database, clear what killed runs left,
and the emulator every package's end-to-end tests deliver through."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from django.conf import settings

from django_cloudtasks.transports import get_transport, reset_transport

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


# -- the emulator, its queues and the app it delivers to ------------------------------------

LOCATION = "projects/test-project/locations/us-central1"
#: Retries quick enough for tests: 0.2 s, doubling to 3.2 s, at most 5 s apart.
QUICK_RETRIES = {
    "max_attempts": 10,
    "min_backoff": timedelta(seconds=0.2),
    "max_backoff": timedelta(seconds=5),
    "max_doublings": 4,
}


@pytest.fixture
def serve_emulator(request, settings):
    """Start an emulator, create its queues and point the app at it; all undone after.

    Call it as ``serve_emulator(queues=("default",), retry=QUICK_RETRIES, base_url=None,
    options={...}, settings_changes={...})``: ``queues`` are short ids created in the test
    location with ``retry``; ``base_url`` is where the emulator delivers (default: the
    live server); ``options`` are emulator options (sub-second backoffs are kept);
    ``settings_changes`` more ``CLOUDTASKS`` keys (None removes one). Returns the emulator.
    """
    from google.cloud import tasks_v2

    from django_cloudtasks.emulator import CloudTasksEmulator

    started: list[CloudTasksEmulator] = []

    def serve(
        *,
        queues=("default",),
        retry=QUICK_RETRIES,
        base_url=None,
        options=None,
        settings_changes=None,
    ):
        emulator = CloudTasksEmulator(**{"subsecond_backoffs": True, **(options or {})})
        emulator.start()
        started.append(emulator)
        if base_url is None:
            base_url = request.getfixturevalue("live_server").url
        config = {
            **settings.CLOUDTASKS,
            "TRANSPORT": "cloudtasks",
            "EMULATOR_HOST": emulator.address,
            "BASE_URL": base_url,
            **(settings_changes or {}),
        }
        settings.CLOUDTASKS = {k: v for k, v in config.items() if v is not None}
        reset_transport()
        client = get_transport().client
        for queue in queues:
            client.create_queue(
                parent=LOCATION,
                queue=tasks_v2.Queue(
                    name=f"{LOCATION}/queues/{queue}",
                    retry_config=tasks_v2.RetryConfig(**retry),
                ),
            )
        return emulator

    yield serve
    reset_transport()
    for emulator in started:
        emulator.stop()


@pytest.fixture
def live_emulator(serve_emulator):
    """The emulator delivering to the live server, with the ``default`` queue retrying fast."""
    return serve_emulator()
