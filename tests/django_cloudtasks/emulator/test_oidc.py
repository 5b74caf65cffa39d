"""OIDC tokens minted by the emulator verify with google-auth against its certs endpoint."""

from __future__ import annotations

import socket

import google.auth.transport.requests
import pytest
from google.oauth2 import id_token

from django_cloudtasks.emulator import CloudTasksEmulator
from tests.django_cloudtasks.emulator.recording import RecordingHandler, http_task

AUDIENCE = "https://app.example.com/cloudtasks/run/"
EMAIL = "tasks@test-project.iam.gserviceaccount.com"


def verify(token: str, audience: str, certs_url: str) -> dict:
    """The exact verification the application performs."""
    return id_token.verify_token(
        token,
        google.auth.transport.requests.Request(),
        audience=audience,
        certs_url=certs_url,
    )


def test_a_minted_token_verifies_with_google_auth(emulator):
    token = emulator.mint_token(AUDIENCE, EMAIL)

    claims = verify(token, AUDIENCE, emulator.oidc_certs_url)

    assert claims["aud"] == AUDIENCE
    assert claims["email"] == EMAIL
    assert claims["email_verified"] is True
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["sub"] == claims["azp"]
    assert claims["exp"] - claims["iat"] == 3600


def test_a_token_for_another_audience_is_rejected(emulator):
    token = emulator.mint_token("https://other.example.com/", EMAIL)
    with pytest.raises(ValueError, match="audience"):
        verify(token, AUDIENCE, emulator.oidc_certs_url)


def test_an_expired_token_is_rejected(emulator):
    token = emulator.mint_token(AUDIENCE, EMAIL, iat=1_000_000, exp=1_003_600)
    with pytest.raises(ValueError, match="expired"):
        verify(token, AUDIENCE, emulator.oidc_certs_url)


def test_a_token_from_another_emulator_is_rejected(emulator):
    from django_cloudtasks.emulator.oidc import TokenMinter

    token = TokenMinter().mint(AUDIENCE, EMAIL)
    with pytest.raises(ValueError):
        verify(token, AUDIENCE, emulator.oidc_certs_url)


def test_a_task_with_an_oidc_token_is_delivered_with_a_verifiable_bearer(
    tasks_client, emulator, handler: RecordingHandler, queue
):
    tasks_client.create_task(
        parent=queue,
        task=http_task(
            handler.url("/explicit"),
            oidc_token={"service_account_email": EMAIL, "audience": AUDIENCE},
        ),
    )
    tasks_client.create_task(
        parent=queue,
        task=http_task(handler.url("/default"), oidc_token={"service_account_email": EMAIL}),
    )

    handler.wait_for(2)
    (explicit,) = handler.requests_for("/explicit")
    (default,) = handler.requests_for("/default")

    scheme, _, token = (explicit.header("Authorization") or "").partition(" ")
    assert scheme == "Bearer"
    assert verify(token, AUDIENCE, emulator.oidc_certs_url)["email"] == EMAIL
    default_token = (default.header("Authorization") or "").removeprefix("Bearer ")
    assert verify(default_token, handler.url("/default"), emulator.oidc_certs_url)


def test_a_custom_issuer_is_used():
    from django_cloudtasks.emulator import CloudTasksEmulator

    with CloudTasksEmulator(oidc_issuer="https://issuer.test") as emulator:
        token = emulator.mint_token(AUDIENCE, EMAIL)
        assert verify(token, AUDIENCE, emulator.oidc_certs_url)["iss"] == "https://issuer.test"


def test_the_certificates_port_can_be_pinned():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with CloudTasksEmulator(oidc_port=port) as emulator:
        assert emulator.oidc_certs_url == f"http://127.0.0.1:{port}/oauth2/v1/certs"
        token = emulator.mint_token(AUDIENCE, EMAIL)
        assert verify(token, AUDIENCE, emulator.oidc_certs_url)["email"] == EMAIL


def test_a_task_with_an_oauth_token_is_delivered_with_a_bearer_naming_its_account(
    tasks_client, handler: RecordingHandler, queue
):
    tasks_client.create_task(
        parent=queue,
        task=http_task(handler.url("/oauth"), oauth_token={"service_account_email": EMAIL}),
    )
    tasks_client.create_task(parent=queue, task=http_task(handler.url("/plain")))

    handler.wait_for(2)
    (oauth,) = handler.requests_for("/oauth")
    (plain,) = handler.requests_for("/plain")

    # Not an ID token: an opaque access token, as only Google APIs would accept.
    assert oauth.header("Authorization") == f"Bearer emulator-oauth-token.{EMAIL}"
    assert plain.header("Authorization") is None
