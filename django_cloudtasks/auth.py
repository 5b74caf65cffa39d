"""Authentication of requests to the endpoints. Without configuration, nothing passes.

Requests carry ``Authorization: Bearer <token>``, where the token is either

* the shared ``AUTH_TOKEN``, compared in constant time; or
* an OIDC ID token that Google (or the emulator) minted for ``OIDC_SERVICE_ACCOUNT``,
  as Cloud Tasks sends when the task has an ``oidc_token``. It is verified with
  ``google.auth.jwt.decode`` against certificates fetched from ``OIDC_CERTS_URL`` and
  cached (never fetched per request): RS256 signature, ``iat``, ``exp`` and ``nbf``,
  a lifetime no longer than Google's hour, audience (``OIDC_AUDIENCE``, else
  ``BASE_URL``), issuer (one of ``OIDC_ISSUERS``), and an ``email`` claim equal to the
  service account (ASCII letters compared without regard to case) with
  ``email_verified`` true.

Each endpoint family (:data:`SCOPES`: ``run`` for run and tracker, ``sweep``,
``revoke``) may accept other service accounts and audiences (``OIDC_SCOPES``), so that
a token minted for one family is refused by the others.

A bearer equal to ``AUTH_TOKEN`` passes; otherwise, when OIDC is configured and the
bearer has the shape of a JWT, it must verify as an OIDC token. Anything else is
refused.
"""

from __future__ import annotations

import hmac
import http.client
import json
import math
import re
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from django.http import HttpRequest
from google.auth import jwt

from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import CloudTasksError
from django_cloudtasks.telemetry import get_logger

logger = get_logger("django_cloudtasks.auth")

#: Seconds of clock difference tolerated on ``iat``, ``nbf``, ``exp`` and the lifetime.
CLOCK_SKEW = 10
#: The lifetime of Google's ID tokens (``exp - iat``); a longer one is refused.
MAX_TOKEN_LIFETIME = 3600
#: How long certificates are kept when the server sends no ``Cache-Control: max-age``.
DEFAULT_CERTS_TTL = 3600.0
#: Bounds on the certificates' lifetime in the cache, whatever the server says.
MIN_CERTS_TTL, MAX_CERTS_TTL = 60.0, 86_400.0
#: A token naming a key the cache lacks refreshes it at most this often (key rotation),
#: counted from the last fetch, whether it succeeded or failed.
UNKNOWN_KEY_REFRESH = 60.0
#: With no copy at hand, a failed fetch is not tried again for this long.
FAILED_FETCH_RETRY = 10.0
#: Seconds allowed to fetch the certificates.
FETCH_TIMEOUT = 10.0

#: Three base64url segments; the signature may be empty (``alg: none`` tokens).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

#: The endpoint families that ``OIDC_SCOPES`` may give their own credentials:
#: ``run`` (run and tracker, called by Cloud Tasks), ``sweep`` (Cloud Scheduler) and
#: ``revoke`` (operators).
SCOPES = ("run", "sweep", "revoke")
#: The keys of one family's entry in ``OIDC_SCOPES``.
SCOPE_KEYS = ("service_accounts", "audiences")


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


@dataclass(frozen=True)
class OidcScope:
    """The OIDC tokens one endpoint family accepts: their ``email`` and ``aud`` claims."""

    service_accounts: tuple[str, ...]
    audiences: tuple[str, ...]


def oidc_audience() -> str:
    """The default audience OIDC tokens must carry: ``OIDC_AUDIENCE``, else ``BASE_URL``.

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


def oidc_scope(scope: str = "run") -> OidcScope:
    """The service accounts and audiences endpoint family ``scope`` accepts.

    ``OIDC_SCOPES[scope]`` may set ``service_accounts`` and ``audiences`` (lists of
    strings); each one left out falls back to ``OIDC_SERVICE_ACCOUNT`` and
    :func:`oidc_audience`. Settings of another shape accept nothing (the system check
    ``django_cloudtasks.E007`` reports them).
    """
    scopes = conf.OIDC_SCOPES or {}
    entry = scopes.get(scope, {}) if isinstance(scopes, Mapping) else None
    if not isinstance(entry, Mapping):
        return OidcScope(service_accounts=(), audiences=())
    default_account = str(conf.OIDC_SERVICE_ACCOUNT or "")
    accounts = _strings(entry.get("service_accounts", [default_account]))
    audiences = _strings(entry.get("audiences", [oidc_audience()]))
    return OidcScope(service_accounts=accounts, audiences=audiences)


def _strings(value: Any) -> tuple[str, ...]:
    """The non-empty strings of a list or tuple; nothing for any other shape."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return ()
    return tuple(v.strip() for v in value if v.strip())


