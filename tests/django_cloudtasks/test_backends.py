"""The Django Tasks backend: ``@task`` functions of ``django.tasks`` run on this engine.

Runs on Django 6 (``django.tasks``) and on Django 5.2 with the ``django-tasks``
backport; skipped when neither is installed.
"""

from __future__ import annotations

import importlib
import sys
import time
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

try:
    import django.tasks as django_tasks_api
except ImportError:
    django_tasks_api = pytest.importorskip(
        "django_tasks",
        reason="Django Tasks is not installed: needs Django 6 (django.tasks) or the "
        "django-tasks backport on Django 5.2",
    )

backends_exceptions = importlib.import_module(f"{django_tasks_api.__name__}.exceptions")

from django_cloudtasks import backends  # noqa: E402
from django_cloudtasks.backends import (  # noqa: E402
    CloudTasksBackend,
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    ensure_registered,
    registry_name,
)
from django_cloudtasks.constants import State  # noqa: E402
from django_cloudtasks.models import Node, Workflow  # noqa: E402
from django_cloudtasks.registry import registry  # noqa: E402
from tests.testapp import django_tasks as tasks  # noqa: E402
from tests.testapp.models import Execution  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "django_cloudtasks.backends.CloudTasksBackend"
QUEUE = "projects/test-project/locations/us-central1/queues/default"
EMAILS = "projects/test-project/locations/us-central1/queues/emails"


def use_backend(settings, **params) -> None:
    settings.TASKS = {"default": {"BACKEND": BACKEND, **params}}


@pytest.fixture
def cloud(settings):
    """Django's default task backend is this one, allowing the queues the tests use."""
    use_backend(settings, QUEUES=["default", "emails"])
    yield django_tasks_api.task_backends["default"]


