"""Bad input gets a clear error and changes nothing.

Where each case of the issue is tested (test_views.py has the basic ones):

* unknown task 404: ``test_run_of_an_unknown_task_answers_404`` (views) and
  :func:`test_a_name_that_is_not_registered_answers_404_and_imports_nothing` here;
* non-JSON or wrong-shape body 400: ``test_run_with_a_malformed_body_answers_400`` and
  ``test_a_malformed_tracker_report_answers_400`` (views), the table below for the
  tracker, revoke and bodies the database could not store;
* body over the size limit 413: ``test_run_with_a_body_over_the_limit_answers_413``
  (views) and the table below;
* unknown node 404, task name not the node's 400: views, plus the table below;
* wrong arguments a terminal FAILURE: views, and below with a retrying task;
* arguments too large refused by apply_async, unserializable ones a TypeError when the
  signature is built: below.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import sys
import uuid

import pytest
from django.test import Client

from canvas import Signature
from django_cloudtasks import task
from django_cloudtasks.constants import State, WorkflowStatus
from django_cloudtasks.manager import CloudChainManager
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry
from django_cloudtasks.views import UNKNOWN_TASK_HINT
from tests.django_cloudtasks.test_views import REVOKE, TOKEN, TRACKER, post, run_url, start_chain
from tests.testapp.models import Execution
from tests.testapp.tasks import add, fail_custom, identity

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 12_000  # MAX_BODY_BYTES for these tests


@task(autoretry_for=(Exception,), max_retries=5, default_retry_delay=0)
def bad_input_retrying(x, y):
    """Retries on any exception; wrong arguments must still fail it for good."""
    Execution.objects.create(task="bad_input_retrying", value=[x, y])
    return x + y


@task
def bad_input_unregistered_later(x):
    """Unregistered by a test after its node was stored."""
    return x


def snapshot() -> tuple[list, list, list]:
    """Every row the library and the test tasks write, to compare before and after."""
    return (
        list(Workflow.objects.order_by("pk").values()),
        list(Node.objects.order_by("pk").values()),
        list(Execution.objects.order_by("pk").values()),
    )


@pytest.fixture
def chain(settings, memory):
    """``add(1, 2) | add(3)`` sent, ``MAX_BODY_BYTES`` at :data:`LIMIT`; yields the first node.

    The settings change comes first: it replaces the memory transport.
    """
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "MAX_BODY_BYTES": LIMIT}
    from django_cloudtasks.transports import get_transport

    transport = get_transport()
    first = start_chain(transport)
    first.transport = transport  # type: ignore[attr-defined]
    return first


def expect_unchanged(client: Client, send, status: int, message: str, chain: Node) -> None:
    before = snapshot()
    sent, cancelled = len(chain.transport.sent), len(chain.transport.cancelled)

    response = send(client, chain)

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": message}
    assert snapshot() == before
    assert (len(chain.transport.sent), len(chain.transport.cancelled)) == (sent, cancelled)


def raw(url: str, body: bytes | str, content_type: str = "application/json", **extra):
    def send(client: Client, chain: Node):
        data = body.replace("NODE_ID", str(chain.pk)) if isinstance(body, str) else body
        return client.generic("POST", url, data, content_type=content_type, headers=TOKEN, **extra)

    return send


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def size_of(template: str) -> int:
    """The length of a body template once a node id is filled in."""
    return len(template.replace("NODE_ID", str(MISSING)).encode())


OVERSIZED_REPORT = '{"node": "NODE_ID", "status": "success", "result": "' + "x" * LIMIT + '"}'
OVERSIZED_FORM = "task=NODE_ID&pad=" + "x" * LIMIT


MISSING = uuid.UUID(int=7)
CASES = {
    # tracker bodies
    "tracker: not JSON": (raw(TRACKER, b"{nope"), 400, "body is not valid JSON"),
    "tracker: a list": (raw(TRACKER, b"[]"), 400, "body must be a JSON object"),
    "tracker: empty": (raw(TRACKER, b""), 400, "body must be a JSON object"),
    "tracker: NaN": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": NaN}'),
        400,
        "body contains NaN, which is not JSON and cannot be stored",
    ),
    "tracker: Infinity": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": -Infinity}'),
        400,
        "body contains -Infinity, which is not JSON and cannot be stored",
    ),
    "tracker: a number that overflows a float": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": 1e400}'),
        400,
        "body contains the number 1e400, too large for a float to store",
    ),
    "tracker: an overflowing number deep in the result": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": {"a": [1, -2.5E+999]}}'),
        400,
        "body contains the number -2.5E+999, too large for a float to store",
    ),
    "tracker: an overflowing number in an error": (
        raw(
            TRACKER,
            '{"node": "NODE_ID", "status": "failure", "error": {"message": "x", "code": 9e999}}',
        ),
        400,
        "body contains the number 9e999, too large for a float to store",
    ),
    "tracker: NUL in the result": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": "a\\u0000b"}'),
        400,
        "body contains a NUL character (\\u0000), which cannot be stored",
    ),
    "tracker: NUL in an error message": (
        raw(
            TRACKER,
            '{"node": "NODE_ID", "status": "failure", "error": {"message": "\\u0000"}}',
        ),
        400,
        "body contains a NUL character (\\u0000), which cannot be stored",
    ),
    "tracker: NUL in a key": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": {"\\u0000": 1}}'),
        400,
        "body contains a NUL character (\\u0000), which cannot be stored",
    ),
    "tracker: unpaired surrogate": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": "\\ud800"}'),
        400,
        "body contains an unpaired surrogate, which is not UTF-8",
    ),
    "tracker: nested too deeply": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": ' + nested(100) + "}"),
        400,
        "body is nested deeper than 100 levels",
    ),
    "tracker: nested past the parser's recursion limit": (
        raw(TRACKER, nested(LIMIT // 2).encode()),
        400,
        "body is nested deeper than 100 levels",
    ),
    "tracker: over the size limit": (
        raw(TRACKER, OVERSIZED_REPORT),
        413,
        f"body of {size_of(OVERSIZED_REPORT)} bytes is over the limit of {LIMIT}",
    ),
    "tracker: unknown node": (
        raw(TRACKER, json.dumps({"node": str(MISSING), "status": "success", "result": 1})),
        404,
        f"no node has the id {MISSING}",
    ),
    "tracker: a number too long to parse": (
        raw(TRACKER, '{"node": "NODE_ID", "status": "success", "result": ' + "9" * 5000 + "}"),
        400,
        "body is not valid JSON",
    ),
    # run bodies
    "run: an overflowing number": (
        raw(run_url("add"), '{"node": "NODE_ID", "extra": 1e400}'),
        400,
        "body contains the number 1e400, too large for a float to store",
    ),
    "run: a retry beyond the counter's range": (
        raw(run_url("add"), '{"node": "NODE_ID", "retry": ' + str(2**70) + "}"),
        400,
        "'retry' must be an integer from 0 to 2147483647, got 1180591620717411303424",
    ),
    "run: a retry one past the counter's range": (
        raw(run_url("add"), '{"node": "NODE_ID", "retry": 2147483648}'),
        400,
        "'retry' must be an integer from 0 to 2147483647, got 2147483648",
    ),
    "run: a retry too long to echo": (
        raw(run_url("add"), '{"node": "NODE_ID", "retry": ' + "9" * 60 + "}"),
        400,
        "'retry' must be an integer from 0 to 2147483647, got " + "9" * 37 + "...",
    ),
    "run: nested past the parser's recursion limit": (
        raw(run_url("add"), nested(LIMIT // 2).encode()),
        400,
        "body is nested deeper than 100 levels",
    ),
    "run: a declared length over the limit": (
        raw(run_url("add"), b"{}", CONTENT_LENGTH=str(LIMIT + 1)),
        413,
        f"body of {LIMIT + 1} bytes is over the limit of {LIMIT}",
    ),
    "run: a node id that is too long to echo": (
        raw(run_url("add"), json.dumps({"node": "x" * 500})),
        400,
        "'node' must be an id (UUID), got '" + "x" * 96 + "...",
    ),
    "run: a node whose task is another": (
        raw(run_url("identity"), '{"node": "NODE_ID"}'),
        400,
        None,  # filled in by the test: names the node
    ),
    # revoke
    "revoke: a form body over the size limit": (
        raw(REVOKE, OVERSIZED_FORM, "application/x-www-form-urlencoded"),
        413,
        f"body of {size_of(OVERSIZED_FORM)} bytes is over the limit of {LIMIT}",
    ),
    "revoke: a multipart body without a boundary": (
        raw(REVOKE, b"task=x", "multipart/form-data"),
        400,
        "the form body cannot be parsed",
    ),
}


@pytest.mark.parametrize(("send", "status", "message"), CASES.values(), ids=CASES.keys())
def test_a_bad_request_is_answered_in_json_and_changes_nothing(
    client, chain, send, status, message
):
    if message is None:
        message = f"node {chain.pk} runs 'add', not 'identity'"
    expect_unchanged(client, send, status, message, chain)


def test_a_body_over_djangos_upload_limit_answers_413(client, chain, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({"node": str(chain.pk), "padding": "x" * 200})

    expect_unchanged(
        client,
        raw(run_url("add"), body),
        413,
        f"body of {len(body)} bytes is over the limit of 100",
        chain,
    )


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "tabnanny.check",
        "tests.testapp.tasks.add",
        "django_cloudtasks.engine.revoke_node",
        "builtins.eval",
        "__import__",
        "add ",
        "ADD",
    ],
)
def test_a_name_that_is_not_registered_answers_404_and_imports_nothing(client, chain, name):
    modules = set(sys.modules)

    expect_unchanged(
        client,
        raw(run_url(name), '{"node": "NODE_ID"}'),
        404,
        f"unknown task {name!r}; {UNKNOWN_TASK_HINT}",
        chain,
    )
    assert set(sys.modules) == modules
    assert "tabnanny" not in sys.modules


def test_a_stored_node_whose_task_is_no_longer_registered_answers_404(client, memory):
    result = bad_input_unregistered_later.si(1).apply_async()
    node = Node.objects.get(pk=result.id)
    original = registry.get("bad_input_unregistered_later")
    registry.unregister("bad_input_unregistered_later")
    try:
        before = snapshot()
        response = post(client, run_url("bad_input_unregistered_later"), {"node": str(node.pk)})
        assert response.status_code == 404
        assert response.json() == {
            "error": f"unknown task 'bad_input_unregistered_later'; {UNKNOWN_TASK_HINT}"
        }
        assert snapshot() == before
    finally:
        registry.register(original.__wrapped__, original.name, original.policy)


# -- wrong arguments: a terminal failure, never a retry loop ----------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ([1], {}, "missing a required argument: 'y'"),
        ([1, 2, 3], {}, "too many positional arguments"),
        ([1, 2], {"z": 3}, "got an unexpected keyword argument 'z'"),
        ([1], {"x": 2}, "multiple values for argument 'x'"),
    ],
)
def test_wrong_arguments_fail_a_retrying_task_for_good(client, memory, args, kwargs, problem):
    result = bad_input_retrying.si(1, 2).apply_async()
    Node.objects.filter(pk=result.id).update(args=args, kwargs=kwargs)

    response = post(client, run_url("bad_input_retrying"), memory.sent[0].body())

    assert response.status_code == 200
    detail = response.json()["detail"]
    assert detail.startswith("TypeError: wrong arguments for task 'bad_input_retrying': ")
    assert problem in detail
    node = Node.objects.get(pk=result.id)
    assert (node.state, node.retries, node.attempts) == (State.FAILURE, 0, 1)
    assert problem in node.error_message
    assert node.error_traceback == ""  # the message says it all; no library frames
    assert Workflow.objects.get().status == WorkflowStatus.FAILURE
    assert Execution.objects.count() == 0
    assert len(memory.sent) == 1  # no retry was scheduled
    memory.drain()
    assert Execution.objects.count() == 0
    with pytest.raises(TypeError, match="wrong arguments"):
        result.get(timeout=1)


def test_a_parent_result_the_child_cannot_take_fails_the_child_for_good(client, memory):
    # identity takes one argument; given its parent's result and one more it has two.
    (add.s(1, 2) | identity.s()).apply_async()
    Node.objects.filter(index=1).update(args=[5])

    post(client, run_url("add"), memory.sent[0].body())
    response = post(client, run_url("identity"), memory.sent[1].body())

    assert response.json()["state"] == "FAILURE"
    assert "too many positional arguments" in response.json()["detail"]
    assert len(memory.sent) == 2


# -- arguments refused when the signature is built or applied --------------------------


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: add.s(Opaque(), 1), r"args\[0\] of 'add' is <Opaque> of type Opaque"),
        (lambda: add.s(1, y=b"bytes"), r"kwargs\['y'\] of 'add' is b'bytes' of type bytes"),
        (lambda: add.s({1: "a"}, 1), r"args\[0\] of 'add' has the key 1 of type int"),
        (lambda: add.s(float("nan"), 1), r"args\[0\] of 'add' is nan"),
        (lambda: add.s([{1, 2}], 1), r"args\[0\]\[0\] of 'add' is \{1, 2\} of type set"),
        (
            lambda: add.s(datetime.date(2024, 1, 1), 1),
            r"args\[0\] of 'add' is datetime.date\(2024, 1, 1\) of type date",
        ),
        (lambda: add.si(1, pathlib.Path("/tmp")), r"args\[1\] of 'add' is .* of type PosixPath"),
        (lambda: Signature("add", [object()]), r"args\[0\] of 'add' is <object object"),
        (lambda: add.apply_async(args=[Opaque(), 1]), r"args\[0\] of 'add' is <Opaque>"),
        (lambda: add.delay(1, Opaque()), r"args\[1\] of 'add' is <Opaque>"),
    ],
)
def test_arguments_that_are_not_json_are_a_type_error_when_the_signature_is_built(
    memory, build, message
):
    with pytest.raises(TypeError, match=message):
        build()
    assert Node.objects.count() == 0
    assert memory.sent == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: add.delay(1e400, 1), r"args\[0\] of 'add' is inf, which JSON cannot represent"),
        (lambda: add.apply_async(args=[1], kwargs={"y": float("nan")}), r"kwargs\['y'\].*nan"),
        (lambda: add.delay([1, {"a": -1e400}], 1), r"args\[0\]\[1\]\['a'\] of 'add' is -inf"),
        (lambda: add.s(1, 2).apply_async(countdown=float("inf")), r"options\['countdown'\]"),
        (
            lambda: CloudChainManager().add_task("add", {"x": 1, "y": float("inf")}).run(),
            r"kwargs\['y'\] of 'add' is inf",
        ),
    ],
)
def test_numbers_json_cannot_carry_are_refused_when_the_call_is_made(memory, build, message):
    with pytest.raises(TypeError, match=message):
        build()
    assert Node.objects.count() == 0
    assert memory.sent == []


def test_a_reference_cycle_is_a_type_error(memory):
    cycle: list = []
    cycle.append(cycle)

    with pytest.raises(TypeError, match="reference cycle"):
        add.s(cycle, 1)
    assert Node.objects.count() == 0


def test_arguments_over_max_args_bytes_are_refused_by_apply_async(memory, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "MAX_ARGS_BYTES": 1000}
    big = "x" * 1000
    size = len(json.dumps([[big], {}], separators=(",", ":")))

    with pytest.raises(ValueError, match=rf"'identity'.*\b{size}\b.*\b1000\b"):
        (add.s(1, 2) | identity.si(big)).apply_async()
    assert Node.objects.count() == 0
    assert Workflow.objects.count() == 0


def test_the_default_max_args_bytes_is_cloud_tasks_limit(memory):
    with pytest.raises(ValueError, match="'identity'"):
        identity.delay("x" * 100_001)
    assert Node.objects.count() == 0


def test_arguments_under_max_args_bytes_are_accepted(memory, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "MAX_ARGS_BYTES": 1000}

    result = identity.delay("x" * 900)

    assert Node.objects.get(pk=result.id).args == ["x" * 900]


def test_a_limit_under_the_size_of_no_arguments_refuses_even_none(memory, settings):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "MAX_ARGS_BYTES": 5}

    with pytest.raises(ValueError, match=r"'fail_custom'.*\b7\b.*\b5\b"):
        fail_custom.s().apply_async()
    assert Node.objects.count() == 0


# -- nothing is unpickled, no import path comes from a request --------------------------

REQUEST_PATH_MODULES = (
    "views",
    "auth",
    "runner",
    "engine",
    "store",
    "policy",
    "dispatch",
    "registry",
    "results",
)


@pytest.mark.parametrize("module", REQUEST_PATH_MODULES)
def test_no_module_on_the_request_path_unpickles_or_imports_by_name(module):
    import django_cloudtasks

    place = pathlib.Path(django_cloudtasks.__file__).parent / module
    files = sorted(place.glob("*.py")) if place.is_dir() else [place.with_suffix(".py")]
    source = "".join(path.read_text() for path in files)
    for forbidden in (
        "pickle",
        "marshal",
        "shelve",
        "import_module",
        "import_string",
        "__import__",
        "eval(",
        "exec(",
        "yaml",
    ):
        assert forbidden not in source, f"{module}.py mentions {forbidden}"


def test_a_pickled_body_is_not_json(client, chain):
    import pickle

    payload = pickle.dumps({"node": str(chain.pk)})

    expect_unchanged(
        client,
        raw(run_url("add"), payload, "application/octet-stream"),
        400,
        "body is not valid JSON",
        chain,
    )
