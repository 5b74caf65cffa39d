"""Random requests at every endpoint: never a 500, and nothing changes without credentials."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import pytest
from django.test import Client
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_cloudtasks import auth, views
from django_cloudtasks.emulator.oidc import TokenMinter
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.transports import get_transport, reset_transport
from django_cloudtasks.transports.memory import MemoryTransport
from tests.testapp.models import Execution
from tests.testapp.tasks import add, identity

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = "tasks@test-project.iam.gserviceaccount.com"
AUDIENCE = "http://testserver"
TOKEN = "fuzz-shared-token"
ENDPOINTS = {views.run, views.tracker, views.revoke, views.sweep}
FUZZ = hypothesis_settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def world(settings, certs_server, monkeypatch):
    """Shared token and OIDC both configured; a chain and a single task waiting to run."""
    monkeypatch.setattr(auth, "certificates", auth.CertificateCache())
    settings.CLOUDTASKS = {
        **settings.CLOUDTASKS,
        "TRANSPORT": "memory",
        "AUTH_TOKEN": TOKEN,
        "OIDC_SERVICE_ACCOUNT": EMAIL,
        "OIDC_CERTS_URL": certs_server.pem_url,
        "MAX_BODY_BYTES": 4096,
    }
    reset_transport()
    transport = get_transport()
    assert isinstance(transport, MemoryTransport)
    chain = (add.s(1, 2) | add.s(3)).apply_async()
    single = identity.si("x").apply_async()
    ids = [str(n.pk) for n in Node.objects.all()] + [chain.workflow_id, single.workflow_id]
    yield transport, ids
    reset_transport()


def b64(data: dict | bytes) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def bad_tokens(minter: TokenMinter) -> list[str]:
    """Tokens that come close: each is wrong in one way."""
    now = int(time.time())
    good = minter.mint(AUDIENCE, EMAIL)
    header, payload, _ = good.split(".")
    return [
        minter.mint("https://other.example.com", EMAIL),
        minter.mint(AUDIENCE, EMAIL, iss="https://evil.example.com"),
        minter.mint(AUDIENCE, EMAIL, iat=now - 7200, exp=now - 3600),
        minter.mint(AUDIENCE, "intruder@evil.iam.gserviceaccount.com"),
        minter.mint(AUDIENCE, EMAIL, email_verified=False),
        TokenMinter().mint(AUDIENCE, EMAIL),
        f"{b64({'alg': 'none', 'kid': minter.kid})}.{payload}.",
        f"{header}.{payload}.{b64(b'garbage' * 30)}",
        f"{header}.{payload}.",
        TOKEN + "x",
        TOKEN[:-1],
        TOKEN.upper(),
    ]


# -- strategies ------------------------------------------------------------------------

latin1 = st.characters(min_codepoint=32, max_codepoint=255)
segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
jwt_shaped = st.builds(lambda a, b, c: f"{a}.{b}.{c}", segment, segment, segment)
#: Values a database may refuse to store: NUL, lone surrogates, NaN and infinities.
awkward = st.sampled_from(
    ["\x00", "a\x00b", "\ud800", "\udfff x", "\u2028", "", float("nan"), float("inf")]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | awkward,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | awkward.filter(lambda v: isinstance(v, str)), inner)
    ),
    max_leaves=12,
)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "text/plain",
        "",
    ]
)


def encode(value: object) -> bytes:
    # Python writes NaN and Infinity, which JSON does not allow: so do some clients.
    return json.dumps(value).encode()


def random_calls(ids: list[str]) -> st.SearchStrategy[dict]:
    """Any method, path, body and content type."""
    some_id = st.sampled_from(ids) | st.text(alphabet=latin1, max_size=40)
    query = st.dictionaries(
        st.sampled_from(["task", "chain", "node", "x"]), some_id, max_size=2
    ).map(lambda q: "?" + urllib.parse.urlencode(q) if q else "")
    name = st.sampled_from(["add", "identity", "fail", "os.system", "tests.testapp.tasks.add"])
    name = name | st.text(alphabet=latin1, min_size=1, max_size=20)
    run = name.map(lambda n: f"/cloudtasks/run/{urllib.parse.quote(n, safe='')}/")
    fixed = st.sampled_from(
        ["/cloudtasks/tracker/", "/cloudtasks/revoke/", "/cloudtasks/sweep/", "/cloudtasks/run/"]
    )
    node = st.sampled_from(ids) | json_values
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "node": node,
            "retry": json_values,
            "status": st.sampled_from(["success", "failure"]) | json_values,
            "result": json_values,
            "error": json_values,
            "task": node,
        },
    )
    form = st.dictionaries(st.sampled_from(["task", "chain"]), st.sampled_from(ids)).map(
        lambda d: urllib.parse.urlencode(d).encode()
    )
    return st.fixed_dictionaries(
        {
            "method": methods,
            "path": st.builds(lambda p, q: p + q, run | fixed, query),
            "body": (shaped | json_values).map(encode) | form | st.binary(max_size=200),
            "content_type": content_types,
        }
    )


def well_formed_calls(ids: list[str]) -> st.SearchStrategy[dict]:
    """The calls each endpoint expects, with random values where the data goes.

    ``ids[0]`` is a node ready to run, so runs and reports name it most often.
    """
    node = st.sampled_from(ids[:1]) | st.sampled_from(ids)
    runnable = st.sampled_from(ids[:1]) | node
    run = st.fixed_dictionaries(
        {"node": runnable}, optional={"retry": st.integers(-1, 5) | json_values}
    ).map(lambda b: ("POST", "/cloudtasks/run/add/", encode(b), "application/json"))
    stored = awkward | json_values  # what the database keeps verbatim
    error = st.fixed_dictionaries(
        {}, optional={"type": stored, "message": stored, "traceback": stored}
    )
    report = st.fixed_dictionaries(
        {"node": runnable, "status": st.sampled_from(["success", "failure"])},
        optional={"result": stored, "error": error | json_values},
    ).map(lambda b: ("POST", "/cloudtasks/tracker/", encode(b), "application/json"))
    revoke = st.builds(
        lambda method, key, value: (
            method,
            f"/cloudtasks/revoke/?{urllib.parse.urlencode({key: value})}",
            b"",
            "application/json",
        ),
        st.sampled_from(["GET", "POST"]),
        st.sampled_from(["task", "chain"]),
        node,
    )
    return st.one_of(report, run, report, revoke).map(
        lambda c: dict(zip(("method", "path", "body", "content_type"), c, strict=True))
    )


def calls(ids: list[str]) -> st.SearchStrategy[dict]:
    """Requests at the endpoints: well-formed ones, random ones, with random extras."""
    extras = st.fixed_dictionaries(
        {
            "headers": st.dictionaries(
                st.sampled_from(["X-CloudTasks-TaskName", "X-Forwarded-For", "Cookie", "X-Junk"]),
                st.text(alphabet=latin1, max_size=30),
                max_size=3,
            ),
            "content_length": st.one_of(
                st.none(), st.none(), st.none(), st.sampled_from(["abc", "-1", "0", "99999999999"])
            ),
        }
    )
    shapes = st.one_of(well_formed_calls(ids), well_formed_calls(ids), random_calls(ids))
    return st.builds(lambda call, extra: {**call, **extra}, shapes, extras)


def authorizations(minter: TokenMinter) -> st.SearchStrategy[str | None]:
    """Every kind of credential except a valid one."""
    wrong = st.sampled_from(bad_tokens(minter))
    return st.one_of(
        st.none(),
        wrong.map(lambda t: f"Bearer {t}"),
        jwt_shaped.map(lambda t: f"Bearer {t}"),
        st.text(alphabet=latin1, max_size=60).map(lambda t: f"Bearer {t}"),
        st.text(alphabet=latin1, max_size=60),
        st.sampled_from(["Basic Zm9vOmJhcg==", "bearer", "Bearer  ", TOKEN, f"Token {TOKEN}"]),
    ).filter(lambda header: header is None or header.strip() != f"Bearer {TOKEN}")


def snapshot() -> tuple[list, list, int]:
    return (
        list(Workflow.objects.order_by("pk").values()),
        list(Node.objects.order_by("pk").values()),
        Execution.objects.count(),
    )


def send(client: Client, call: dict, authorization: str | None):
    headers = dict(call["headers"])
    if authorization is not None:
        headers["Authorization"] = authorization
    extra = {}
    if call["content_length"] is not None:
        extra["CONTENT_LENGTH"] = call["content_length"]
    return client.generic(
        call["method"],
        call["path"],
        call["body"],
        content_type=call["content_type"],
        headers=headers,
        **extra,
    )


def is_ours(path: str) -> bool:
    try:
        return resolve(urllib.parse.unquote(urllib.parse.urlsplit(path).path)).func in ENDPOINTS
    except Resolver404:
        return False


# -- properties ------------------------------------------------------------------------


def test_without_valid_credentials_nothing_runs_and_nothing_changes(world, minter):
    transport, ids = world
    client = Client(raise_request_exception=True)
    before = snapshot()
    sent = len(transport.sent)

    @FUZZ
    @given(call=calls(ids), authorization=authorizations(minter))
    def attack(call, authorization):
        response = send(client, call, authorization)

        assert response.status_code < 500, response.content
        if is_ours(call["path"]):
            assert response.status_code in (401, 403, 405), response.content
            if call["method"] != "HEAD":
                assert "error" in response.json()
        else:
            assert response.status_code == 404
        assert snapshot() == before
        assert len(transport.sent) == sent
        assert transport.cancelled == []

    attack()


def test_with_valid_credentials_random_requests_never_answer_500(world, minter):
    client = Client(raise_request_exception=True)
    valid = [f"Bearer {TOKEN}", f"Bearer {minter.mint(AUDIENCE, EMAIL)}"]

    @FUZZ
    @given(data=st.data(), authorization=st.sampled_from(valid))
    def probe(data, authorization):
        # A fresh workflow per example, so that reports and runs meet waiting nodes.
        result = (add.s(1, 2) | add.s(3)).apply_async()
        nodes = Node.objects.filter(workflow_id=result.workflow_id).order_by("index")
        fresh = [str(n.pk) for n in nodes] + [result.workflow_id]
        call = data.draw(calls(fresh), label="call")
        # The test client cannot send fewer bytes than a declared Content-Length.
        declared = call["content_length"] or ""
        if declared.isdigit() and int(declared) > len(call["body"]):
            call = {**call, "content_length": None}

        response = send(client, call, authorization)

        assert response.status_code < 500, response.content
        if is_ours(call["path"]) and call["method"] != "HEAD":
            answer = response.json()
            assert isinstance(answer, dict)
            if response.status_code == 409:  # a delivery to try later
                assert answer["detail"]
            elif response.status_code >= 400:
                assert isinstance(answer.get("error"), str) and answer["error"]

    probe()