@pytest.fixture
def signals_seen():
    """Every Django task signal received, as (signal, status, result id, sender)."""
    from django_cloudtasks.backends import task_enqueued, task_finished, task_started

    seen: list[tuple[str, str, str, type]] = []

    def receiver_for(name):
        def receive(sender, task_result, **kwargs):
            seen.append((name, str(task_result.status), task_result.id, sender))

        return receive

    receivers = {
        task_enqueued: receiver_for("enqueued"),
        task_started: receiver_for("started"),
        task_finished: receiver_for("finished"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


# -- through the eager transport ----------------------------------------------------------


def test_an_enqueued_task_runs_eagerly_and_its_result_is_successful(cloud, eager):
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.is_finished and result.attempts == 1
    assert result.args == [2, 3] and result.kwargs == {}
    assert result.backend == "default"
    assert result.enqueued_at <= result.started_at <= result.finished_at
    fetched = tasks.add.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5
    assert Execution.objects.filter(task="django.add").count() == 1


def test_the_call_is_a_node_in_the_engines_tables(cloud, eager):
    result = tasks.add.enqueue(1, y=2)
    node = Node.objects.get(pk=result.id)
    assert node.task_name == "django.tasks:tests.testapp.django_tasks.add"
    assert node.state == State.SUCCESS and node.result == 3
    assert node.args == [1] and node.kwargs == {"y": 2}
    assert Workflow.objects.get(pk=node.workflow_id).status == "SUCCESS"


def test_a_task_that_raises_is_failed_with_its_error(cloud, eager):
    result = tasks.explode.enqueue("boom")
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "ValueError: boom" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018
    assert tasks.explode.get_result(result.id).status == TaskResultStatus.FAILED


def test_a_task_that_takes_context_sees_itself_running(cloud, eager):
    result = tasks.inspect_self.enqueue("me")
    assert result.return_value == {
        "label": "me",
        "attempt": 1,
        "id": result.id,
        "status": TaskResultStatus.RUNNING,
    }


def test_a_deferred_task_runs_eagerly_and_keeps_its_run_after(cloud, eager):
    later = timezone.now() + timedelta(minutes=5)
    result = tasks.add.using(run_after=later).enqueue(1, 2)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3
    assert result.task.run_after == later
    assert Node.objects.get(pk=result.id).eta == later


def test_an_async_task_runs(cloud, eager):
    assert tasks.double_async.enqueue(21).return_value == 42


def test_the_signals_are_sent_in_order(cloud, eager, signals_seen):
    ok = tasks.add.enqueue(1, 1)
    bad = tasks.explode.enqueue("no")
    assert signals_seen == [
        ("enqueued", "READY", ok.id, CloudTasksBackend),
        ("started", "RUNNING", ok.id, CloudTasksBackend),
        ("finished", "SUCCESSFUL", ok.id, CloudTasksBackend),
        ("enqueued", "READY", bad.id, CloudTasksBackend),
        ("started", "RUNNING", bad.id, CloudTasksBackend),
        ("finished", "FAILED", bad.id, CloudTasksBackend),
    ]


def test_a_failing_signal_receiver_does_not_wedge_the_task(cloud, eager):
    from django_cloudtasks.backends import task_started

    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    task_started.connect(broken)
    try:
        assert tasks.add.enqueue(2, 2).return_value == 4
    finally:
        task_started.disconnect(broken)


def test_a_result_read_inside_a_transaction_is_still_ready(cloud, eager):
    from django.db import transaction

    with transaction.atomic():
        result = tasks.add.enqueue(1, 2)
        assert result.status == TaskResultStatus.READY
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3


# -- through the memory transport: what is sent, and when --------------------------------


def test_enqueue_sends_one_dispatch_after_commit_and_reports_ready(cloud, memory):
    result = tasks.add.enqueue(4, 5)
    assert result.status == TaskResultStatus.READY
    assert result.started_at is None and result.attempts == 0
    with pytest.raises(ValueError, match="not finished"):
        result.return_value  # noqa: B018
    [dispatch] = memory.sent
    assert dispatch.node_id == result.id
    assert dispatch.task_name == registry_name(tasks.add)
    assert dispatch.eta is None and dispatch.queue == ""
    memory.drain()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 9


def test_run_after_becomes_the_eta_of_the_dispatch(cloud, memory):
    later = timezone.now() + timedelta(hours=2)
    result = tasks.stamp.using(run_after=later).enqueue()
    [dispatch] = memory.sent
    assert dispatch.eta == later
    assert Node.objects.get(pk=result.id).state == State.SCHEDULED
    fetched = tasks.stamp.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert fetched.task.run_after == later


def test_run_after_beyond_thirty_days_is_parked_not_lost(cloud, memory):
    result = tasks.stamp.using(run_after=timezone.now() + timedelta(days=45)).enqueue()
    assert memory.sent == []
    assert Node.objects.get(pk=result.id).parked


def cloud_tasks_queue_path(queue: str) -> str:
    """The queue the cloudtasks transport sends a node of Cloud Tasks queue ``queue`` to."""
    from django_cloudtasks.transports.cloudtasks import CloudTasksTransport

    return CloudTasksTransport().queue_path(queue)


def test_the_queue_name_is_the_cloud_tasks_queue(cloud, memory):
    result = tasks.add.using(queue_name="emails").enqueue(1, 2)
    [dispatch] = memory.sent
    assert dispatch.queue == "emails"
    assert Node.objects.get(pk=result.id).queue == "emails"
    assert tasks.add.get_result(result.id).task.queue_name == "emails"
    assert cloud_tasks_queue_path("emails") == EMAILS


def test_the_default_queue_is_the_configured_cloud_tasks_queue(cloud, memory):
    result = tasks.add.enqueue(1, 2)
    assert memory.sent[0].queue == ""
    assert tasks.add.get_result(result.id).task.queue_name == "default"
    assert cloud_tasks_queue_path("") == QUEUE


def test_queues_default_to_the_cloud_tasks_queues_of_the_settings(settings, memory):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "QUEUE": "main", "QUEUES": {"bulk": {}}}
    use_backend(settings)
    for queue in ("default", "main", "bulk"):
        tasks.add.using(queue_name=queue)
    with pytest.raises(InvalidTask) as caught:
        tasks.add.using(queue_name="elsewhere")
    message = str(caught.value)
    assert "'elsewhere' is not valid for backend 'default'" in message
    assert "bulk, default, main" in message
    assert "add it to CLOUDTASKS['QUEUES']" in message
    assert "cloudtasks_queues" in message


def test_a_queue_outside_the_backends_own_queues_points_to_them(settings, memory):
    use_backend(settings, QUEUES=["default", "emails"])
    with pytest.raises(InvalidTask, match=r"add it to the QUEUES of TASKS\['default'\]"):
        tasks.add.using(queue_name="bulk")


def test_a_running_task_reports_running(cloud, memory):
    result = tasks.add.enqueue(1, 2)
    Node.objects.filter(pk=result.id).update(state=State.STARTED, attempts=1)
    assert tasks.add.get_result(result.id).status == TaskResultStatus.RUNNING


def test_a_revoked_task_is_failed(cloud, memory):
    from django_cloudtasks.results import AsyncResult

    result = tasks.add.enqueue(1, 2)
    AsyncResult(result.id).revoke()
    fetched = tasks.add.get_result(result.id)
    assert fetched.status == TaskResultStatus.FAILED
    assert fetched.errors[0].exception_class_path.endswith("TaskRevoked")
    memory.drain()
    assert not Execution.objects.exists()


# -- what is refused ----------------------------------------------------------------------


def test_arguments_that_do_not_fit_are_refused_at_enqueue(cloud, memory):
    with pytest.raises(TypeError, match="y"):
        tasks.add.enqueue(1)
    with pytest.raises(TypeError):
        tasks.add.enqueue(1, object())
    assert not Node.objects.exists() and memory.sent == []


def test_numbers_json_cannot_carry_are_refused_at_enqueue(cloud, memory):
    with pytest.raises(TypeError, match=r"args\[1\] .* is inf"):
        tasks.add.enqueue(1, 1e400)
    with pytest.raises(TypeError, match=r"kwargs\['y'\] .* is nan"):
        tasks.add.enqueue(1, y=float("nan"))
    assert not Node.objects.exists() and memory.sent == []


def test_priorities_are_refused(cloud):
    assert not CloudTasksBackend.supports_priority
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=10)


