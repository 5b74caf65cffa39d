"""The endpoints: run (Cloud Tasks' entry point), tracker, revoke and sweep."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from django_cloudtasks import engine, runner
from django_cloudtasks.auth import authenticate
from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import NodeNotFound
from django_cloudtasks.models import Node, Workflow
from django_cloudtasks.registry import registry

logger = logging.getLogger("django_cloudtasks.views")


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def authenticated(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """Refuse requests without valid credentials; exempt the view from CSRF."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        verdict = authenticate(request)
        if not verdict.ok:
            return _error(verdict.status, verdict.message)
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)


class BadRequest(Exception):
    """A request body that cannot be used; answered with 400 (or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json_body(request: HttpRequest) -> dict[str, Any]:
    length = int(request.headers.get("Content-Length") or 0)
    if length > int(conf.MAX_BODY_BYTES):
        raise BadRequest(f"body of {length} bytes is over the limit", 413)
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _node_id(value: Any, field: str = "node") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise BadRequest(f"{field!r} must be a node id (UUID), got {value!r}") from None


@require_http_methods(["POST"])
@authenticated
def run(request: HttpRequest, task_name: str) -> JsonResponse:
    """``POST /cloudtasks/run/<task_name>/`` with ``{"node": <id>, "retry": <n>}``."""
    if task_name not in registry:
        return _error(404, f"unknown task {task_name!r}")
    try:
        body = _json_body(request)
        node_id = _node_id(body.get("node"))
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    try:
        outcome = runner.deliver(node_id, task_name=task_name, headers=dict(request.headers))
    except NodeNotFound as exc:
        return _error(404, str(exc))
    except ValueError as exc:
        return _error(400, str(exc))
    return JsonResponse(outcome.as_json(), status=outcome.status)


@require_http_methods(["POST"])
@authenticated
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
    return JsonResponse(outcome.as_json(), status=outcome.status)


@require_http_methods(["GET", "POST"])
@authenticated
def revoke(request: HttpRequest) -> JsonResponse:
    """``GET|POST /cloudtasks/revoke/?task=<node id>`` or ``?chain=<workflow id>``."""
    params = request.GET if request.method == "GET" else (request.POST or request.GET)
    task_id, chain_id = params.get("task"), params.get("chain")
    if bool(task_id) == bool(chain_id):
        return _error(400, "pass exactly one of ?task=<node id> or ?chain=<workflow id>")
    try:
        if task_id:
            node_id = _node_id(task_id, "task")
            if not Node.objects.filter(pk=node_id).exists():
                return _error(404, f"no node has the id {task_id}")
            revoked = engine.revoke_node(node_id)
        else:
            workflow_id = _node_id(chain_id, "chain")
            if not Workflow.objects.filter(pk=workflow_id).exists():
                return _error(404, f"no workflow has the id {chain_id}")
            revoked = engine.revoke_workflow(workflow_id)
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    return JsonResponse({"revoked": revoked, "count": len(revoked)})


@require_http_methods(["POST"])
@authenticated
def sweep(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/sweep/``: the sweeper, for Cloud Scheduler."""
    from django_cloudtasks.dispatch import sweep as run_sweep

    report = run_sweep()
    return JsonResponse(
        {"resent": report.resent, "unparked": report.unparked, "failed": report.failed}
    )
