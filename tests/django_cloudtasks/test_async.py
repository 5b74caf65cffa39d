"""``async def`` tasks: called directly, applied, eager, memory, over WSGI and under ASGI."""

from __future__ import annotations

import inspect
import json
import time

import pytest
import requests
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext

from django_cloudtasks import chain, group, task
from django_cloudtasks.constants import State
from django_cloudtasks.exceptions import SoftTimeLimitExceeded, TimeoutError
from django_cloudtasks.models import Node
from django_cloudtasks.registry import registry
from django_cloudtasks.results import AsyncResult
from tests.django_cloudtasks.conftest import ASGI_LOOP_THREAD
from tests.django_cloudtasks.test_views import TOKEN
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def run_async(coroutine_function, *args, **kwargs):
    """Run ``coroutine_function`` as async code does, from this test's thread."""
    return async_to_sync(coroutine_function)(*args, **kwargs)


# -- in process ---------------------------------------------------------------------------


def test_an_async_task_called_directly_returns_a_coroutine_to_await():
    assert inspect.iscoroutinefunction(tasks.aadd)
    coroutine = tasks.aadd(1, 2)
    assert inspect.iscoroutine(coroutine)
    coroutine.close()
    assert run_async(tasks.aadd, 1, 2) == 3  # awaits tasks.aadd(1, 2)
    assert Execution.objects.get().task == "aadd"


def test_apply_awaits_an_async_task_in_process():
    result = tasks.aadd.apply((2, 3))
    assert (result.state, result.get()) == ("SUCCESS", 5)
    assert not Node.objects.exists()


def test_apply_keeps_an_async_tasks_exception():
    result = tasks.afail.apply((7,))
    assert result.failed()
    with pytest.raises(ValueError, match="async failing with 7"):
        result.get()


def test_async_and_plain_tasks_chain_under_the_in_process_transports(transport):
    result = (tasks.aadd.s(1, 2) | tasks.add.s(3) | tasks.aadd.s(4)).delay()
    if transport == "memory":
        from django_cloudtasks.transports import get_transport

        get_transport().drain()
    assert result.get(timeout=5) == 10
    assert [e.task for e in Execution.objects.order_by("id")] == ["aadd", "add", "aadd"]


def test_an_async_tasks_exception_fails_its_node(eager):
    result = tasks.afail.delay(3)
    assert result.state == State.FAILURE
    with pytest.raises(ValueError, match="async failing with 3"):
        result.get(timeout=1)


def test_a_bound_async_task_retries_reports_progress_and_checks_revocation(memory):
    result = tasks.aretry_once.delay(9)
    memory.drain()
    assert result.get(timeout=1) == {"x": 9, "retries": 1, "revoked": False}
    assert Node.objects.get(pk=result.id).retries == 1


def test_an_async_task_over_its_soft_time_limit_is_cancelled_and_fails(eager):
    result = tasks.aslow.delay(30)
    with pytest.raises(SoftTimeLimitExceeded, match=r"0\.2s"):
        result.get(timeout=1)
    assert Execution.objects.get().task == "aslow-cleanup"  # its finally block ran


def test_an_async_task_runs_its_coroutines_concurrently(eager):
    assert tasks.await_gather.delay(20).get(timeout=5) == 20


# -- async results and enqueueing ---------------------------------------------------------


def test_adelay_and_the_async_result_methods(memory):
    async def scenario():
        result = await tasks.aadd.adelay(2, 3)
        before = (await result.astate(), await result.aready())
        await sync_to_async(memory.drain)()  # the deliveries, as a worker would make them
        return (
            before,
            await result.aget(timeout=5),
            await result.astate(),
            await result.aready(),
            await result.asuccessful(),
            await result.afailed(),
            await result.aresult(),
        )

    before, value, state, ready, successful, failed, stored = run_async(scenario)
    assert before == (State.PENDING, False)
    assert (value, state, ready, successful, failed, stored) == (5, "SUCCESS", True, True, False, 5)


def test_aapply_async_of_a_canvas_and_the_group_results_aget(memory):
    async def scenario():
        result = await group(tasks.aadd.si(i, i) for i in range(3)).aapply_async()
        await sync_to_async(memory.drain)()
        return await result.aget(timeout=5), await result.acompleted_count()

    assert run_async(scenario) == ([0, 2, 4], 3)


def test_aget_raises_the_tasks_error_and_arevoke_revokes(memory):
    async def scenario():
        failing = await tasks.afail.adelay(1)
        pending = await tasks.aadd.aapply_async((1, 1), countdown=60)
        revoked = await pending.arevoke()
        await sync_to_async(memory.drain)()
        with pytest.raises(ValueError, match="async failing with 1"):
            await failing.aget(timeout=5)
        return revoked, await pending.astate()

    revoked, state = run_async(scenario)
    assert state == State.REVOKED and len(revoked) == 1


def test_aget_times_out_saying_what_the_node_waits_on(memory):
    async def scenario():
        result = await tasks.aadd.adelay(1, 1)
        with pytest.raises(TimeoutError) as caught:
            await result.aget(timeout=0.05, interval=0.01)
        return str(caught.value)

    message = run_async(scenario)
    assert "timed out after 0.05s" in message
    assert "QUEUED" in message and "drain()" in message


