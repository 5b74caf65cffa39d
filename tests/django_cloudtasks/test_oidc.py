"""OIDC authentication: Google-style ID tokens verified against cached certificates."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.auth import crypt, jwt

from django_cloudtasks import auth
from django_cloudtasks.constants import State
from django_cloudtasks.emulator.oidc import TokenMinter
from django_cloudtasks.models import Node
from django_cloudtasks.transports import get_transport, reset_transport
from django_cloudtasks.transports.memory import MemoryTransport
from tests.django_cloudtasks.test_views import (
    REVOKE,
    TRACKER,
    assert_nothing_ran,
    post,
    run_url,
    second_of,
    start_chain,
)
from tests.testapp.models import Execution
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = "tasks@test-project.iam.gserviceaccount.com"
AUDIENCE = "http://testserver"  # the test settings' BASE_URL


@pytest.fixture
def fetches(monkeypatch):
    """A fresh certificate cache for the test; the list records each fetched URL."""
    seen: list[str] = []

    def counting(url: str):
        seen.append(url)
        return auth.fetch_certificates(url)

    monkeypatch.setattr(auth, "certificates", auth.CertificateCache(fetch=counting))
    return seen


def use(settings, **changes) -> MemoryTransport:
    """Change ``CLOUDTASKS`` (None removes a key); return the memory transport now in use.

    A settings change replaces the transport, so tests change settings before sending.
    """
    config = {**settings.CLOUDTASKS, **changes}
    settings.CLOUDTASKS = {k: v for k, v in config.items() if v is not None}
    transport = get_transport()
    assert isinstance(transport, MemoryTransport)
    return transport


@pytest.fixture
def oidc(settings, certs_server, fetches, monkeypatch):
    """OIDC configured for EMAIL, certificates at the local server, no shared token."""
    monkeypatch.delenv("TASKAPP_AUTH_TOKEN", raising=False)
    yield use(
        settings,
        TRANSPORT="memory",
        AUTH_TOKEN=None,
        OIDC_SERVICE_ACCOUNT=EMAIL,
        OIDC_CERTS_URL=certs_server.pem_url,
    )
    reset_transport()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes | dict) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def good_claims(minter: TokenMinter) -> dict:
    return dict(jwt.decode(minter.mint(AUDIENCE, EMAIL), verify=False))


def signed_by_another_key_with_the_same_kid(minter: TokenMinter) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = crypt.RSASigner.from_string(pem, key_id=minter.kid)
    return jwt.encode(signer, good_claims(minter)).decode()


def unsigned(minter: TokenMinter) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": minter.kid}
    return f"{b64(header)}.{b64(good_claims(minter))}."


def rs256_without_signature(minter: TokenMinter) -> str:
    header, payload, _ = minter.mint(AUDIENCE, EMAIL).split(".")
    return f"{header}.{payload}."


def garbage_signature(minter: TokenMinter) -> str:
    header, payload, _ = minter.mint(AUDIENCE, EMAIL).split(".")
    return f"{header}.{payload}.{b64(b'x' * 256)}"


def another_payload_under_a_valid_signature(minter: TokenMinter) -> str:
    header, _, signature = minter.mint("https://other.example.com", EMAIL).split(".")
    return f"{header}.{b64(good_claims(minter))}.{signature}"


def hs256_keyed_with_the_public_certificate(minter: TokenMinter) -> str:
    header = b64({"alg": "HS256", "typ": "JWT", "kid": minter.kid})
    payload = b64(good_claims(minter))
    secret = minter.certificate_pem.encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def es256_with_the_same_kid(minter: TokenMinter) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = crypt.ES256Signer.from_string(pem, key_id=minter.kid)
    return jwt.encode(signer, good_claims(minter)).decode()


now = int(time.time())
BAD_TOKENS = {
    "wrong audience": (
        lambda m: m.mint("https://other.example.com", EMAIL),
        "wrong audience",
    ),
    "audience missing": (lambda m: m.mint(AUDIENCE, EMAIL, aud=None), "wrong audience"),
    "audience of BASE_URL with a slash": (lambda m: m.mint(AUDIENCE + "/", EMAIL), "audience"),
    "wrong issuer": (lambda m: m.mint(AUDIENCE, EMAIL, iss="https://evil.example.com"), "issuer"),
    "issuer missing": (lambda m: m.mint(AUDIENCE, EMAIL, iss=None), "issuer"),
    "expired": (
        lambda m: m.mint(AUDIENCE, EMAIL, iat=now - 7200, exp=now - 3600),
        "token expired",
    ),
    "issued in the future": (
        lambda m: m.mint(AUDIENCE, EMAIL, iat=now + 3600, exp=now + 7200),
        "before its issue time",
    ),
    "expiry missing": (lambda m: m.mint(AUDIENCE, EMAIL, exp=None), "missing claims"),
    "wrong email": (
        lambda m: m.mint(AUDIENCE, "intruder@evil.iam.gserviceaccount.com"),
        "not the configured service account",
    ),
    "email null": (
        lambda m: jwt.encode(m._signer, {**good_claims(m), "email": None}).decode(),
        "not the configured service account",
    ),
    "email empty": (lambda m: m.mint(AUDIENCE, ""), "not the configured service account"),
    "email with a Kelvin sign for k": (
        lambda m: m.mint(AUDIENCE, EMAIL.replace("k", "\u212a")),
        "not the configured service account",
    ),
    "email with a dotless i": (
        lambda m: m.mint(AUDIENCE, EMAIL.upper().replace("I", "\u0131")),
        "not the configured service account",
    ),
    "not valid before an hour from now": (
        lambda m: m.mint(AUDIENCE, EMAIL, nbf=int(time.time()) + 3600),
        "before its not-before time",
    ),
    "not-before that is not a number": (
        lambda m: m.mint(AUDIENCE, EMAIL, nbf="soon"),
        "malformed claims",
    ),
    "valid for two hours": (
        lambda m: m.mint(AUDIENCE, EMAIL, exp=int(time.time()) + 7200),
        "token lifetime over 3600 seconds",
    ),
    "valid for a day, issued a day ago": (
        lambda m: m.mint(AUDIENCE, EMAIL, iat=int(time.time()) - 86_000),
        "token lifetime over 3600 seconds",
    ),
    "unverified email": (
        lambda m: m.mint(AUDIENCE, EMAIL, email_verified=False),
        "not verified",
    ),
    "email_verified as a string": (
        lambda m: m.mint(AUDIENCE, EMAIL, email_verified="true"),
        "not verified",
    ),
    "email_verified missing": (
        lambda m: m.mint(AUDIENCE, EMAIL, email_verified=None),
        "not verified",
    ),
    "unsigned (alg none)": (unsigned, "unsupported algorithm 'none'"),
    "RS256 with an empty signature": (rs256_without_signature, "bad signature"),
    "garbage signature": (garbage_signature, "bad signature"),
    "payload swapped under a valid signature": (
        another_payload_under_a_valid_signature,
        "bad signature",
    ),
    "signed by another key": (lambda m: TokenMinter().mint(AUDIENCE, EMAIL), "unknown key"),
    "signed by another key under the same kid": (
        signed_by_another_key_with_the_same_kid,
        "bad signature",
    ),
    "HS256 keyed with the public certificate": (
        hs256_keyed_with_the_public_certificate,
        "unsupported algorithm 'HS256'",
    ),
    "ES256 under the same kid": (es256_with_the_same_kid, "unsupported algorithm 'ES256'"),
    "not base64 inside": (lambda m: "eyJ!.eyJ.abc", None),
    "header that is not JSON": (lambda m: f"{b64(b'not json')}.{b64(b'{}')}.", "malformed"),
}


# -- accepted --------------------------------------------------------------------------


def test_a_valid_oidc_token_runs_the_task(client, oidc, minter):
    first = start_chain(oidc)

    response = post(
        client, run_url("add"), oidc.sent[0].body(), bearer(minter.mint(AUDIENCE, EMAIL))
    )

    assert response.status_code == 200
    assert response.json() == {"state": "SUCCESS"}
    first.refresh_from_db()
    assert (first.state, first.result) == (State.SUCCESS, 3)
    assert Execution.objects.count() == 1


def test_a_valid_oidc_token_opens_every_endpoint(client, oidc, minter):
    first = start_chain(oidc)
    headers = bearer(minter.mint(AUDIENCE, EMAIL))

    tracked = post(
        client, TRACKER, {"node": str(first.pk), "status": "success", "result": 3}, headers
    )
    swept = client.post("/cloudtasks/sweep/", headers=headers)
    revoked = client.get(f"{REVOKE}?task={second_of(first).pk}", headers=headers)

    assert (tracked.status_code, swept.status_code, revoked.status_code) == (200, 200, 200)
    assert revoked.json()["count"] == 1


def test_the_email_claim_is_compared_without_regard_to_case(client, oidc, minter):
    start_chain(oidc)

    token = minter.mint(AUDIENCE, EMAIL.upper())
    response = post(client, run_url("add"), oidc.sent[0].body(), bearer(token))

    assert response.status_code == 200


LIFETIME = auth.MAX_TOKEN_LIFETIME + auth.CLOCK_SKEW


@pytest.mark.parametrize(
    "claims",
    [
        lambda now: {"nbf": now},
        lambda now: {"nbf": now + auth.CLOCK_SKEW - 2},
        lambda now: {"iat": now, "exp": now + LIFETIME},
    ],
    ids=["nbf now", "nbf within the clock skew", "lifetime of an hour and the skew"],
)
def test_tokens_within_the_time_allowances_are_accepted(client, oidc, minter, claims):
    start_chain(oidc)
    token = minter.mint(AUDIENCE, EMAIL, **claims(int(time.time())))

    response = post(client, run_url("add"), oidc.sent[0].body(), bearer(token))

    assert response.status_code == 200


def test_oidc_audience_overrides_base_url(client, oidc, minter, settings):
    oidc = use(settings, OIDC_AUDIENCE="https://aud.example.com")
    first = start_chain(oidc)
    body = oidc.sent[0].body()

    refused = post(client, run_url("add"), body, bearer(minter.mint(AUDIENCE, EMAIL)))
    assert refused.status_code == 403
    assert_nothing_ran(first, oidc)

    token = minter.mint("https://aud.example.com", EMAIL)
    assert post(client, run_url("add"), body, bearer(token)).status_code == 200


def test_the_accepted_issuers_are_a_setting(client, oidc, minter, settings):
    oidc = use(settings, OIDC_ISSUERS=["https://emulator.local"])
    first = start_chain(oidc)
    body = oidc.sent[0].body()

    google = post(client, run_url("add"), body, bearer(minter.mint(AUDIENCE, EMAIL)))
    assert google.status_code == 403
    assert google.json() == {"error": "invalid OIDC token: wrong issuer"}
    assert_nothing_ran(first, oidc)

    token = minter.mint(AUDIENCE, EMAIL, iss="https://emulator.local")
    assert post(client, run_url("add"), body, bearer(token)).status_code == 200


def test_both_google_issuer_spellings_are_accepted_by_default(client, oidc, minter):
    start_chain(oidc)
    token = minter.mint(AUDIENCE, EMAIL, iss="accounts.google.com")

    response = post(client, run_url("add"), oidc.sent[0].body(), bearer(token))

    assert response.status_code == 200


# -- refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "reason"), BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_bad_oidc_token_is_refused_and_nothing_runs(client, oidc, minter, make, reason, caplog):
    first = start_chain(oidc)
    token = make(minter)

    response = post(client, run_url("add"), oidc.sent[0].body(), bearer(token))

    assert response.status_code in (401, 403)
    error = response.json()["error"]
    if reason is not None:
        assert error.startswith("invalid OIDC token: ")
        assert reason in error
        assert any("refused an OIDC token" in r.getMessage() for r in caplog.records)
    assert token not in error
    assert_nothing_ran(first, oidc)


@pytest.mark.parametrize("endpoint", ["run", "tracker", "revoke-get", "revoke-post", "sweep"])
def test_every_endpoint_refuses_a_token_for_another_audience(client, oidc, minter, endpoint):
    first = start_chain(oidc)
    headers = bearer(minter.mint("https://other.example.com", EMAIL))

    if endpoint == "run":
        response = post(client, run_url("add"), oidc.sent[0].body(), headers)
    elif endpoint == "tracker":
        body = {"node": str(first.pk), "status": "success", "result": 3}
        response = post(client, TRACKER, body, headers)
    elif endpoint == "revoke-get":
        response = client.get(f"{REVOKE}?chain={first.workflow_id}", headers=headers)
    elif endpoint == "revoke-post":
        response = client.post(REVOKE, {"task": str(first.pk)}, headers=headers)
    else:
        Node.objects.filter(pk=first.pk).update(ready_at=first.created_at.replace(year=2000))
        response = client.post("/cloudtasks/sweep/", headers=headers)

    assert response.status_code == 403
    assert response.json() == {"error": "invalid OIDC token: wrong audience"}
    assert_nothing_ran(first, oidc)
    assert oidc.cancelled == []


def test_a_shared_token_that_is_not_configured_is_refused_under_oidc(client, oidc):
    first = start_chain(oidc)

    response = post(client, run_url("add"), oidc.sent[0].body(), bearer("test-token"))

    assert response.status_code == 403
    assert response.json() == {"error": "invalid credentials"}
    assert_nothing_ran(first, oidc)


def test_without_a_token_oidc_answers_401(client, oidc):
    first = start_chain(oidc)

    response = post(client, run_url("add"), oidc.sent[0].body(), {})

    assert response.status_code == 401
    assert_nothing_ran(first, oidc)


def test_oidc_without_any_audience_refuses_every_request(client, oidc, minter, settings):
    oidc = use(settings, BASE_URL=None)
    first = start_chain(oidc)

    for audience in (AUDIENCE, "", "None"):
        token = minter.mint(audience, EMAIL)
        response = post(client, run_url("add"), {"node": str(first.pk)}, bearer(token))
        assert response.status_code == 403
        assert "not configured" in response.json()["error"]
    assert_nothing_ran(first, oidc)


# -- alongside the shared token ---------------------------------------------------------


def test_the_shared_token_still_works_alongside_oidc(client, oidc, minter, settings):
    oidc = use(settings, AUTH_TOKEN="test-token")
    start_chain(oidc)

    by_token = post(client, run_url("add"), oidc.sent[0].body(), bearer("test-token"))
    by_oidc = post(
        client, run_url("add"), oidc.sent[1].body(), bearer(minter.mint(AUDIENCE, EMAIL))
    )

    assert (by_token.status_code, by_oidc.status_code) == (200, 200)
    assert Execution.objects.count() == 2


def test_a_jwt_is_not_verified_when_only_the_shared_token_is_configured(
    client, memory, minter, fetches
):
    first = start_chain(memory)

    response = post(
        client, run_url("add"), memory.sent[0].body(), bearer(minter.mint(AUDIENCE, EMAIL))
    )

    assert response.status_code == 403
    assert response.json() == {"error": "invalid credentials"}
    assert fetches == []
    assert_nothing_ran(first, memory)


def test_a_shared_token_shaped_like_a_jwt_still_works_under_oidc(client, oidc, settings):
    oidc = use(settings, AUTH_TOKEN="abc.def.ghi")
    start_chain(oidc)

    response = post(client, run_url("add"), oidc.sent[0].body(), bearer("abc.def.ghi"))

    assert response.status_code == 200


# -- scoped credentials (OIDC_SCOPES) ----------------------------------------------------

SCHEDULER = "scheduler@test-project.iam.gserviceaccount.com"
OPERATOR = "ops@test-project.iam.gserviceaccount.com"
OPS_AUDIENCE = "https://ops.example.com"


def call_endpoint(client, endpoint: str, first: Node, token: str):
    """One request to ``endpoint`` (run, tracker, sweep or revoke) with ``token``."""
    headers = bearer(token)
    if endpoint == "run":
        body = {"node": str(first.pk), "workflow": str(first.workflow_id)}
        return post(client, run_url("add"), body, headers)
    if endpoint == "tracker":
        return post(
            client, TRACKER, {"node": str(first.pk), "status": "success", "result": 3}, headers
        )
    if endpoint == "sweep":
        return client.post("/cloudtasks/sweep/", headers=headers)
    return client.get(f"{REVOKE}?task={second_of(first).pk}", headers=headers)


@pytest.fixture
def scoped(settings, oidc):
    """Cloud Tasks' account for run and tracker, the scheduler's for sweep, an operator's
    (with its own audience) for revoke."""
    return use(
        settings,
        OIDC_SCOPES={
            "sweep": {"service_accounts": [SCHEDULER]},
            "revoke": {"service_accounts": [OPERATOR], "audiences": [OPS_AUDIENCE]},
        },
    )


TOKENS_BY_FAMILY = {
    "cloud tasks": (EMAIL, AUDIENCE, {"run", "tracker"}),
    "scheduler": (SCHEDULER, AUDIENCE, {"sweep"}),
    "operator": (OPERATOR, OPS_AUDIENCE, {"revoke"}),
    "operator for the run audience": (OPERATOR, AUDIENCE, set()),
}


@pytest.mark.parametrize("endpoint", ["run", "tracker", "sweep", "revoke"])
@pytest.mark.parametrize(
    ("email", "audience", "opens"), TOKENS_BY_FAMILY.values(), ids=TOKENS_BY_FAMILY.keys()
)
def test_each_endpoint_family_accepts_only_its_own_accounts(
    client, scoped, minter, endpoint, email, audience, opens
):
    first = start_chain(scoped)

    response = call_endpoint(client, endpoint, first, minter.mint(audience, email))

    if endpoint in opens:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == 403
        assert response.json()["error"].startswith("invalid OIDC token: ")
        assert_nothing_ran(first, scoped)


def test_a_token_cloud_tasks_sent_to_run_is_refused_by_revoke(client, scoped, minter):
    first = start_chain(scoped)
    token = minter.mint(AUDIENCE, EMAIL)
    assert call_endpoint(client, "run", first, token).status_code == 200

    response = call_endpoint(client, "revoke", first, token)

    assert response.status_code == 403
    assert response.json()["error"] == "invalid OIDC token: wrong audience"
    assert second_of(first).state == State.QUEUED


def test_a_scope_may_accept_several_accounts(client, oidc, minter, settings):
    oidc = use(settings, OIDC_SCOPES={"revoke": {"service_accounts": [OPERATOR, SCHEDULER]}})
    first = start_chain(oidc)

    answers = [
        call_endpoint(client, "revoke", first, minter.mint(AUDIENCE, who)).status_code
        for who in (OPERATOR, SCHEDULER, EMAIL)
    ]

    assert answers == [200, 200, 403]


def test_a_scope_without_accounts_accepts_no_oidc_token(client, oidc, minter, settings):
    oidc = use(settings, OIDC_SCOPES={"revoke": {"service_accounts": []}})
    first = start_chain(oidc)

    response = call_endpoint(client, "revoke", first, minter.mint(AUDIENCE, EMAIL))

    assert response.status_code == 403
    assert "not configured" in response.json()["error"]
    assert "OIDC_SCOPES['revoke']" in response.json()["error"]
    assert call_endpoint(client, "run", first, minter.mint(AUDIENCE, EMAIL)).status_code == 200


def test_the_shared_token_still_opens_a_scoped_endpoint(client, oidc, minter, settings):
    oidc = use(settings, AUTH_TOKEN="shared", OIDC_SCOPES={"revoke": {"service_accounts": []}})
    first = start_chain(oidc)

    assert call_endpoint(client, "revoke", first, "shared").status_code == 200


@pytest.mark.parametrize(
    "scopes",
    [
        {"revoke": {"service_accounts": EMAIL}},
        {"revoke": {"audiences": AUDIENCE}},
        {"revoke": [EMAIL]},
        ["revoke"],
    ],
    ids=["accounts as a string", "audiences as a string", "a list for a family", "a list"],
)
def test_scopes_of_another_shape_let_nothing_in_where_they_apply(
    client, oidc, minter, settings, scopes
):
    oidc = use(settings, OIDC_SCOPES=scopes)
    first = start_chain(oidc)

    response = call_endpoint(client, "revoke", first, minter.mint(AUDIENCE, EMAIL))

    assert response.status_code == 403
    assert second_of(first).state == State.PENDING


# -- certificates ----------------------------------------------------------------------


def test_the_certificates_are_fetched_once_for_many_requests(
    client, oidc, minter, certs_server, fetches
):
    result = (add.s(1, 1) | add.s(1) | add.s(1)).apply_async()
    for _ in range(3):
        dispatch = oidc.sent[-1]
        token = minter.mint(AUDIENCE, EMAIL)
        assert post(client, run_url("add"), dispatch.body(), bearer(token)).status_code == 200

    assert result.get(timeout=1) == 4
    assert fetches == [certs_server.pem_url]


class FakeSource:
    """Certificates served by a fake fetch, with a controllable clock."""

    def __init__(self, certs: dict[str, str], ttl: float = 3600.0) -> None:
        self.certs, self.ttl, self.now, self.calls = dict(certs), ttl, 1000.0, 0
        self.fail = False

    def fetch(self, url: str):
        self.calls += 1
        if self.fail:
            raise auth.CertificatesUnavailable("down")
        return dict(self.certs), self.ttl

    def cache(self) -> auth.CertificateCache:
        return auth.CertificateCache(fetch=self.fetch, clock=lambda: self.now)


def test_the_cache_keeps_certificates_for_their_max_age():
    source = FakeSource({"k": "pem"}, ttl=300)
    cache = source.cache()

    assert cache.get("u") == {"k": "pem"}
    source.now += 299
    cache.get("u")
    assert source.calls == 1
    source.now += 2
    cache.get("u")
    assert source.calls == 2


@pytest.mark.parametrize(("ttl", "kept"), [(0, 60), (5, 60), (10**9, 86_400)])
def test_the_cache_bounds_the_max_age(ttl, kept):
    source = FakeSource({"k": "pem"}, ttl=ttl)
    cache = source.cache()

    cache.get("u")
    source.now += kept - 1
    cache.get("u")
    assert source.calls == 1
    source.now += 2
    cache.get("u")
    assert source.calls == 2


def test_the_cache_is_per_url():
    source = FakeSource({"k": "pem"})
    cache = source.cache()

    cache.get("a")
    cache.get("b")
    cache.get("a")

    assert source.calls == 2


def test_an_unknown_key_refreshes_the_certificates_at_most_once_a_minute():
    source = FakeSource({"old": "pem"})
    cache = source.cache()
    cache.get("u")

    source.certs = {"old": "pem", "new": "pem2"}
    assert cache.get("u", unknown_key=True) == {"old": "pem"}  # fetched just now
    source.now += 61
    assert cache.get("u", unknown_key=True) == {"old": "pem", "new": "pem2"}
    assert cache.get("u", unknown_key=True) == {"old": "pem", "new": "pem2"}
    assert source.calls == 2


def test_a_failed_refresh_keeps_using_the_cached_certificates():
    source = FakeSource({"k": "pem"}, ttl=100)
    cache = source.cache()
    cache.get("u")
    source.fail = True
    source.now += 101

    assert cache.get("u") == {"k": "pem"}
    source.now += 30
    cache.get("u")
    assert source.calls == 2  # retried no sooner than a minute later


def test_concurrent_requests_fetch_the_certificates_once():
    calls = []

    def slow_fetch(url):
        calls.append(url)
        time.sleep(0.1)
        return {"k": "pem"}, 3600.0

    cache = auth.CertificateCache(fetch=slow_fetch)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("u"))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert calls == ["u"]
    assert results == [{"k": "pem"}] * 20


def test_tokens_naming_unknown_keys_after_a_failed_refresh_fetch_nothing_more():
    source = FakeSource({"k": "pem"}, ttl=100)
    cache = source.cache()
    cache.get("u")
    source.fail = True
    source.now += 101
    cache.get("u")  # the refresh fails; the cached copy stays in use

    for _ in range(20):
        assert cache.get("u", unknown_key=True) == {"k": "pem"}
    assert source.calls == 2
    source.now += 61
    cache.get("u", unknown_key=True)
    assert source.calls == 3


def test_without_a_cached_copy_a_failed_fetch_is_not_retried_at_once():
    source = FakeSource({"k": "pem"})
    source.fail = True
    cache = source.cache()

    for _ in range(20):
        with pytest.raises(auth.CertificatesUnavailable):
            cache.get("u", unknown_key=True)
    assert source.calls == 1
    source.fail = False
    source.now += auth.FAILED_FETCH_RETRY
    assert cache.get("u") == {"k": "pem"}
    assert source.calls == 2


class BlockedSource(FakeSource):
    """A fetch that waits for :attr:`release` after its first call."""

    def __init__(self, certs: dict[str, str], ttl: float = 3600.0) -> None:
        super().__init__(certs, ttl)
        self.fetching, self.release = threading.Event(), threading.Event()

    def fetch(self, url: str):
        if self.calls:
            self.fetching.set()
            assert self.release.wait(10)
        return super().fetch(url)


def finishes_while_blocked(source: BlockedSource, call) -> list:
    """Run ``call`` in a thread while a refresh is under way; what it returned, if it did."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    thread.join(5)
    returned = not thread.is_alive()
    source.release.set()
    thread.join()
    return results if returned else []