def oidc_configured(scope: str = "run") -> bool:
    """True when OIDC tokens can be verified for ``scope``: an account and an audience."""
    accepted = oidc_scope(scope)
    return bool(accepted.service_accounts) and bool(accepted.audiences)


def token_configured() -> bool:
    """True when a shared ``AUTH_TOKEN`` is set."""
    return bool(conf.AUTH_TOKEN)


def is_configured(scope: str = "run") -> bool:
    """True when some request to ``scope`` can pass :func:`authenticate`.

    The system check ``django_cloudtasks.W001`` reports when this is False for ``run``.
    """
    return token_configured() or oidc_configured(scope)


# -- the check -------------------------------------------------------------------------


def authenticate(request: HttpRequest, scope: str = "run") -> Verdict:
    """Check the request's bearer token: the shared ``AUTH_TOKEN`` or an OIDC ID token.

    ``scope`` is the endpoint family (one of :data:`SCOPES`) whose OIDC credentials
    apply. Missing credentials (or another scheme than ``Bearer``) give 401, refused
    ones 403; with nothing configured every request is refused with 403 (never
    accepted). When the OIDC certificates cannot be fetched the answer is 503, so that
    Cloud Tasks tries again later.
    """
    if not is_configured(scope):
        return Verdict(
            False,
            403,
            "authentication is not configured: set CLOUDTASKS['AUTH_TOKEN'] or "
            "CLOUDTASKS['OIDC_SERVICE_ACCOUNT']"
            + (f" (or OIDC_SCOPES[{scope!r}])" if scope in (conf.OIDC_SCOPES or {}) else ""),
        )
    header = request.headers.get("Authorization", "")
    auth_scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header or auth_scheme.lower() != "bearer" or not token:
        return Verdict(False, 401, "missing credentials: send 'Authorization: Bearer <token>'")
    if token_configured() and hmac.compare_digest(
        token.encode("utf-8", "surrogatepass"), str(conf.AUTH_TOKEN).encode("utf-8")
    ):
        return Verdict(True, via="token")
    if oidc_configured(scope) and _JWT_SHAPE.fullmatch(token):
        try:
            claims = verify_oidc_token(token, scope)
        except InvalidToken as exc:
            return Verdict(False, 403, f"invalid OIDC token: {exc}")
        except CertificatesUnavailable:
            return Verdict(False, 503, "the OIDC certificates are unavailable; try again later")
        return Verdict(True, via=f"oidc:{claims['email']}")
    return Verdict(False, 403, "invalid credentials")


def verify_oidc_token(token: str, scope: str = "run") -> Mapping[str, Any]:
    """Verify an OIDC ID token against the accounts ``scope`` accepts; return its claims.

    Raises:
        InvalidToken: for a token that is malformed, not RS256, signed by an unknown
            key, expired, not yet valid, valid for longer than Google's hour, for
            another audience or issuer, or for another (or an unverified) email. The
            reason is logged.
        CertificatesUnavailable: when the certificates cannot be fetched.
    """
    try:
        return _verify(token, oidc_scope(scope))
    except InvalidToken as exc:
        logger.warning("refused an OIDC token for %s: %s", scope, exc.__cause__ or exc)
        raise


def _verify(token: str, accepted: OidcScope) -> Mapping[str, Any]:
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
    try:
        claims = jwt.decode(
            token,
            certs=certs,
            audience=list(accepted.audiences),
            clock_skew_in_seconds=CLOCK_SKEW,
        )
    except Exception as exc:
        raise InvalidToken(_reason(exc)) from exc
    if not isinstance(claims, Mapping):
        raise InvalidToken("malformed claims")
    _check_times(claims)
    if claims.get("iss") not in oidc_issuers():
        raise InvalidToken("wrong issuer")
    email = claims.get("email")
    expected = {_ascii_lower(account) for account in accepted.service_accounts}
    if not isinstance(email, str) or _ascii_lower(email) not in expected:
        raise InvalidToken("the email is not the configured service account")
    if claims.get("email_verified") is not True:
        raise InvalidToken("the email is not verified")
    return claims


