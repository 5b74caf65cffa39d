"""One delivery takes the path docs/architecture.md draws, in that order."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from django_cloudtasks.constants import State
from django_cloudtasks.models import Node
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
PACKAGE = str(Path(sys.modules["django_cloudtasks"].__file__).parent)  # type: ignore[arg-type]

#: The success path of a node with a successor, as the page draws it.
SUCCESS_PATH = [
    "views.run",
    "runner.deliver",
    "engine.claim",
    "store.claim",
    "runner._start",
    "engine.extend_lease",
    "policy.is_expired",
    "runner._run",
    "registry.get",
    "runner._call_arguments",
    "engine.succeed",
    "engine.settle",
    "store.advance",
    "dispatch.enqueue_on_commit",
    "dispatch.send_now",
]


def _step(frame) -> str | None:
    """``<layer>.<function>`` for a call into django_cloudtasks, else None."""
    path = frame.f_code.co_filename
    if not path.startswith(PACKAGE):
        return None
    module = frame.f_globals.get("__name__", "")
    parts = module.split(".")
    layer = parts[1] if len(parts) > 1 else ""
    return f"{layer}.{frame.f_code.co_name}"


def _record(call):
    steps: list[str] = []

    def profile(frame, event, arg):
        if event == "call":
            step = _step(frame)
            if step is not None and (not steps or steps[-1] != step):
                steps.append(step)

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, steps


def _in_order(expected: list[str], steps: list[str]) -> list[str]:
    """The steps of ``expected`` missing from ``steps`` in that order."""
    position, missing = 0, []
    for step in expected:
        try:
            position = steps.index(step, position) + 1
        except ValueError:
            missing.append(step)
    return missing


def test_the_page_names_every_step_of_the_path():
    text = DOC.read_text()
    assert [s for s in SUCCESS_PATH if not re.search(rf"\b{re.escape(s)}\b", text)] == []


def test_a_delivery_takes_the_documented_path(client, memory):
    (tasks.add.s(1, 2) | tasks.add.s(3)).delay()
    first = Node.objects.get(index=0)
    body = json.dumps({"node": str(first.pk), "retry": 0})

    response, steps = _record(
        lambda: client.post(
            "/cloudtasks/run/add/",
            data=body,
            content_type="application/json",
            headers={"Authorization": "Bearer test-token"},
        )
    )

    assert response.status_code == 200
    assert Node.objects.get(pk=first.pk).state == State.SUCCESS
    assert _in_order(SUCCESS_PATH, steps) == []
