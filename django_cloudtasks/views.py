"""The endpoints: run (Cloud Tasks' entry point), spawn, tracker, revoke, sweep and schedules."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from django_cloudtasks import engine, runner
from django_cloudtasks.auth import Verdict, authenticate
from django_cloudtasks.conf import conf
from django_cloudtasks.context import task_headers
from django_cloudtasks.dispatch import sweep as run_sweep
from django_cloudtasks.exceptions import (
    BadRequest,
    EnqueueError,
    NodeNotFound,
    WorkflowNotFound,
    WrongTask,
)
from django_cloudtasks.registry import registry
from django_cloudtasks.schedules import runs as schedule_runs
from django_cloudtasks.schedules.declarations import ScheduleError, get_schedule
from django_cloudtasks.schedules.timing import latest_slot
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports import get_transport
from django_cloudtasks.transports.fanout import decode

logger = get_logger("django_cloudtasks.views")

#: How deeply a request body may nest lists and objects (results are stored and
#: re-encoded recursively, so a deeper one could exhaust the stack).
MAX_JSON_DEPTH = 100

#: The largest ``retry`` a delivery may carry: the range of the node's counter column.
MAX_RETRY = 2_147_483_647


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def endpoint(
    *methods: str, scope: str
) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """Make ``view`` an endpoint: only ``methods``, authenticated, CSRF-exempt, non-atomic.

    Other methods get a JSON 405; requests without valid credentials for the endpoint
    family ``scope`` the 401 or 403 of :func:`~django_cloudtasks.auth.authenticate`.
    The view never runs inside ``ATOMIC_REQUESTS``: a delivery must commit its claim
    before the task runs and run the task outside any transaction.
    """

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            refusal = _refusal(request, methods)
            if refusal is None:
                refusal = _unauthenticated(authenticate(request, scope))
            return refusal if refusal is not None else view(request, *args, **kwargs)

        return transaction.non_atomic_requests(csrf_exempt(wrapper))

    return decorate


def async_endpoint(
    *methods: str, scope: str
) -> Callable[
    [Callable[..., Coroutine[Any, Any, JsonResponse]]],
    Callable[..., Coroutine[Any, Any, JsonResponse]],
]:
    """:func:`endpoint` for an async view; credentials are checked in a thread."""

    def decorate(
        view: Callable[..., Coroutine[Any, Any, JsonResponse]],
    ) -> Callable[..., Coroutine[Any, Any, JsonResponse]]:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            refusal = _refusal(request, methods)
            if refusal is None:
                # A certificate download may block: never in the event loop.
                refusal = _unauthenticated(await sync_to_async(authenticate)(request, scope))
            return refusal if refusal is not None else await view(request, *args, **kwargs)

        return transaction.non_atomic_requests(csrf_exempt(wrapper))

    return decorate


def _refusal(request: HttpRequest, methods: tuple[str, ...]) -> JsonResponse | None:
    """The 405 of a method the endpoint does not take, else None."""
    if request.method in methods:
        return None
    response = _error(405, f"method {request.method} is not allowed here")
    response["Allow"] = ", ".join(methods)
    return response


def _unauthenticated(verdict: Verdict) -> JsonResponse | None:
    """The 401 or 403 of credentials that were refused, else None."""
    if verdict.ok:
        return None
    response = _error(verdict.status, verdict.message)
    if verdict.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="cloudtasks"'
    return response


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
        body = json.loads(raw or b"null", parse_constant=_refuse_constant, parse_float=_finite)
    except NonFinite as exc:
        raise BadRequest(str(exc)) from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:
        raise BadRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_storable(body)  # first: on Python 3.12+ deep nesting parses without error
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


class NonFinite(ValueError):
    """A number JSON cannot carry back: NaN, an infinity, or one too large for a float."""


def _refuse_constant(name: str) -> Any:
    raise NonFinite(f"body contains {name}, which is not JSON and cannot be stored")


def _finite(text: str) -> float:
    """Parse a JSON number with a fraction or exponent, refusing one that overflows.

    ``json.loads`` turns ``1e400`` into ``inf`` without calling ``parse_constant``;
    stored, it would fail to encode (or encode as ``Infinity``, which is not JSON).
    """
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise NonFinite(f"body contains the number {shown}, too large for a float to store")
    return value


def _check_storable(body: Any) -> None:
    """Refuse what the database cannot store or the engine cannot re-encode.

    Raises:
        BadRequest: for nesting deeper than :data:`MAX_JSON_DEPTH`, a NUL character
            (PostgreSQL refuses it) or an unpaired surrogate (not UTF-8). Numbers
            that are not finite never get here: :func:`_finite` refuses them.
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


def _delivery(request: HttpRequest) -> tuple[uuid.UUID, int | None]:
    """The node id and retry number of a delivery's body.

    Raises:
        BadRequest: for a malformed body.
    """
    body = _json_body(request)
    node_id = _node_id(body.get("node"))
    retry = body.get("retry")
    if retry is not None and (type(retry) is not int or not 0 <= retry <= MAX_RETRY):
        shown = repr(retry) if len(repr(retry)) <= 40 else repr(retry)[:37] + "..."
        raise BadRequest(f"'retry' must be an integer from 0 to {MAX_RETRY}, got {shown}")
    return node_id, retry


def _delivery_error(exc: NodeNotFound | WrongTask | EnqueueError) -> JsonResponse:
    """The answer to a delivery that raised: 404 no such node, 400 wrong task, 503 unsent."""
    status = 404 if isinstance(exc, NodeNotFound) else 400 if isinstance(exc, WrongTask) else 503
    return _error(status, str(exc))


