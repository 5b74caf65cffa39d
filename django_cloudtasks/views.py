"""The endpoints: run (Cloud Tasks' entry point), tracker, revoke and sweep."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from django_cloudtasks import engine, runner
from django_cloudtasks.auth import authenticate
from django_cloudtasks.conf import conf
from django_cloudtasks.dispatch import sweep as run_sweep
from django_cloudtasks.exceptions import (
    BadRequest,
    EnqueueError,
    NodeNotFound,
    WorkflowNotFound,
    WrongTask,
)
from django_cloudtasks.registry import registry

logger = logging.getLogger("django_cloudtasks.views")

#: How deeply a request body may nest lists and objects (results are stored and
#: re-encoded recursively, so a deeper one could exhaust the stack).
MAX_JSON_DEPTH = 100

#: Request headers never handed to task code (``self.request.headers``).
_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def endpoint(*methods: str) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """Make ``view`` an endpoint: only ``methods``, authenticated, CSRF-exempt, non-atomic.

    Other methods get a JSON 405; requests without valid credentials the 401 or 403
    of :func:`~django_cloudtasks.auth.authenticate`. The view never runs inside
    ``ATOMIC_REQUESTS``: a delivery must commit its claim before the task runs and run
    the task outside any transaction.
    """

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = _error(405, f"method {request.method} is not allowed here")
                response["Allow"] = ", ".join(methods)
                return response
            verdict = authenticate(request)
            if not verdict.ok:
                response = _error(verdict.status, verdict.message)
                if verdict.status == 401:
                    response["WWW-Authenticate"] = 'Bearer realm="cloudtasks"'
                return response
            return view(request, *args, **kwargs)

        return transaction.non_atomic_requests(csrf_exempt(wrapper))

    return decorate


def _check_length(request: HttpRequest) -> int:
    """The body size limit, after refusing a declared ``Content-Length`` over it.

    The limit is ``MAX_BODY_BYTES``, or Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` when
    that is lower (Django refuses to read a larger body).
    """
    limit = int(conf.MAX_BODY_BYTES)
    if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None:
        limit = min(limit, int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise BadRequest("the Content-Length header is not a number") from None
    if declared > limit:
        raise BadRequest(f"body of {declared} bytes is over the limit of {limit}", 413)
    return limit


def _json_body(request: HttpRequest) -> dict[str, Any]:
    limit = _check_length(request)
    try:
        raw = request.body
    except SuspiciousOperation:  # over DATA_UPLOAD_MAX_MEMORY_SIZE, undeclared
        raise BadRequest(f"body is over the limit of {limit}", 413) from None
    if len(raw) > limit:  # a body without (or with a false) Content-Length
        raise BadRequest(f"body of {len(raw)} bytes is over the limit of {limit}", 413)
    try:
        body = json.loads(raw or b"null", parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:
        raise BadRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_storable(body)  # first: on Python 3.12+ deep nesting parses without error
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_storable(body: Any) -> None:
    """Refuse what the database cannot store or the engine cannot re-encode.

    Raises:
        BadRequest: for nesting deeper than :data:`MAX_JSON_DEPTH`, a NUL character
            (PostgreSQL refuses it) or an unpaired surrogate (not UTF-8).
    """
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BadRequest("body contains a NUL character (\\u0000), which cannot be stored")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(
                    "body contains an unpaired surrogate, which is not UTF-8"
                ) from None
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((member, depth + 1) for member in item.values())
            else:
                stack.extend((member, depth + 1) for member in item)


def _node_id(value: Any, field: str = "node") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        shown = repr(value) if len(repr(value)) <= 100 else repr(value)[:97] + "..."
        raise BadRequest(f"{field!r} must be an id (UUID), got {shown}") from None


@endpoint("POST")
def run(request: HttpRequest, task_name: str) -> JsonResponse:
    """``POST /cloudtasks/run/<task_name>/`` with ``{"node": <id>, "retry": <n>}``."""
    if task_name not in registry:
        return _error(404, f"unknown task {task_name!r}")
    try:
        body = _json_body(request)
        node_id = _node_id(body.get("node"))
        retry = body.get("retry")
        if retry is not None and (type(retry) is not int or retry < 0):
            raise BadRequest(f"'retry' must be a non-negative integer, got {retry!r}")
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _PRIVATE_HEADERS}
    try:
        outcome = runner.deliver(node_id, task_name=task_name, retries=retry, headers=headers)
    except NodeNotFound as exc:
        return _error(404, str(exc))
    except WrongTask as exc:
        return _error(400, str(exc))
    except EnqueueError as exc:
        return _error(503, str(exc))
    return JsonResponse(outcome.as_json(), status=outcome.status)


@endpoint("POST")
def tracker(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/tracker/``: report the outcome of a node run elsewhere.

    Body: ``{"node": <id>, "status": "success", "result": ...}`` or
    ``{"node": <id>, "status": "failure", "error": {"type", "message", "traceback"}}``.
    """
    try:
        body = _json_body(request)
        node_id = _node_id(body.get("node"))
        status = body.get("status")
        if status not in ("success", "failure"):
            raise BadRequest("'status' must be 'success' or 'failure'")
        error = body.get("error") or {}
        if status == "failure" and not isinstance(error, dict):
            raise BadRequest("'error' must be an object with type and message")
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    try:
        outcome = runner.report(node_id, status, body.get("result"), error)
    except NodeNotFound as exc:
        return _error(404, str(exc))
    except EnqueueError as exc:
        return _error(503, str(exc))
    return JsonResponse(outcome.as_json(), status=outcome.status)


@endpoint("GET", "POST")
def revoke(request: HttpRequest) -> JsonResponse:
    """``GET|POST /cloudtasks/revoke/?task=<node id>`` or ``?chain=<workflow id>``."""
    try:
        params = _revoke_params(request)
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    task_id, chain_id = params.get("task"), params.get("chain")
    if bool(task_id) == bool(chain_id):
        return _error(400, "pass exactly one of ?task=<node id> or ?chain=<workflow id>")
    try:
        if task_id:
            revoked = engine.revoke_node(_node_id(task_id, "task"))
        else:
            revoked = engine.revoke_workflow(_node_id(chain_id, "chain"))
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    except WorkflowNotFound:
        return _error(404, f"no workflow has the id {chain_id}")
    except NodeNotFound:
        return _error(404, f"no node has the id {task_id}")
    return JsonResponse({"revoked": revoked, "count": len(revoked)})


def _revoke_params(request: HttpRequest) -> QueryDict:
    """The query string, or for a POST its form body when it has one."""
    if request.method == "GET":
        return request.GET
    _check_length(request)
    try:
        return request.POST or request.GET
    except (MultiPartParserError, SuspiciousOperation):
        raise BadRequest("the form body cannot be parsed") from None


@endpoint("POST")
def sweep(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/sweep/``: the sweeper, for Cloud Scheduler."""
    report = run_sweep()
    return JsonResponse(
        {"resent": report.resent, "unparked": report.unparked, "failed": report.failed}
    )
