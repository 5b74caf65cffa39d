"""Authentication of requests to the endpoints. Without configuration, nothing passes."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from django.http import HttpRequest

from django_cloudtasks.conf import conf


@dataclass(frozen=True)
class Verdict:
    """``ok``, or the HTTP status and message to refuse with."""

    ok: bool
    status: int = 200
    message: str = ""


def is_configured() -> bool:
    """True when some request can pass :func:`authenticate` (a shared token is set).

    The system check ``django_cloudtasks.W001`` reports when this is False.
    """
    return bool(conf.AUTH_TOKEN)


def authenticate(request: HttpRequest) -> Verdict:
    """Check the request's bearer token against the shared ``AUTH_TOKEN``.

    Missing credentials (or another scheme than ``Bearer``) give 401, a wrong token
    403; with no token configured every request is refused with 403 (never accepted).
    """
    if not is_configured():
        return Verdict(False, 403, "authentication is not configured: set CLOUDTASKS['AUTH_TOKEN']")
    expected = str(conf.AUTH_TOKEN)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not token.strip():
        return Verdict(False, 401, "missing credentials: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return Verdict(False, 403, "invalid credentials")
    return Verdict(True)
