"""Fixtures for the Django side: transports, settings, and who writes node rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from django_cloudtasks.transports import get_transport, reset_transport
from django_cloudtasks.transports.memory import MemoryTransport
from tests.django_cloudtasks.browser import chromium  # noqa: F401  (a fixture)
from tests.django_cloudtasks.writers import watch_writers


def _use(settings: pytest.FixtureRequest, name: str) -> None:
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": name}  # type: ignore[attr-defined]
    reset_transport()


# -- one writer: every statement that writes node or workflow rows comes from the engine --


@pytest.fixture(autouse=True)
def only_the_engine_writes_nodes_and_workflows(request) -> Iterator[None]:
    """Fail a test during which a node or workflow row was written from outside the engine.

    Watches the statements of this thread's connections (the run endpoint, the runner
    under the eager and memory transports, the admin, the commands).
    """
    if request.node.get_closest_marker("writes_outside_the_engine"):
        yield
        return
    with watch_writers() as strays:
        yield
    assert strays == [], "node or workflow rows written outside the engine"


@pytest.fixture
def memory(settings) -> Iterator[MemoryTransport]:
    """The memory transport; call ``memory.drain()`` to run what was sent."""
    _use(settings, "memory")
    transport = get_transport()
    assert isinstance(transport, MemoryTransport)
    yield transport
    reset_transport()


@pytest.fixture
def eager(settings) -> Iterator[None]:
    """The eager transport: everything runs at commit time, in-process."""
    _use(settings, "eager")
    yield
    reset_transport()


@pytest.fixture(params=["eager", "memory"])
def transport(request, settings) -> Iterator[str]:
    """Each test runs under eager and under memory (``run()`` drains when needed)."""
    _use(settings, request.param)
    yield request.param
    reset_transport()


@pytest.fixture
def executions():
    """How many times each test task ran, read from the database."""
    from django.db.models import Count

    from tests.testapp.models import Execution

    def counts() -> dict[str, int]:
        rows = Execution.objects.values("task").annotate(n=Count("id"))
        return {row["task"]: row["n"] for row in rows}

    return counts


@pytest.fixture
def no_environment(monkeypatch):
    """The test sees only the settings it gives, not the shell's TASKAPP_* variables."""
    from django_cloudtasks.conf import DEFAULTS

    for env_name, _ in DEFAULTS.values():
        if env_name:
            monkeypatch.delenv(env_name, raising=False)
    monkeypatch.delenv("TASKAPP_DEBUG_MODE", raising=False)


# -- OIDC: a key that signs like Google's, and the server publishing its certificate -------


@pytest.fixture(scope="session")
def minter():
    """Signs ID tokens like Google's, with the key :func:`certs_server` publishes."""
    from django_cloudtasks.emulator.oidc import TokenMinter

    return TokenMinter()


@pytest.fixture(scope="session")
def certs_server(minter):
    """A local HTTP server publishing the minter's certificate (``pem_url``)."""
    from django_cloudtasks.emulator.oidc import CertsServer

    server = CertsServer(minter)
    server.start()
    yield server
    server.stop()


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
