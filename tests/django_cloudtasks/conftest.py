"""Fixtures for the Django side: transports, settings, and who writes node rows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_cloudtasks.transports import get_transport, reset_transport
from django_cloudtasks.transports.memory import MemoryTransport
from tests.django_cloudtasks.browser import chromium  # noqa: F401  (a fixture)
from tests.django_cloudtasks.otel import metrics, spans  # noqa: F401  (fixtures)
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


#: The name of the thread that runs the ASGI server's event loop.
ASGI_LOOP_THREAD = "uvicorn-loop"


@pytest.fixture
def asgi_server(transactional_db) -> Iterator[str]:
    """This project's ASGI application under a real uvicorn server; yields its base URL.

    The server's event loop runs in the thread named :data:`ASGI_LOOP_THREAD`.
    """
    import socket
    import threading

    import uvicorn
    from django.core.asgi import get_asgi_application

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        get_asgi_application(), lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name=ASGI_LOOP_THREAD, daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()