@pytest.mark.parametrize("expired", [False, True], ids=["fresh copy", "expired copy"])
def test_a_known_key_does_not_wait_for_a_refresh_under_way(expired):
    source = BlockedSource({"k": "pem"}, ttl=100)
    cache = source.cache()
    cache.get("u")
    source.now += 61 + (100 if expired else 0)
    refresher = threading.Thread(target=lambda: cache.get("u", unknown_key=True))
    refresher.start()
    assert source.fetching.wait(5)

    assert finishes_while_blocked(source, lambda: cache.get("u")) == [{"k": "pem"}]
    refresher.join()
    assert source.calls == 2


def test_a_key_rotation_is_picked_up(client, oidc, minter, monkeypatch):
    start_chain(oidc)
    source = FakeSource(minter.pem_certs())
    monkeypatch.setattr(auth, "certificates", source.cache())
    assert (
        post(
            client, run_url("add"), oidc.sent[0].body(), bearer(minter.mint(AUDIENCE, EMAIL))
        ).status_code
        == 200
    )

    rotated = TokenMinter()
    source.certs = {**minter.pem_certs(), **rotated.pem_certs()}
    source.now += 61
    response = post(
        client, run_url("add"), oidc.sent[1].body(), bearer(rotated.mint(AUDIENCE, EMAIL))
    )

    assert response.status_code == 200
    assert source.calls == 2


