"""The endpoints: run (Cloud Tasks' entry point), tracker, revoke and sweep."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from django_cloudtasks import engine, runner
from django_cloudtasks.auth import authenticate
from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import EnqueueError, NodeNotFound, WrongTask
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry

logger = logging.getLogger("django_cloudtasks.views")

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


class BadRequest(Exception):
    """A request body that cannot be used; answered with 400 (or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json_body(request: HttpRequest) -> dict[str, Any]:
    limit = int(conf.MAX_BODY_BYTES)
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise BadRequest("the Content-Length header is not a number") from None
    if declared > limit:
        raise BadRequest(f"body of {declared} bytes is over the limit of {limit}", 413)
    raw = request.body
    if len(raw) > limit:  # a body without (or with a false) Content-Length
        raise BadRequest(f"body of {len(raw)} bytes is over the limit of {limit}", 413)
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _node_id(value: Any, field: str = "node") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise BadRequest(f"{field!r} must be an id (UUID), got {value!r}") from None


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
    params = request.GET if request.method == "GET" else (request.POST or request.GET)
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
    except Node.DoesNotExist:
        return _error(404, f"no node has the id {task_id}")
    except Workflow.DoesNotExist:
        return _error(404, f"no workflow has the id {chain_id}")
    return JsonResponse({"revoked": revoked, "count": len(revoked)})


@endpoint("POST")
def sweep(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/sweep/``: the sweeper, for Cloud Scheduler."""
    from django_cloudtasks.dispatch import sweep as run_sweep

    report = run_sweep()
    return JsonResponse(
        {"resent": report.resent, "unparked": report.unparked, "failed": report.failed}
    )