def test_the_backend_declares_what_it_supports(cloud):
    assert cloud.supports_defer and cloud.supports_get_result and cloud.supports_async_task


def test_unknown_result_ids_do_not_exist(cloud, memory):
    from tests.testapp.tasks import add as engine_add

    engine_node = engine_add.delay(1, 2).id
    for result_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000", engine_node):
        with pytest.raises(TaskResultDoesNotExist):
            cloud.get_result(result_id)


def test_a_result_of_another_task_is_a_mismatch(cloud, eager):
    result = tasks.add.enqueue(1, 2)
    with pytest.raises(backends_exceptions.TaskResultMismatch):
        tasks.stamp.get_result(result.id)


# -- registration -------------------------------------------------------------------------


def test_a_task_is_registered_when_decorated_for_this_backend(cloud):
    decorated = django_tasks_api.task(tasks.undecorated)
    name = registry_name(decorated)
    assert name == "django.tasks:tests.testapp.django_tasks.undecorated"
    assert name in registry


def test_a_server_that_never_imported_a_task_resolves_it(cloud):
    name = registry_name(tasks.stamp)
    registry.unregister(name)
    backends._tasks.pop(name, None)
    assert ensure_registered(name) == tasks.stamp
    assert name in registry


@pytest.mark.parametrize(
    "name",
    [
        "django.tasks:os.system",  # not an installed app
        "django.tasks:tests.testapp.django_tasks._record",  # not a Django task
        "django.tasks:tests.testapp.nowhere.thing",  # no such module
        "tests.testapp.django_tasks.add",  # not a Django task name
    ],
)
def test_only_django_tasks_of_installed_apps_are_resolved(cloud, name):
    assert ensure_registered(name) is None


def test_the_backend_needs_the_app_installed(cloud, monkeypatch):
    from django.apps import apps

    assert cloud.check() == []
    monkeypatch.setattr(apps, "is_installed", lambda name: False)
    [error] = cloud.check()
    assert error.id == "django_cloudtasks.E020"