def _check_times(claims: Mapping[str, Any]) -> None:
    """Refuse a token valid for longer than Google's hour, or used before its ``nbf``.

    ``jwt.decode`` has checked that ``iat`` and ``exp`` are present and current.
    """
    issued, expires, not_before = claims.get("iat"), claims.get("exp"), claims.get("nbf")
    if not _is_number(issued) or not _is_number(expires):
        raise InvalidToken("malformed claims")
    if expires - issued > MAX_TOKEN_LIFETIME + CLOCK_SKEW:
        raise InvalidToken(f"token lifetime over {MAX_TOKEN_LIFETIME} seconds")
    if not_before is not None:
        if not _is_number(not_before):
            raise InvalidToken("malformed claims")
        if time.time() + CLOCK_SKEW < not_before:
            raise InvalidToken("token used before its not-before time")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ascii_lower(text: str) -> str:
    """``text`` with A-Z lowered and nothing else changed: e-mail addresses are ASCII.

    ``str.lower()`` would also map look-alikes such as the Kelvin sign to ``k``.
    """
    return text.translate(_ASCII_LOWER)


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


@dataclass
class CertificateCache:
    """OIDC certificates per URL, kept for their ``max-age`` (between 1 minute and 1 day).

    Thread-safe: one fetch at a time, and concurrent requests that need it wait for it
    rather than fetching too. Requests whose key the copy at hand holds never wait:
    while another request refreshes, they use that copy. When a refresh fails, the
    previous copy stays in use. Fetches are rate-limited whether they succeed or fail:
    unknown keys refresh at most once per :data:`UNKNOWN_KEY_REFRESH`, and with no copy
    at hand a failed fetch is retried after :data:`FAILED_FETCH_RETRY`.
    """

    fetch: Callable[[str], tuple[dict[str, str], float]] = fetch_certificates
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _attempts: dict[str, float] = field(default_factory=dict)
    _failed: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str, unknown_key: bool = False) -> dict[str, str]:
        """The certificates at ``url``, fetched when missing or expired.

        ``unknown_key`` asks for a refresh because a token names a key the cached copy
        lacks (Google rotates its keys); it refetches at most once a minute.

        Raises:
            CertificatesUnavailable: when they cannot be fetched and none are cached.
        """
        entry = self._entries.get(url)
        if entry is not None and not self._stale(url, entry, unknown_key):
            return entry.certs
        if entry is not None and not unknown_key:
            # Expired: refresh unless another request is at it; the old copy serves
            # meanwhile (Google publishes new keys well before it signs with them).
            if not self._lock.acquire(blocking=False):
                return entry.certs
        else:
            self._lock.acquire()
        try:
            return self._refresh(url, unknown_key)
        finally:
            self._lock.release()

    def _stale(self, url: str, entry: _Entry, unknown_key: bool) -> bool:
        now = self.clock()
        if now >= entry.expires:
            return True
        return unknown_key and now - self._attempts.get(url, -math.inf) >= UNKNOWN_KEY_REFRESH

    def _refresh(self, url: str, unknown_key: bool) -> dict[str, str]:
        """Fetch under the lock, unless the request that held it already did."""
        entry = self._entries.get(url)
        if entry is not None and not self._stale(url, entry, unknown_key):
            return entry.certs
        now = self.clock()
        if entry is None and url in self._failed:
            waited = now - self._attempts[url]
            if waited < FAILED_FETCH_RETRY:
                raise CertificatesUnavailable(
                    f"could not fetch {url} {waited:.0f} s ago; not trying again yet"
                )
        self._attempts[url] = now
        try:
            certs, ttl = self.fetch(url)
        except CertificatesUnavailable:
            self._failed.add(url)
            if entry is None:
                raise
            logger.warning("could not refresh the OIDC certificates; using the cached copy")
            entry.expires = now + MIN_CERTS_TTL
            return entry.certs
        self._failed.discard(url)
        ttl = min(max(ttl, MIN_CERTS_TTL), MAX_CERTS_TTL)
        self._entries[url] = _Entry(certs, now + ttl)
        return certs

    def clear(self) -> None:
        """Forget every cached copy."""
        with self._lock:
            self._entries.clear()
            self._attempts.clear()
            self._failed.clear()


#: The process-wide cache :func:`verify_oidc_token` uses.
certificates = CertificateCache()
