"""Authentication of requests to the endpoints. Without configuration, nothing passes.

Requests carry ``Authorization: Bearer <token>``, where the token is either

* the shared ``AUTH_TOKEN``, compared in constant time; or
* an OIDC ID token that Google (or the emulator) minted for ``OIDC_SERVICE_ACCOUNT``,
  as Cloud Tasks sends when the task has an ``oidc_token``. It is verified with
  ``google.auth.jwt.decode`` against certificates fetched from ``OIDC_CERTS_URL`` and
  cached (never fetched per request): RS256 signature, expiry, audience
  (``OIDC_AUDIENCE``, else ``BASE_URL``), issuer (one of ``OIDC_ISSUERS``), and an
  ``email`` claim equal to the service account with ``email_verified`` true.

A bearer equal to ``AUTH_TOKEN`` passes; otherwise, when OIDC is configured and the
bearer has the shape of a JWT, it must verify as an OIDC token. Anything else is
refused.
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest
from google.auth import jwt

from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import CloudTasksError

logger = logging.getLogger("django_cloudtasks.auth")

#: Seconds of clock difference tolerated on ``iat`` and ``exp``.
CLOCK_SKEW = 10
#: How long certificates are kept when the server sends no ``Cache-Control: max-age``.
DEFAULT_CERTS_TTL = 3600.0
#: Bounds on the certificates' lifetime in the cache, whatever the server says.
MIN_CERTS_TTL, MAX_CERTS_TTL = 60.0, 86_400.0
#: A token naming a key the cache lacks refreshes it at most this often (key rotation).
UNKNOWN_KEY_REFRESH = 60.0
#: Seconds allowed to fetch the certificates.
FETCH_TIMEOUT = 10.0

#: Three base64url segments; the signature may be empty (``alg: none`` tokens).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")


@dataclass(frozen=True)
class Verdict:
    """``ok``, or the HTTP status and message to refuse with.

    ``via`` says which credential passed: ``"token"`` or ``"oidc:<email>"``.
    """

    ok: bool
    status: int = 200
    message: str = ""
    via: str = ""


class InvalidToken(CloudTasksError, ValueError):
    """An OIDC token that does not verify; the message says why, briefly."""


class CertificatesUnavailable(CloudTasksError, RuntimeError):
    """The OIDC certificates could not be fetched (and no earlier copy is at hand)."""


# -- configuration ---------------------------------------------------------------------


def oidc_audience() -> str:
    """The audience OIDC tokens must carry: ``OIDC_AUDIENCE``, else ``BASE_URL``.

    ``BASE_URL`` is taken without its trailing slash, as the Cloud Tasks transport
    sends it. Empty when neither is set (OIDC then cannot be used).
    """
    return str(conf.OIDC_AUDIENCE or conf.run_url_base or "")


def oidc_issuers() -> tuple[str, ...]:
    """The accepted ``iss`` values (``OIDC_ISSUERS``; a string may list them with commas)."""
    issuers = conf.OIDC_ISSUERS or ()
    if isinstance(issuers, str):
        issuers = issuers.split(",")
    return tuple(str(i).strip() for i in issuers if str(i).strip())


def oidc_configured() -> bool:
    """True when OIDC tokens can be verified: a service account and an audience are set."""
    return bool(conf.OIDC_SERVICE_ACCOUNT) and bool(oidc_audience())


def token_configured() -> bool:
    """True when a shared ``AUTH_TOKEN`` is set."""
    return bool(conf.AUTH_TOKEN)


def is_configured() -> bool:
    """True when some request can pass :func:`authenticate` (a shared token or OIDC).

    The system check ``django_cloudtasks.W001`` reports when this is False.
    """
    return token_configured() or oidc_configured()


# -- the check -------------------------------------------------------------------------


def authenticate(request: HttpRequest) -> Verdict:
    """Check the request's bearer token: the shared ``AUTH_TOKEN`` or an OIDC ID token.

    Missing credentials (or another scheme than ``Bearer``) give 401, refused ones 403;
    with nothing configured every request is refused with 403 (never accepted). When
    the OIDC certificates cannot be fetched the answer is 503, so that Cloud Tasks
    tries again later.
    """
    if not is_configured():
        return Verdict(
            False,
            403,
            "authentication is not configured: set CLOUDTASKS['AUTH_TOKEN'] or "
            "CLOUDTASKS['OIDC_SERVICE_ACCOUNT']",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header or scheme.lower() != "bearer" or not token:
        return Verdict(False, 401, "missing credentials: send 'Authorization: Bearer <token>'")
    if token_configured() and hmac.compare_digest(
        token.encode("utf-8", "surrogatepass"), str(conf.AUTH_TOKEN).encode("utf-8")
    ):
        return Verdict(True, via="token")
    if oidc_configured() and _JWT_SHAPE.fullmatch(token):
        try:
            claims = verify_oidc_token(token)
        except InvalidToken as exc:
            return Verdict(False, 403, f"invalid OIDC token: {exc}")
        except CertificatesUnavailable:
            return Verdict(False, 503, "the OIDC certificates are unavailable; try again later")
        return Verdict(True, via=f"oidc:{claims['email']}")
    return Verdict(False, 403, "invalid credentials")


def verify_oidc_token(token: str) -> Mapping[str, Any]:
    """Verify an OIDC ID token against the configured account and return its claims.

    Raises:
        InvalidToken: for a token that is malformed, not RS256, signed by an unknown
            key, expired, for another audience or issuer, or for another (or an
            unverified) email. The reason is logged.
        CertificatesUnavailable: when the certificates cannot be fetched.
    """
    try:
        return _verify(token)
    except InvalidToken as exc:
        logger.warning("refused an OIDC token: %s", exc.__cause__ or exc)
        raise


def _verify(token: str) -> Mapping[str, Any]:
    try:
        header = jwt.decode_header(token)
    except Exception as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, Mapping) or header.get("alg") != "RS256":
        alg = header.get("alg") if isinstance(header, Mapping) else None
        raise InvalidToken(f"unsupported algorithm {str(alg)[:20]!r}, expected RS256")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed key id")
    url = str(conf.OIDC_CERTS_URL)
    certs = certificates.get(url)
    if kid is not None and kid not in certs:
        certs = certificates.get(url, unknown_key=True)
        if kid not in certs:
            raise InvalidToken("signed by an unknown key")
    audience = oidc_audience()
    try:
        claims = jwt.decode(token, certs=certs, audience=audience, clock_skew_in_seconds=CLOCK_SKEW)
    except Exception as exc:
        raise InvalidToken(_reason(exc)) from exc
    if not isinstance(claims, Mapping):
        raise InvalidToken("malformed claims")
    if claims.get("iss") not in oidc_issuers():
        raise InvalidToken("wrong issuer")
    email = claims.get("email")
    expected = str(conf.OIDC_SERVICE_ACCOUNT)
    if not isinstance(email, str) or email.lower() != expected.lower():
        raise InvalidToken("the email is not the configured service account")
    if claims.get("email_verified") is not True:
        raise InvalidToken("the email is not verified")
    return claims


def _reason(exc: Exception) -> str:
    """A short reason for a ``jwt.decode`` failure, without echoing the token."""
    text = str(exc).lower()
    if "expired" in text:
        return "token expired"
    if "too early" in text:
        return "token used before its issue time"
    if "audience" in text:
        return "wrong audience"
    if "signature" in text or "certificate" in text or "key" in text:
        return "bad signature"
    if "claim" in text:
        return "missing claims"
    return "malformed token"


# -- certificates ----------------------------------------------------------------------


def fetch_certificates(url: str) -> tuple[dict[str, str], float]:
    """GET ``url``: the ``{key id: PEM certificate}`` document and its lifetime in seconds.

    The lifetime is the response's ``Cache-Control: max-age``, else
    :data:`DEFAULT_CERTS_TTL`.

    Raises:
        CertificatesUnavailable: on a network error, an HTTP error or a document of
            another shape.
    """
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
            body = response.read(1_000_000)
            cache_control = response.headers.get("Cache-Control", "")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise CertificatesUnavailable(f"could not fetch {url}: {exc}") from exc
    try:
        certs = json.loads(body)
    except ValueError as exc:
        raise CertificatesUnavailable(f"{url} did not answer JSON") from exc
    if not isinstance(certs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in certs.items()
    ):
        raise CertificatesUnavailable(f"{url} did not answer {{key id: PEM certificate}}")
    match = _MAX_AGE.search(cache_control)
    ttl = float(match.group(1)) if match else DEFAULT_CERTS_TTL
    return certs, ttl


@dataclass
class _Entry:
    certs: dict[str, str]
    expires: float
    fetched: float


@dataclass
class CertificateCache:
    """OIDC certificates per URL, kept for their ``max-age`` (between 1 minute and 1 day).

    Thread-safe: one fetch at a time, and concurrent requests wait for it rather than
    fetching too. When a refresh fails, the previous copy stays in use.
    """

    fetch: Callable[[str], tuple[dict[str, str], float]] = fetch_certificates
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str, unknown_key: bool = False) -> dict[str, str]:
        """The certificates at ``url``, fetched when missing or expired.

        ``unknown_key`` asks for a refresh because a token names a key the cached copy
        lacks (Google rotates its keys); it refetches at most once a minute.

        Raises:
            CertificatesUnavailable: when they cannot be fetched and none are cached.
        """
        with self._lock:
            now = self.clock()
            entry = self._entries.get(url)
            fresh = entry is not None and now < entry.expires
            recent = entry is not None and now - entry.fetched < UNKNOWN_KEY_REFRESH
            if entry is not None and fresh and not (unknown_key and not recent):
                return entry.certs
            try:
                certs, ttl = self.fetch(url)
            except CertificatesUnavailable:
                if entry is None:
                    raise
                logger.warning("could not refresh the OIDC certificates; using the cached copy")
                entry.expires = now + MIN_CERTS_TTL
                return entry.certs
            ttl = min(max(ttl, MIN_CERTS_TTL), MAX_CERTS_TTL)
            self._entries[url] = _Entry(certs, now + ttl, now)
            return certs

    def clear(self) -> None:
        """Forget every cached copy."""
        with self._lock:
            self._entries.clear()


#: The process-wide cache :func:`verify_oidc_token` uses.
certificates = CertificateCache()