def test_unreachable_certificates_answer_503_and_run_nothing(client, oidc, minter, settings):
    oidc = use(settings, OIDC_CERTS_URL="http://127.0.0.1:9/certs")
    first = start_chain(oidc)

    response = post(
        client, run_url("add"), oidc.sent[0].body(), bearer(minter.mint(AUDIENCE, EMAIL))
    )

    assert response.status_code == 503
    assert "certificates are unavailable" in response.json()["error"]
    assert_nothing_ran(first, oidc)


@pytest.mark.parametrize(
    ("body", "cache_control"),
    [(b"not json", ""), (b"[1, 2]", ""), (b'{"k": 1}', "")],
)
def test_a_certificates_document_of_another_shape_is_refused(monkeypatch, body, cache_control):
    class Response:
        headers = {"Cache-Control": cache_control}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, limit):
            return body

    monkeypatch.setattr(auth.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(auth.CertificatesUnavailable):
        auth.fetch_certificates("http://certs.example.com")


def test_the_certificates_lifetime_comes_from_cache_control(certs_server):
    certs, ttl = auth.fetch_certificates(certs_server.pem_url)

    assert ttl == 3600
    assert all(pem.startswith("-----BEGIN CERTIFICATE-----") for pem in certs.values())


# -- end to end ------------------------------------------------------------------------

ISSUER = "https://emulator.local"
QUEUE = "projects/test-project/locations/us-central1/queues/default"


@pytest.fixture
def oidc_emulator(serve_emulator, settings, monkeypatch, fetches):
    """The emulator sends OIDC tokens; the app verifies them; no shared token anywhere."""
    monkeypatch.delenv("TASKAPP_AUTH_TOKEN", raising=False)
    emu = serve_emulator(
        options={"oidc_issuer": ISSUER},
        settings_changes={
            "AUTH_TOKEN": None,
            "OIDC_SERVICE_ACCOUNT": EMAIL,
            "OIDC_ISSUERS": [ISSUER],
        },
    )
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "OIDC_CERTS_URL": emu.oidc_certs_url}
    return emu


