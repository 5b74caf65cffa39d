"""A queue's ``http_target``: what it overrides in every HTTP task it dispatches.

As the v2 reference documents it: ``uri_override`` replaces parts of the task's URL
(scheme, host, port, path, query), always or only where the task's URL lacks them
(``IF_NOT_EXISTS``); ``http_method`` replaces the method (a GET's body is not sent);
``header_overrides`` set headers; an ``oidc_token`` or ``oauth_token`` replaces the
task's authorization.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass
from typing import Any

from google.cloud import tasks_v2

_SCHEMES = {tasks_v2.UriOverride.Scheme.HTTP: "http", tasks_v2.UriOverride.Scheme.HTTPS: "https"}
_IF_NOT_EXISTS = tasks_v2.UriOverride.UriOverrideEnforceMode.IF_NOT_EXISTS


@dataclass(frozen=True)
class HttpTarget:
    """What every attempt of a task sends, read once from its ``http_request``."""

    url: str
    method: int
    headers: dict[str, str]
    body: bytes
    oidc_email: str | None
    oidc_audience: str | None
    oauth_email: str | None = None

    @classmethod
    def of(cls, pb: Any) -> HttpTarget:
        """From the protobuf of an ``HttpRequest``."""
        oidc = pb.oidc_token if pb.HasField("oidc_token") else None
        oauth = pb.oauth_token if pb.HasField("oauth_token") else None
        return cls(
            url=pb.url,
            method=pb.http_method,
            headers=dict(pb.headers),
            body=bytes(pb.body),
            oidc_email=oidc.service_account_email if oidc is not None else None,
            oidc_audience=oidc.audience if oidc is not None else None,
            oauth_email=oauth.service_account_email if oauth is not None else None,
        )


@dataclass(frozen=True)
class QueueOverride:
    """The parts of a queue's ``http_target`` that change its tasks' requests."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    query: str | None = None
    only_if_missing: bool = False
    method: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    oidc: tuple[str, str] | None = None
    oauth_email: str | None = None

    @classmethod
    def of(cls, queue: tasks_v2.Queue) -> QueueOverride | None:
        """The override of ``queue``, or None when its ``http_target`` sets nothing."""
        if "http_target" not in queue:
            return None
        pb: Any = tasks_v2.HttpTarget.pb(queue.http_target)
        override = cls(
            method=pb.http_method or None,
            headers=tuple((h.header.key, h.header.value) for h in pb.header_overrides),
            oidc=(pb.oidc_token.service_account_email, pb.oidc_token.audience)
            if pb.HasField("oidc_token")
            else None,
            oauth_email=pb.oauth_token.service_account_email
            if pb.HasField("oauth_token")
            else None,
        )
        if pb.HasField("uri_override"):
            uri = pb.uri_override
            override = dataclasses.replace(
                override,
                scheme=_SCHEMES.get(uri.scheme),
                host=uri.host or None,
                port=int(uri.port) or None,
                path=(uri.path_override.path or "/") if uri.HasField("path_override") else None,
                query=uri.query_override.query_params if uri.HasField("query_override") else None,
                only_if_missing=uri.uri_override_enforce_mode == _IF_NOT_EXISTS,
            )
        return None if override == cls() else override

    def apply(self, target: HttpTarget) -> HttpTarget:
        """``target`` as this queue dispatches it."""
        changes: dict[str, Any] = {"url": self._url(target.url)}
        if self.method is not None:
            changes["method"] = self.method
        if self.headers:
            headers = dict(target.headers)
            for key, value in self.headers:
                for existing in [k for k in headers if k.lower() == key.lower()]:
                    del headers[existing]
                headers[key] = value
            changes["headers"] = headers
        if self.oidc is not None:
            email, audience = self.oidc
            changes.update(oidc_email=email, oidc_audience=audience or None, oauth_email=None)
        elif self.oauth_email is not None:
            changes.update(oidc_email=None, oidc_audience=None, oauth_email=self.oauth_email)
        return dataclasses.replace(target, **changes)

    def _url(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        keep = self.only_if_missing
        scheme = parts.scheme if keep or self.scheme is None else self.scheme
        host = parts.hostname or ""
        if not keep and self.host is not None:
            host = self.host
        port = parts.port
        if self.port is not None and not (keep and port is not None):
            port = self.port
        path = parts.path
        if self.path is not None and not (keep and path not in ("", "/")):
            path = self.path
        query = parts.query
        if self.query is not None and not (keep and query):
            query = self.query
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        return urllib.parse.urlunsplit((scheme, netloc, path, query, ""))
