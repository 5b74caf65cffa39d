"""@task and @register_task: registration, plain calls, introspection, discovery."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from canvas import Signature
from django_cloudtasks import task
from django_cloudtasks.decorators import register_task
from django_cloudtasks.exceptions import AlreadyRegistered, NotRegistered
from django_cloudtasks.registry import get_task, registry
from tests.testapp.tasks import add, bound_info


@pytest.fixture
def cleanup():
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister(name)


@pytest.mark.django_db
def test_calling_a_task_directly_runs_it_in_process():
    assert add(2, 3) == 5
    assert bound_info(7) == 7


def test_introspection_sees_the_original_function():
    assert add.__name__ == "add"
    assert list(inspect.signature(add).parameters) == ["x", "y"]
    assert add.__module__ == "tests.testapp.tasks"
    assert get_task("add") is add


def test_s_and_si_build_signatures_by_registered_name():
    assert add.s(1) == Signature("add", (1,))
    assert add.si(1, 2) == Signature("add", (1, 2), immutable=True)
    assert add.signature((1,), {"y": 2}, countdown=3).options == {"countdown": 3}


def test_a_custom_name_and_policy(cleanup):
    @task(name="custom.multiply", queue="math", max_retries=7)
    def multiply(a, b):
        return a * b

    cleanup.append("custom.multiply")
    assert multiply.name == "custom.multiply"
    assert multiply.policy.queue == "math" and multiply.policy.max_retries == 7
    assert multiply(3, 4) == 12


def test_registering_another_function_under_a_taken_name_names_both(cleanup):
    @register_task
    def duplicate_name():
        return 1

    cleanup.append("duplicate_name")

    def other():
        return 2

    other.__name__ = other.__qualname__ = "duplicate_name"
    with pytest.raises(AlreadyRegistered) as info:
        register_task(other)
    message = str(info.value)
    assert "test_registry" in message and message.count("duplicate_name") >= 2


def test_re_registering_the_same_function_is_allowed(cleanup):
    def again():
        return 1

    cleanup.append("again")
    first = task(again)
    assert task(again).name == first.name


def test_unknown_task_names_and_arguments_are_clear_errors():
    with pytest.raises(NotRegistered, match="no task is registered as 'missing'"):
        get_task("missing")
    with pytest.raises(TypeError, match="unknown arguments: colour"):
        task(colour="blue")


def test_every_installed_apps_tasks_module_is_imported_at_startup():
    script = (
        "import django; django.setup()\n"
        "from django_cloudtasks.registry import registry\n"
        "print(','.join(registry.names()))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    names = out.stdout.strip().split(",")
    assert {"add", "tsum", "sum", "faulty_task"} <= set(names)