@pytest.mark.e2e
def test_a_chain_runs_over_http_with_oidc_tokens_from_the_emulator(
    oidc_emulator, fetches, settings
):
    # Every step a Cloud Task of its own, so that each delivery carries a token.
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "INLINE_SECONDS": 0}
    result = (add.s(4, 4) | add.s(8) | add.s(16)).delay()

    assert result.get(timeout=30) == 32
    assert oidc_emulator.wait_until_idle(timeout=10)
    runs = oidc_emulator.history
    assert [r.status_code for r in runs] == [200, 200, 200]
    for run in runs:
        token = run.headers["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, verify=False)
        assert (claims["iss"], claims["email"]) == (ISSUER, EMAIL)
    assert fetches == [oidc_emulator.oidc_certs_url]


@pytest.mark.e2e
def test_emulator_tokens_from_an_issuer_the_app_does_not_accept_run_nothing(
    oidc_emulator, settings
):
    settings.CLOUDTASKS = {**settings.CLOUDTASKS, "OIDC_ISSUERS": ["https://accounts.google.com"]}

    result = add.si(1, 1).delay()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not oidc_emulator.history:
        time.sleep(0.05)

    assert oidc_emulator.history[0].status_code == 403
    assert Execution.objects.count() == 0
    assert Node.objects.get(pk=result.id).state == State.QUEUED
    result.revoke()