#: Why a server may not know a task that was enqueued, and the fix.
UNKNOWN_TASK_HINT = (
    "define the task in (or import it from) the tasks.py module of an installed app: "
    "every process imports those at startup, so every server knows the task"
)


def _unknown_task(task_name: str) -> JsonResponse:
    logger.warning("delivery of unknown task %r: %s", task_name, UNKNOWN_TASK_HINT)
    return _error(404, f"unknown task {task_name!r}; {UNKNOWN_TASK_HINT}")


@endpoint("POST", scope="run")
def run(request: HttpRequest, task_name: str) -> JsonResponse:
    """``POST /cloudtasks/run/<task_name>/`` with ``{"node": <id>, "retry": <n>}``.

    An ``async def`` task is awaited in an event loop of its own (``async_to_sync``);
    under ASGI such a task is routed to :func:`run_async` instead.
    """
    if task_name not in registry:
        return _unknown_task(task_name)
    try:
        node_id, retry = _delivery(request)
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    headers = task_headers(request.headers)
    try:
        outcome = runner.deliver(node_id, task_name=task_name, retries=retry, headers=headers)
    except (NodeNotFound, WrongTask, EnqueueError) as exc:
        return _delivery_error(exc)
    return JsonResponse(outcome.as_json(), status=outcome.status)


@async_endpoint("POST", scope="run")
async def run_async(request: HttpRequest, task_name: str) -> JsonResponse:
    """The run endpoint of an ``async def`` task: ``run`` as an async view.

    Under ASGI the task's coroutine is awaited on the server's event loop, holding no
    thread while it waits; the claim and the settling run in a thread, through
    ``sync_to_async``. Under WSGI Django runs this view in an event loop of its own.
    """
    try:
        node_id, retry = _delivery(request)
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    headers = task_headers(request.headers)
    try:
        outcome = await runner.adeliver(
            node_id, task_name=task_name, retries=retry, headers=headers
        )
    except (NodeNotFound, WrongTask, EnqueueError) as exc:
        return _delivery_error(exc)
    return JsonResponse(outcome.as_json(), status=outcome.status)


@endpoint("POST", scope="run")
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


@endpoint("GET", "POST", scope="revoke")
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


@endpoint("POST", scope="run")
def spawn(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/spawn/`` with ``{"spawn": [...]}``: create a fan-out's batch.

    Sent by a spawner task (see :mod:`~django_cloudtasks.transports.fanout`); answers
    503 when some tasks could not be created, so that Cloud Tasks tries again.
    """
    try:
        dispatches = [decode(entry) for entry in _json_body(request)["spawn"]]
    except BadRequest as exc:
        return _error(exc.status, str(exc))
    except (KeyError, TypeError, ValueError, AttributeError):
        return _error(400, 'body must be {"spawn": [dispatches]}')
    # A node an inline run took (or that finished) before this spawner ran needs no
    # Cloud Task: if that run dies, the redelivery of its origin takes the node over.
    dispatches = engine.unsent(dispatches)
    try:
        get_transport().send(dispatches)
    except EnqueueError as exc:
        return _error(503, str(exc))
    return JsonResponse({"created": len(dispatches)})


@endpoint("POST", scope="sweep")
def sweep(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/sweep/``: the sweeper, for Cloud Scheduler."""
    report = run_sweep()
    flow = engine.sweep_flow()
    purged = engine.purge_expired()
    return JsonResponse(
        {
            "resent": report.resent,
            "unparked": report.unparked,
            "parked": report.parked,
            "failed": report.failed,
            "slots_released": flow.released,
            "waiting_sent": flow.sent,
            "purged_workflows": purged.workflows,
            "purged_nodes": purged.nodes,
        }
    )


#: The header carrying the scheduled time of a Cloud Scheduler call (RFC 3339, UTC).
SCHEDULE_TIME_HEADER = "X-CloudScheduler-ScheduleTime"


@endpoint("POST", scope="sweep")
def schedule(request: HttpRequest, name: str) -> JsonResponse:
    """``POST /cloudtasks/schedule/<name>/``: Cloud Scheduler's call of a schedule.

    The slot is the latest slot at or before the ``X-CloudScheduler-ScheduleTime``
    header's time (now when the header is absent); see
    :func:`~django_cloudtasks.schedules.runs.call`. A slot starts at most one
    workflow, however often it is called; earlier slots that were missed are caught
    up first. Answers 200 with ``{"outcome": "started" | "skipped" | "buffered" |
    "duplicate" | "paused" | "missed" | "idle", ...}``, 404 for an unknown schedule, 400
    for a malformed header, 500 when the schedule's target cannot be started (Cloud
    Scheduler retries).
    """
    try:
        scheduled = get_schedule(name)
    except KeyError:
        return _error(404, f"unknown schedule {name!r}")
    except ScheduleError as exc:
        return _error(500, str(exc))
    now = timezone.now()
    header = request.headers.get(SCHEDULE_TIME_HEADER)
    moment = now
    if header:
        try:
            moment = datetime.fromisoformat(header.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
        except ValueError:
            return _error(400, f"{SCHEDULE_TIME_HEADER} {header[:60]!r} is not an RFC 3339 time")
    try:
        if not header:  # a call from elsewhere belongs to the latest slot
            moment = latest_slot(scheduled, now)
        fired = schedule_runs.call(scheduled, moment, now=now)
    except ScheduleError as exc:
        return _error(500, str(exc))
    except EnqueueError as exc:  # the run is recorded; the sweeper sends its first tasks
        return _error(503, str(exc))
    return JsonResponse(fired.as_json())


@endpoint("POST", scope="sweep")
def schedules_tick(request: HttpRequest) -> JsonResponse:
    """``POST /cloudtasks/schedules/tick/``: catch up missed slots, start buffered runs."""
    return JsonResponse(schedule_runs.tick().as_json())
