"""The paths a ported Celery case runs on: eager, memory, and for a sample the emulator.

A test asks for ``path`` and runs its canvas with ``running.run``. Every test runs
under the eager and the memory transport; one marked ``@pytest.mark.emulator`` also runs through
the emulator, which delivers over HTTP to a live server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_cloudtasks.transports import reset_transport
from tests.celery_suite import tasks  # noqa: F401  (registers the suite's tasks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "path" in metafunc.fixturenames:
        paths = ["eager", "memory"]
        if metafunc.definition.get_closest_marker("emulator"):
            paths.append("emulator")
        metafunc.parametrize("path", paths, indirect=True)


@pytest.fixture
def path(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    """The transport the test runs on; ``emulator`` also starts the emulator."""
    name = request.param
    if name == "emulator":
        request.getfixturevalue("serve_emulator")()
    else:
        settings.CLOUDTASKS = {**settings.CLOUDTASKS, "TRANSPORT": name}
        reset_transport()
    yield name
    reset_transport()