def test_aget_inside_a_task_refuses_to_wait(memory):
    other = AsyncResult(tasks.add.delay(1, 1).id)

    @task(name="test_async_waits_inside")
    async def waits_inside():
        return await other.aget(timeout=1)

    try:
        result = waits_inside.delay()
        memory.drain()
        assert result.state == State.FAILURE
        error = Node.objects.get(pk=result.id).error_message
        assert "Never call result.get() within a task" in error
    finally:
        registry.unregister("test_async_waits_inside")


# -- the run endpoint ---------------------------------------------------------------------


def _deliver(memory):
    dispatch = memory.take()
    return f"/cloudtasks/run/{dispatch.task_name}/", json.dumps(dispatch.body())


def test_the_async_run_view_answers_under_django_s_wsgi_handler(client, memory):
    result = tasks.aadd.delay(20, 22)
    url, body = _deliver(memory)
    response = client.post(url, body, content_type="application/json", headers=TOKEN)
    assert response.status_code == 200
    assert response.json() == {"state": "SUCCESS"}
    assert result.get(timeout=0) == 42


def test_the_async_run_view_answers_under_django_s_asgi_handler(memory):
    result = tasks.aadd.delay(1, 2)
    url, body = _deliver(memory)

    async def post():
        return await AsyncClient().post(url, body, content_type="application/json", headers=TOKEN)

    response = run_async(post)
    assert response.status_code == 200
    assert result.get(timeout=0) == 3


def test_the_async_run_view_refuses_missing_credentials_and_bad_bodies(client, memory):
    tasks.aadd.delay(1, 2)
    url, body = _deliver(memory)
    assert client.post(url, body, content_type="application/json").status_code == 401
    assert client.get(url, headers=TOKEN).status_code == 405
    bad = client.post(url, "{", content_type="application/json", headers=TOKEN)
    assert (bad.status_code, bad.json()) == (400, {"error": "body is not valid JSON"})
    missing = json.dumps({"node": "00000000-0000-0000-0000-000000000000"})
    gone = client.post(url, missing, content_type="application/json", headers=TOKEN)
    assert gone.status_code == 404


def test_a_duplicate_delivery_to_the_async_view_runs_the_task_once(client, memory):
    tasks.aadd.delay(5, 5)
    url, body = _deliver(memory)
    for _ in range(2):
        response = client.post(url, body, content_type="application/json", headers=TOKEN)
        assert response.status_code == 200
    assert Execution.objects.filter(task="aadd").count() == 1


def test_the_async_run_view_costs_the_queries_of_the_plain_one(client, memory):
    def post_one(task):
        task.delay(1, 2)
        url, body = _deliver(memory)
        with CaptureQueriesContext(connection) as queries:
            response = client.post(url, body, content_type="application/json", headers=TOKEN)
            assert response.status_code == 200
        return len(queries)

    # Each task records its run with one INSERT; the delivery itself is the same.
    assert post_one(tasks.aadd) == post_one(tasks.add)


def test_the_async_run_view_steals_the_queued_members_of_its_group(client, memory, settings):
    from django_cloudtasks.transports import get_transport, reset_transport

    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": 5}
    reset_transport()
    memory = get_transport()
    result = group(tasks.aadd.si(i, i) for i in range(4)).apply_async()
    url, body = _deliver(memory)
    response = client.post(url, body, content_type="application/json", headers=TOKEN)
    assert response.status_code == 200
    # one delivery ran the whole group; the others' Cloud Tasks find them finished
    assert result.get(timeout=0) == [0, 2, 4, 6]
    assert Execution.objects.filter(task="aadd").count() == 4
    assert len(memory.pending) == 3


# -- end to end: the emulator delivering to a real server --------------------------------


@pytest.mark.e2e
def test_async_tasks_run_under_a_wsgi_server(live_emulator):
    result = chain(tasks.aadd.s(1, 2), tasks.add.s(3), tasks.aadd.s(4)).delay()
    assert result.get(timeout=30) == 10


@pytest.mark.e2e
def test_async_tasks_run_on_the_asgi_servers_event_loop(serve_emulator, asgi_server):
    serve_emulator(base_url=asgi_server)
    on_loop = tasks.athread.delay()
    in_thread = tasks.sthread.delay()
    assert on_loop.get(timeout=30) == ASGI_LOOP_THREAD
    assert in_thread.get(timeout=30) != ASGI_LOOP_THREAD
    result = chain(tasks.aadd.s(1, 2), tasks.add.s(3), tasks.aadd.s(4)).delay()
    assert result.get(timeout=30) == 10


@pytest.mark.e2e
def test_async_tasks_wait_side_by_side_under_an_asgi_server(serve_emulator, asgi_server):
    serve_emulator(base_url=asgi_server)
    waiting = group(tasks.await_event.si(i) for i in range(8)).delay()
    for _ in range(600):
        if Execution.objects.filter(task="await_event").count() == 8:
            break
        time.sleep(0.05)
    assert Execution.objects.filter(task="await_event").count() == 8  # all started
    for i in range(8):
        Execution.objects.create(task="release_event", value=i)
    assert waiting.get(timeout=30) == list(range(8))


@pytest.mark.e2e
def test_an_unknown_task_under_the_asgi_server_answers_404_with_the_hint(asgi_server):
    response = requests.post(
        f"{asgi_server}/cloudtasks/run/no_such_async_task/", json={}, headers=TOKEN, timeout=10
    )
    assert response.status_code == 404
    assert "tasks.py" in response.json()["error"]
