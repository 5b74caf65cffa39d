"""Fixtures for the emulator tests: a running emulator, the real client, a recording handler.

Nothing here imports Django: the emulator must work without it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from google.cloud import tasks_v2

from django_cloudtasks.emulator import CloudTasksEmulator, emulator_client
from tests.django_cloudtasks.emulator.recording import (
    LOCATION,
    HandlerServer,
    RecordingHandler,
    handler_class,
    new_queue_name,
)


@pytest.fixture
def handler() -> Iterator[RecordingHandler]:
    """A recording HTTP handler answering 200 by default."""
    holder: list[RecordingHandler] = []
    server = HandlerServer(("127.0.0.1", 0), handler_class(lambda: holder[0]))
    holder.append(RecordingHandler(server=server))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield holder[0]
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def emulator() -> Iterator[CloudTasksEmulator]:
    """A running emulator that keeps sub-second backoffs (a testing option)."""
    with CloudTasksEmulator(subsecond_backoffs=True) as emu:
        yield emu


@pytest.fixture
def tasks_client(emulator: CloudTasksEmulator) -> Iterator[tasks_v2.CloudTasksClient]:
    """The real Cloud Tasks client connected to the emulator."""
    tasks_client = emulator_client(emulator.address)
    yield tasks_client
    tasks_client.transport.close()


@pytest.fixture
def queue_name() -> str:
    """A fresh queue name (not created)."""
    return new_queue_name()


@pytest.fixture
def queue(tasks_client: tasks_v2.CloudTasksClient) -> str:
    """The name of a fresh queue, created with the service defaults."""
    name = new_queue_name()
    tasks_client.create_queue(parent=LOCATION, queue={"name": name})
    return name
