"""The HTTP endpoints: run, tracker, revoke and sweep, with their authentication."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from django_cloudtasks import signals, task
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.models import Node, Workflow
from tests.testapp.models import Execution
from tests.testapp.tasks import add, identity

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = {"Authorization": "Bearer test-token"}
SOME_ID = str(uuid.UUID(int=1))


@task(bind=True)
def views_test_headers(self):
    """Returns the request headers the task was given."""
    return dict(self.request.headers)


def post(client: Client, url: str, body: object, headers: dict | None = None, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        url,
        data=data,
        content_type="application/json",
        headers=TOKEN if headers is None else headers,
        **extra,
    )


def run_url(task_name: str) -> str:
    return f"/cloudtasks/run/{task_name}/"


def start_chain(memory):
    """``add(1, 2) | add(3)``: returns the first node, QUEUED and sent."""
    result = (add.s(1, 2) | add.s(3)).apply_async()
    assert len(memory.sent) == 1
    first = Node.objects.get(pk=memory.sent[0].node_id)
    assert first.state == State.QUEUED
    assert first.workflow_id == uuid.UUID(result.workflow_id)
    return first


def second_of(first: Node) -> Node:
    return Node.objects.get(workflow_id=first.workflow_id, index__in=first.children)


def assert_nothing_ran(node: Node, memory, sent_before: int = 1) -> None:
    node.refresh_from_db()
    assert node.state == State.QUEUED
    assert node.attempts == 0
    assert node.result is None
    assert Execution.objects.count() == 0
    assert len(memory.sent) == sent_before


# -- run -------------------------------------------------------------------------------


def test_run_executes_the_node_records_its_result_and_enqueues_its_successor(client, memory):
    first = start_chain(memory)

    response = post(client, run_url("add"), memory.sent[0].body())

    assert response.status_code == 200
    assert response.json() == {"state": "SUCCESS"}
    first.refresh_from_db()
    assert first.state == State.SUCCESS
    assert first.result == 3
    assert len(memory.sent) == 2
    assert memory.sent[1].task_name == "add"
    successor = second_of(first)
    assert memory.sent[1].node_id == str(successor.pk)
    assert successor.state == State.QUEUED
    assert successor.input == 3


def test_run_then_the_successor_finishes_the_workflow(client, memory):
    first = start_chain(memory)
    post(client, run_url("add"), memory.sent[0].body())

    response = post(client, run_url("add"), memory.sent[1].body())

    assert response.status_code == 200
    assert second_of(first).result == 6
    assert Workflow.objects.get(pk=first.workflow_id).status == WorkflowStatus.SUCCESS


def test_a_repeated_delivery_of_a_finished_node_does_not_run_it_again(client, memory):
    start_chain(memory)
    body = memory.sent[0].body()
    post(client, run_url("add"), body)

    again = post(client, run_url("add"), body)

    assert again.status_code == 200
    assert again.json() == {"state": "SUCCESS", "detail": "already finished"}
    assert Execution.objects.filter(task="add").count() == 1
    assert len(memory.sent) == 2


def test_run_works_with_a_body_that_only_names_the_node(client, memory):
    first = start_chain(memory)

    response = post(client, run_url("add"), {"node": str(first.pk)})

    assert response.status_code == 200
    assert Execution.objects.count() == 1


def test_run_without_a_token_answers_401_and_runs_nothing(client, memory):
    first = start_chain(memory)

    response = post(client, run_url("add"), memory.sent[0].body(), headers={})

    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_ran(first, memory)


def test_run_with_a_wrong_token_answers_403_and_runs_nothing(client, memory):
    first = start_chain(memory)

    response = post(
        client, run_url("add"), memory.sent[0].body(), headers={"Authorization": "Bearer nope"}
    )

    assert response.status_code == 403
    assert response.json() == {"error": "invalid credentials"}
    assert_nothing_ran(first, memory)


@pytest.mark.parametrize(
    "authorization",
    ["Basic dGVzdC10b2tlbg==", "Basic test-token", "test-token", "Bearer", "Bearer   "],
)
def test_run_refuses_other_schemes_and_empty_bearer_tokens(client, memory, authorization):
    first = start_chain(memory)

    response = post(
        client, run_url("add"), memory.sent[0].body(), headers={"Authorization": authorization}
    )

    assert response.status_code == 401
    assert response.json()["error"].startswith("missing credentials")
    assert_nothing_ran(first, memory)


def test_a_token_that_only_starts_like_the_right_one_is_refused(client, memory):
    first = start_chain(memory)

    for token in ("test-token-and-more", "test-toke", "TEST-TOKEN"):
        response = post(
            client,
            run_url("add"),
            memory.sent[0].body(),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 403
    assert_nothing_ran(first, memory)


def test_the_bearer_scheme_is_case_insensitive(client, memory):
    start_chain(memory)

    response = post(
        client,
        run_url("add"),
        memory.sent[0].body(),
        headers={"Authorization": "bearer test-token"},
    )

    assert response.status_code == 200


def test_without_a_configured_token_every_request_is_refused(client, memory, settings, monkeypatch):
    first = start_chain(memory)
    monkeypatch.delenv("TASKAPP_AUTH_TOKEN", raising=False)
    settings.CLOUDTASKS = {k: v for k, v in settings.CLOUDTASKS.items() if k != "AUTH_TOKEN"}
    body = memory.sent[0].body()

    for headers in (TOKEN, {"Authorization": "Bearer "}, {}):
        response = post(client, run_url("add"), body, headers=headers)
        assert response.status_code == 403
        assert "not configured" in response.json()["error"]
    assert_nothing_ran(first, memory)


def test_an_empty_configured_token_accepts_nothing(client, memory, settings):
    first = start_chain(memory)
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "AUTH_TOKEN": ""}

    response = post(client, run_url("add"), {"node": str(first.pk)}, headers=TOKEN)

    assert response.status_code == 403
    assert Execution.objects.count() == 0


def test_run_of_an_unknown_task_answers_404_with_where_tasks_must_live(client, memory, caplog):
    first = start_chain(memory)

    with caplog.at_level(logging.WARNING, logger="django_cloudtasks.views"):
        response = post(client, run_url("no_such_task"), memory.sent[0].body())

    assert response.status_code == 404
    error = response.json()["error"]
    assert error.startswith("unknown task 'no_such_task'; ")
    assert "tasks.py module of an installed app" in error
    assert any(
        "no_such_task" in r.getMessage() and "tasks.py" in r.getMessage() for r in caplog.records
    )
    assert_nothing_ran(first, memory)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b"", "body must be a JSON object"),
        ("[1, 2]", "body must be a JSON object"),
        ('"a string"', "body must be a JSON object"),
        ("{}", "'node' must be an id (UUID), got None"),
        ('{"node": "not-a-uuid"}', "'node' must be an id (UUID), got 'not-a-uuid'"),
        ('{"node": 12}', "'node' must be an id (UUID), got 12"),
        ('{"node": ["x"]}', "'node' must be an id (UUID), got ['x']"),
        (
            json.dumps({"node": SOME_ID, "retry": "1"}),
            "'retry' must be an integer from 0 to 2147483647, got '1'",
        ),
        (
            json.dumps({"node": SOME_ID, "retry": -1}),
            "'retry' must be an integer from 0 to 2147483647, got -1",
        ),
        (
            json.dumps({"node": SOME_ID, "retry": True}),
            "'retry' must be an integer from 0 to 2147483647, got True",
        ),
    ],
)
def test_run_with_a_malformed_body_answers_400(client, memory, body, message):
    first = start_chain(memory)

    response = post(client, run_url("add"), body)

    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert_nothing_ran(first, memory)


def test_run_of_a_node_that_does_not_exist_answers_404(client, memory):
    missing = uuid.uuid4()

    response = post(client, run_url("add"), {"node": str(missing)})

    assert response.status_code == 404
    assert response.json() == {"error": f"no node has the id {missing}"}
    assert Execution.objects.count() == 0


def test_run_under_another_task_name_than_the_nodes_answers_400(client, memory):
    first = start_chain(memory)

    response = post(client, run_url("identity"), memory.sent[0].body())

    assert response.status_code == 400
    assert response.json() == {"error": f"node {first.pk} runs 'add', not 'identity'"}
    assert_nothing_ran(first, memory)


def test_run_of_a_node_still_waiting_on_its_parent_answers_409_so_it_is_retried(client, memory):
    first = start_chain(memory)
    successor = second_of(first)

    response = post(client, run_url("add"), {"node": str(successor.pk), "retry": 0})

    assert response.status_code == 409
    assert response.json()["state"] == "PENDING"
    successor.refresh_from_db()
    assert (successor.state, successor.attempts) == (State.PENDING, 0)
    assert Execution.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_run_answers_405_to_other_methods_than_post(client, memory, method):
    first = start_chain(memory)

    response = getattr(client, method)(run_url("add"), headers=TOKEN)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json() == {"error": f"method {method.upper()} is not allowed here"}
    assert_nothing_ran(first, memory)


def test_run_with_a_body_over_the_limit_answers_413(client, memory, settings):
    first = start_chain(memory)
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "MAX_BODY_BYTES": 200}
    body = {**memory.sent[0].body(), "padding": "x" * 200}

    response = post(client, run_url("add"), body)

    assert response.status_code == 413
    assert "over the limit of 200" in response.json()["error"]
    assert_nothing_ran(first, memory)


def test_run_with_a_content_length_that_is_not_a_number_answers_400(client, memory):
    first = start_chain(memory)

    response = post(client, run_url("add"), memory.sent[0].body(), CONTENT_LENGTH="lots")

    assert response.status_code == 400
    assert response.json() == {"error": "the Content-Length header is not a number"}
    assert_nothing_ran(first, memory)


def test_wrong_arguments_are_refused_up_front_by_apply_async(memory):
    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        add.s(1).apply_async()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        add.s(1, 2, z=3).apply_async()
    assert Node.objects.count() == 0
    assert memory.sent == []


def test_wrong_arguments_in_a_stored_node_give_a_terminal_failure(client, memory):
    first = start_chain(memory)
    Node.objects.filter(pk=first.pk).update(kwargs={"z": 3})

    response = post(client, run_url("add"), memory.sent[0].body())

    assert response.status_code == 200
    data = response.json()
    assert data["state"] == "FAILURE"
    assert "wrong arguments for task 'add'" in data["detail"]
    assert "unexpected keyword argument 'z'" in data["detail"]
    first.refresh_from_db()
    assert first.state == State.FAILURE
    assert first.error_type == "TypeError"
    assert "unexpected keyword argument 'z'" in first.error_message
    assert first.retries == 0
    assert second_of(first).state == State.FAILURE
    assert Workflow.objects.get(pk=first.workflow_id).status == WorkflowStatus.FAILURE
    assert Execution.objects.count() == 0
    assert len(memory.sent) == 1  # no retry, no successor

    again = post(client, run_url("add"), memory.sent[0].body())
    assert again.json() == {"state": "FAILURE", "detail": "already finished"}


def test_the_task_never_sees_the_credentials_of_the_request(client, memory):
    views_test_headers.s().apply_async()

    response = post(
        client,
        run_url("views_test_headers"),
        memory.sent[0].body(),
        headers={**TOKEN, "X-CloudTasks-TaskName": "abc", "Cookie": "sessionid=secret"},
    )

    assert response.status_code == 200
    seen = {k.lower(): v for k, v in Node.objects.get().result.items()}
    assert seen["x-cloudtasks-taskname"] == "abc"
    assert "authorization" not in seen
    assert "cookie" not in seen


@task(bind=True)
def views_test_counts(self):
    """Returns the Cloud Tasks delivery counts the task sees."""
    return [self.request.cloud_tasks_retry_count, self.request.cloud_tasks_execution_count]


@pytest.mark.parametrize(
    ("retry_count", "execution_count", "seen"),
    [("3", "2", [3, 2]), (str(2**70), "-1", [0, 0]), ("three", "", [0, 0])],
)
def test_the_task_sees_the_delivery_counts_and_zero_for_headers_that_are_no_count(
    client, memory, retry_count, execution_count, seen
):
    views_test_counts.s().apply_async()
    headers = {
        **TOKEN,
        "X-CloudTasks-TaskRetryCount": retry_count,
        "X-CloudTasks-TaskExecutionCount": execution_count,
    }

    response = post(client, run_url("views_test_counts"), memory.sent[0].body(), headers=headers)

    assert response.json() == {"state": "SUCCESS"}
    assert Node.objects.get().result == seen


def test_headers_that_carry_credentials_never_reach_the_task(client, memory):
    views_test_headers.s().apply_async()
    credentials = {
        "X-Serverless-Authorization": "Bearer id-token",
        "X-Goog-Iap-Jwt-Assertion": "eyJ.jwt.sig",
        "X-Api-Key": "k-123",
        "X-Auth-Token": "t-123",
        "X-Upstream-Access-Token": "t-456",
        "X-Signing-Key": "s-789",
        "X-Session-Cookie": "c-1",
        "X-Client-Secret": "shh",
    }

    response = post(
        client,
        run_url("views_test_headers"),
        memory.sent[0].body(),
        headers={**TOKEN, **credentials, "X-CloudTasks-TaskRetryCount": "2"},
    )

    assert response.status_code == 200
    seen = {k.lower() for k in Node.objects.get().result}
    assert "x-cloudtasks-taskretrycount" in seen
    assert seen.isdisjoint(name.lower() for name in credentials)


def test_run_executes_the_task_outside_a_transaction_even_with_atomic_requests(
    client, memory, monkeypatch
):
    start_chain(memory)
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    in_transaction = []

    def record(**kwargs):
        in_transaction.append(connection.in_atomic_block)

    signals.node_started.connect(record, weak=False)
    try:
        response = post(client, run_url("add"), memory.sent[0].body())
    finally:
        signals.node_started.disconnect(record)

    assert response.status_code == 200
    assert in_transaction == [False]


# -- tracker ---------------------------------------------------------------------------

TRACKER = "/cloudtasks/tracker/"


def test_a_tracked_success_advances_the_workflow(client, memory):
    first = start_chain(memory)

    response = post(client, TRACKER, {"node": str(first.pk), "status": "success", "result": 3})

    assert response.status_code == 200
    assert response.json() == {"state": "SUCCESS"}
    first.refresh_from_db()
    assert first.state == State.SUCCESS
    assert first.result == 3
    successor = second_of(first)
    assert successor.state == State.QUEUED
    assert successor.input == 3
    assert [d.node_id for d in memory.sent[1:]] == [str(successor.pk)]
    assert Execution.objects.count() == 0  # it ran elsewhere


def test_a_tracked_failure_fails_the_node_and_everything_downstream(client, memory):
    first = start_chain(memory)
    error = {"type": "ValueError", "message": "boom", "traceback": "Traceback..."}

    response = post(client, TRACKER, {"node": str(first.pk), "status": "failure", "error": error})

    assert response.status_code == 200
    assert response.json() == {"state": "FAILURE", "detail": "ValueError: boom"}
    first.refresh_from_db()
    assert (first.state, first.error_type, first.error_message) == ("FAILURE", "ValueError", "boom")
    assert second_of(first).state == State.FAILURE
    assert Workflow.objects.get(pk=first.workflow_id).status == WorkflowStatus.FAILURE
    assert len(memory.sent) == 1
    assert Execution.objects.count() == 0


def test_a_tracked_report_for_a_finished_node_changes_nothing(client, memory):
    first = start_chain(memory)
    post(client, TRACKER, {"node": str(first.pk), "status": "success", "result": 3})

    response = post(client, TRACKER, {"node": str(first.pk), "status": "failure", "error": {}})

    assert response.status_code == 200
    assert response.json() == {"state": "SUCCESS", "detail": "already finished"}
    first.refresh_from_db()
    assert (first.state, first.result) == (State.SUCCESS, 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"node": None, "status": "success"}, "'node' must be an id (UUID), got None"),
        ({"status": "done", "result": 3}, "'status' must be 'success' or 'failure'"),
        ({"result": 3}, "'status' must be 'success' or 'failure'"),
        ({"status": "failure", "error": "boom"}, "'error' must be an object with type and message"),
        (
            {"status": "failure", "error": ["boom"]},
            "'error' must be an object with type and message",
        ),
    ],
)
def test_a_malformed_tracker_report_answers_400(client, memory, body, message):
    first = start_chain(memory)

    response = post(client, TRACKER, {"node": str(first.pk), **body})

    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert_nothing_ran(first, memory)


def test_a_tracker_report_for_an_unknown_node_answers_404(client, memory):
    missing = uuid.uuid4()

    response = post(client, TRACKER, {"node": str(missing), "status": "success", "result": 1})

    assert response.status_code == 404
    assert response.json() == {"error": f"no node has the id {missing}"}


def test_a_tracker_report_for_a_node_still_waiting_on_its_parent_answers_409(client, memory):
    first = start_chain(memory)
    successor = second_of(first)

    response = post(client, TRACKER, {"node": str(successor.pk), "status": "success", "result": 1})

    assert response.status_code == 409
    assert response.json() == {"state": "PENDING", "detail": "the node is not ready"}
    successor.refresh_from_db()
    assert (successor.state, successor.attempts, successor.result) == (State.PENDING, 0, None)


def test_a_tracker_report_settles_the_attempt_a_delivery_holds_under_its_lease(client, memory):
    from django_cloudtasks import engine

    first = start_chain(memory)
    running = engine.claim(first.pk, "add", 0, timezone.now())
    assert running is not None and running.attempts == 1

    response = post(client, TRACKER, {"node": str(first.pk), "status": "success", "result": 3})

    assert response.json() == {"state": "SUCCESS"}
    first.refresh_from_db()
    assert (first.state, first.attempts, first.result) == (State.SUCCESS, 1, 3)
    assert [d.node_id for d in memory.sent[1:]] == [str(second_of(first).pk)]


def test_the_tracker_needs_credentials(client, memory):
    first = start_chain(memory)
    body = {"node": str(first.pk), "status": "success", "result": 3}

    assert post(client, TRACKER, body, headers={}).status_code == 401
    assert post(client, TRACKER, body, headers={"Authorization": "Bearer x"}).status_code == 403
    assert client.get(TRACKER, headers=TOKEN).status_code == 405
    assert_nothing_ran(first, memory)


# -- revoke ----------------------------------------------------------------------------

REVOKE = "/cloudtasks/revoke/"


def revoke(client: Client, method: str, query: str, headers: dict | None = None):
    call = client.get if method == "GET" else client.post
    return call(f"{REVOKE}?{query}", headers=TOKEN if headers is None else headers)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_revoking_a_task_revokes_it_and_what_follows_and_deletes_its_cloud_task(
    client, memory, method
):
    first = start_chain(memory)
    successor = second_of(first)

    response = revoke(client, method, f"task={first.pk}")

    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert sorted(response.json()["revoked"]) == sorted([str(first.pk), str(successor.pk)])
    assert set(Node.objects.values_list("state", flat=True)) == {State.REVOKED}
    assert [d.cloud_task_id for d in memory.cancelled] == [first.cloud_task_id]
    assert Workflow.objects.get(pk=first.workflow_id).status == WorkflowStatus.REVOKED

    delivered = post(client, run_url("add"), memory.sent[0].body())
    assert delivered.json() == {"state": "REVOKED", "detail": "already finished"}
    assert Execution.objects.count() == 0


def test_a_post_may_name_what_to_revoke_in_form_fields(client, memory):
    first = start_chain(memory)
    successor = second_of(first)

    response = client.post(REVOKE, data={"task": str(first.pk)}, headers=TOKEN)

    assert response.status_code == 200
    assert sorted(response.json()["revoked"]) == sorted([str(first.pk), str(successor.pk)])
    assert set(Node.objects.values_list("state", flat=True)) == {State.REVOKED}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_revoking_a_chain_revokes_every_unfinished_node(client, memory, method):
    first = start_chain(memory)
    post(client, run_url("add"), memory.sent[0].body())
    successor = second_of(first)

    response = revoke(client, method, f"chain={first.workflow_id}")

    assert response.status_code == 200
    assert response.json() == {"revoked": [str(successor.pk)], "count": 1}
    first.refresh_from_db()
    successor.refresh_from_db()
    assert (first.state, successor.state) == (State.SUCCESS, State.REVOKED)
    assert [d.cloud_task_id for d in memory.cancelled] == [successor.cloud_task_id]
    assert Workflow.objects.get(pk=first.workflow_id).status == WorkflowStatus.REVOKED


def test_revoking_by_post_also_reads_a_form_body(client, memory):
    first = start_chain(memory)

    response = client.post(REVOKE, {"task": str(first.pk)}, headers=TOKEN)

    assert response.status_code == 200
    assert response.json()["count"] == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_revoking_unknown_ids_answers_404(client, memory, method):
    first = start_chain(memory)
    missing = uuid.uuid4()

    by_task = revoke(client, method, f"task={missing}")
    by_chain = revoke(client, method, f"chain={missing}")

    assert by_task.status_code == 404
    assert by_task.json() == {"error": f"no node has the id {missing}"}
    assert by_chain.status_code == 404
    assert by_chain.json() == {"error": f"no workflow has the id {missing}"}
    assert_nothing_ran(first, memory)
    assert memory.cancelled == []


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "pass exactly one of ?task=<node id> or ?chain=<workflow id>"),
        ("task=", "pass exactly one of ?task=<node id> or ?chain=<workflow id>"),
        ("task={id}&chain={wf}", "pass exactly one of ?task=<node id> or ?chain=<workflow id>"),
        ("task=nope", "'task' must be an id (UUID), got 'nope'"),
        ("chain=nope", "'chain' must be an id (UUID), got 'nope'"),
    ],
)
def test_revoking_with_bad_parameters_answers_400(client, memory, method, query, message):
    first = start_chain(memory)

    response = revoke(client, method, query.format(id=first.pk, wf=first.workflow_id))

    assert response.status_code == 400
    assert response.json() == {"error": message}
    assert_nothing_ran(first, memory)
    assert memory.cancelled == []


def test_revoking_needs_credentials(client, memory):
    first = start_chain(memory)

    assert revoke(client, "GET", f"task={first.pk}", headers={}).status_code == 401
    wrong = {"Authorization": "Bearer x"}
    assert revoke(client, "POST", f"chain={first.workflow_id}", headers=wrong).status_code == 403
    assert client.delete(f"{REVOKE}?task={first.pk}", headers=TOKEN).status_code == 405
    assert_nothing_ran(first, memory)
    assert memory.cancelled == []


# -- CSRF and sweep --------------------------------------------------------------------


def test_the_endpoints_need_no_csrf_token(memory):
    client = Client(enforce_csrf_checks=True)
    first = start_chain(memory)

    assert post(client, run_url("add"), memory.sent[0].body()).status_code == 200
    successor = second_of(first)
    tracked = post(client, TRACKER, {"node": str(successor.pk), "status": "success", "result": 6})
    assert tracked.status_code == 200
    assert post(client, "/cloudtasks/sweep/", {}).status_code == 200
    other = identity.s(1).apply_async()
    assert client.post(f"{REVOKE}?task={other.id}", headers=TOKEN).status_code == 200


def test_the_sweep_resends_stuck_nodes_and_answers_counts(client, memory):
    first = start_chain(memory)
    Node.objects.filter(pk=first.pk).update(ready_at=timezone.now() - timedelta(hours=1))
    memory.clear()

    response = client.post("/cloudtasks/sweep/", headers=TOKEN)

    assert response.status_code == 200
    assert response.json() == {
        "resent": 1,
        "unparked": 0,
        "parked": 0,
        "failed": 0,
        "slots_released": 0,
        "waiting_sent": 0,
        "purged_workflows": 0,
        "purged_nodes": 0,
    }
    assert [d.node_id for d in memory.sent] == [str(first.pk)]


def test_the_sweep_needs_credentials(client, memory):
    first = start_chain(memory)
    Node.objects.filter(pk=first.pk).update(ready_at=timezone.now() - timedelta(hours=1))
    memory.clear()

    assert client.post("/cloudtasks/sweep/").status_code == 401
    wrong = client.post("/cloudtasks/sweep/", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 403
    assert wrong.json() == {"error": "invalid credentials"}
    assert client.get("/cloudtasks/sweep/", headers=TOKEN).status_code == 405
    assert memory.sent == []


def _exempt_routes(patterns, prefix: str = "") -> list[str]:
    from django.urls import URLPattern, URLResolver

    found = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found += _exempt_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern) and getattr(pattern.callback, "csrf_exempt", False):
            found.append(prefix + str(pattern.pattern))
    return found


def test_only_the_token_authenticated_endpoints_are_csrf_exempt(memory):
    from django.urls import get_resolver

    exempt = _exempt_routes(get_resolver().url_patterns)

    assert sorted(exempt) == [
        "cloudtasks/revoke/",
        "cloudtasks/run/<cloudtasks_async_task:task_name>/",
        "cloudtasks/run/<str:task_name>/",
        "cloudtasks/schedule/<str:name>/",
        "cloudtasks/schedules/tick/",
        "cloudtasks/spawn/",
        "cloudtasks/sweep/",
        "cloudtasks/tracker/",
    ]
    client = Client(enforce_csrf_checks=True)
    for route in exempt:
        url = "/" + route.replace("<str:task_name>", "add").replace("<str:name>", "nightly")
        url = url.replace("<cloudtasks_async_task:task_name>", "aadd")
        assert client.post(url).status_code == 401, url


def test_other_views_of_the_site_keep_their_csrf_protection(memory):
    client = Client(enforce_csrf_checks=True)

    response = client.post("/admin/login/", {"username": "a", "password": "b"}, headers=TOKEN)

    assert response.status_code == 403
    assert b"CSRF" in response.content


@task(bind=True)
def views_test_retry_later(self):
    """Asks for a retry in ten minutes the first time, then returns its retry number."""
    if self.request.retries == 0:
        self.retry(countdown=600)
    return self.request.retries


def test_a_delivery_before_the_countdown_answers_409_and_runs_nothing(client, memory):
    from freezegun import freeze_time

    result = add.s(1, 2).apply_async(countdown=3600)
    body = memory.sent[0].body()

    response = post(client, run_url("add"), body)

    assert response.status_code == 409
    assert "not due until" in response.json()["detail"]
    assert Execution.objects.count() == 0
    assert Node.objects.get().state == State.SCHEDULED
    with freeze_time(timezone.now() + timedelta(seconds=3600)):
        assert post(client, run_url("add"), body).status_code == 200
    assert result.get(timeout=0) == 3


def test_a_delivery_a_moment_before_its_time_runs_it(client, memory):
    add.s(1, 2).apply_async(countdown=2)

    response = post(client, run_url("add"), memory.sent[0].body())

    assert response.json() == {"state": "SUCCESS"}


def test_a_delivery_of_an_earlier_retry_answers_200_and_runs_nothing(client, memory):
    views_test_retry_later.s().apply_async()
    first_body = memory.sent[0].body()
    post(client, run_url("views_test_retry_later"), first_body)

    again = post(client, run_url("views_test_retry_later"), first_body)

    assert again.status_code == 200
    assert again.json() == {"state": "RETRY", "detail": "stale delivery of retry 0"}
    node = Node.objects.get()
    assert (node.state, node.retries, node.attempts) == (State.RETRY, 1, 1)


def test_a_delivery_before_the_retry_backoff_answers_409(client, memory):
    from freezegun import freeze_time

    views_test_retry_later.s().apply_async()
    assert (
        post(client, run_url("views_test_retry_later"), memory.sent[0].body()).json()["state"]
        == "RETRY"
    )
    retry_body = memory.sent[-1].body()

    early = post(client, run_url("views_test_retry_later"), retry_body)

    assert early.status_code == 409
    assert Node.objects.get().state == State.RETRY
    with freeze_time(timezone.now() + timedelta(seconds=600)):
        late = post(client, run_url("views_test_retry_later"), retry_body)
    assert late.json() == {"state": "SUCCESS"}
    assert Node.objects.get().result == 1