def test_without_django_tasks_the_backend_is_improperly_configured(monkeypatch):
    for module in ("django.tasks", "django_tasks"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "django_cloudtasks.backends")
    with pytest.raises(ImproperlyConfigured, match="django-tasks"):
        importlib.import_module("django_cloudtasks.backends")
    monkeypatch.undo()
    assert sys.modules["django_cloudtasks.backends"] is backends


# -- end to end: the emulator and a real HTTP server --------------------------------------


@pytest.fixture
def live_emulator(serve_emulator, cloud):
    """The emulator delivering to the live server, with the ``emails`` queue as well."""
    return serve_emulator(queues=("default", "emails"))


def wait_finished(task, result_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = task.get_result(result_id)
        if result.is_finished:
            return result
        time.sleep(0.1)
    raise AssertionError(f"task result {result_id} did not finish in {timeout}s")


@pytest.mark.e2e
def test_an_enqueued_task_runs_over_http(live_emulator, signals_seen):
    result = tasks.add.enqueue(20, 22)
    finished = wait_finished(tasks.add, result.id)
    assert finished.status == TaskResultStatus.SUCCESSFUL
    assert finished.return_value == 42
    assert live_emulator.wait_until_idle(timeout=10)
    [run] = [r for r in live_emulator.history if r.succeeded]
    assert run.url.endswith("/cloudtasks/run/django.tasks:tests.testapp.django_tasks.add/")
    assert [(s[0], s[1]) for s in signals_seen] == [
        ("enqueued", "READY"),
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]


@pytest.mark.e2e
def test_a_deferred_task_runs_over_http_after_its_time(live_emulator):
    run_after = timezone.now() + timedelta(seconds=2)
    result = tasks.stamp.using(run_after=run_after).enqueue()
    assert tasks.stamp.get_result(result.id).status == TaskResultStatus.READY
    finished = wait_finished(tasks.stamp, result.id)
    assert finished.status == TaskResultStatus.SUCCESSFUL
    ran_at = Execution.objects.get(task="django.stamp").created
    assert ran_at >= run_after
    assert finished.started_at >= run_after


@pytest.mark.e2e
def test_a_task_on_another_queue_runs_on_that_cloud_tasks_queue(live_emulator):
    result = tasks.add.using(queue_name="emails").enqueue(1, 1)
    assert wait_finished(tasks.add, result.id).return_value == 2
    assert live_emulator.wait_until_idle(timeout=10)
    [run] = [r for r in live_emulator.history if r.succeeded]
    assert run.queue_name == EMAILS
    assert run.task_name.startswith(EMAILS + "/tasks/")


@pytest.mark.e2e
def test_a_failing_task_is_failed_over_http(live_emulator):
    result = tasks.explode.enqueue("over http")
    finished = wait_finished(tasks.explode, result.id)
    assert finished.status == TaskResultStatus.FAILED
    assert finished.errors[0].exception_class_path == "builtins.ValueError"


def test_aenqueue_and_aget_result_work_from_async_code(cloud, eager):
    from asgiref.sync import async_to_sync

    result = async_to_sync(tasks.add.aenqueue)(3, 4)
    assert result.return_value == 7
    assert async_to_sync(tasks.add.aget_result)(result.id).return_value == 7


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def queries_of(func):
    """Statements run, leaving out transaction control (SQLite logs BEGIN)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        func()
    return len([q for q in captured if not q["sql"].startswith(TRANSACTION_CONTROL)])


def test_enqueue_costs_what_persisting_an_engine_task_costs(cloud, memory):
    from tests.testapp.tasks import quiet_add as engine_quiet_add

    engine_cost = queries_of(lambda: engine_quiet_add.delay(1, 2))
    assert queries_of(lambda: tasks.quiet_add.enqueue(1, 2)) == engine_cost


def test_a_delivery_costs_one_read_per_signal_more_than_an_engine_task(cloud, memory):
    from tests.testapp.tasks import quiet_add as engine_quiet_add

    engine_quiet_add.delay(1, 2)
    engine_cost = queries_of(memory.drain)
    result = tasks.quiet_add.enqueue(1, 2)
    assert queries_of(memory.drain) == engine_cost + 2  # task_started, task_finished
    assert queries_of(lambda: tasks.quiet_add.get_result(result.id)) == 1
