"""The Google Cloud Tasks transport: one HTTP task per delivery, via the real client."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from django_cloudtasks.conf import conf
from django_cloudtasks.exceptions import ConfigurationError, EnqueueError
from django_cloudtasks.telemetry import get_logger
from django_cloudtasks.transports.base import Dispatch, Transport
from django_cloudtasks.transports.fanout import DIRECT_LIMIT, Spawn, shard_of, spawners

logger = get_logger("django_cloudtasks.transports.cloudtasks")

#: Errors worth another try: the request may not have reached Cloud Tasks.
TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.ResourceExhausted,
)
#: Cloud Tasks accepts dispatch deadlines between 15 seconds and 30 minutes.
DEADLINE_RANGE = (15.0, 1800.0)
#: How long a call keeps retrying transient errors: Cloud Tasks, and a local emulator
#: (which answers at once when it runs, so a refused connection fails fast).
RETRY_SECONDS = 30.0
EMULATOR_RETRY_SECONDS = 2.0


class CloudTasksTransport(Transport):
    """Creates one Cloud Task per dispatch with the real ``google-cloud-tasks`` client.

    * The target is ``BASE_URL`` + ``/cloudtasks/run/<task>/`` with a JSON body.
    * The task id is the dispatch's hashed ``cloud_task_id``: a repeated enqueue of
      the same delivery answers ALREADY_EXISTS, which counts as success.
    * ``schedule_time`` carries the ETA, ``dispatch_deadline`` the node's deadline.
    * Requests carry an OIDC token when ``OIDC_SERVICE_ACCOUNT`` is set, otherwise
      the shared ``AUTH_TOKEN`` as a bearer token.
    * Many dispatches (a fan-out) are sent concurrently from a bounded pool; more
      than :data:`~.fanout.DIRECT_LIMIT` go through paced spawner tasks, and a queue
      with ``shards`` spreads them over its shards (see :mod:`.fanout`).
    * ``EMULATOR_HOST`` (or ``CLOUDTASKS_EMULATOR_HOST``) points it at an emulator.
    """

    name = "cloudtasks"
    workers = 16

    def __init__(self, client: tasks_v2.CloudTasksClient | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._retries: dict[float, gretry.Retry] = {}

    # -- clients -----------------------------------------------------------------------

    @property
    def retry(self) -> gretry.Retry:
        """How calls retry transient errors: 30 s on Cloud Tasks, 2 s on an emulator."""
        seconds = EMULATOR_RETRY_SECONDS if conf.EMULATOR_HOST else RETRY_SECONDS
        retry = self._retries.get(seconds)
        if retry is None:
            retry = self._retries[seconds] = gretry.Retry(
                predicate=gretry.if_exception_type(*TRANSIENT),
                initial=0.1,
                maximum=2.0,
                multiplier=2.0,
                timeout=seconds,
            )
        return retry

    @property
    def client(self) -> tasks_v2.CloudTasksClient:
        """The long-lived client of this process, built on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> tasks_v2.CloudTasksClient:
        host = conf.EMULATOR_HOST
        if host:
            # A local emulator: no TLS, and no credentials are looked up (a transport
            # built on an explicit channel ignores them).
            channel = grpc.insecure_channel(str(host))
            return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        return tasks_v2.CloudTasksClient()

    def close(self) -> None:
        """Close the client's channel and the sending pool."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if self._client is not None:
                self._client.transport.close()
                self._client = None

    # -- names ---------------------------------------------------------------------------

    def queue_path(self, queue: str = "") -> str:
        """``projects/P/locations/L/queues/Q`` for ``queue`` (default: ``QUEUE``)."""
        project, location = conf.PROJECT, conf.LOCATION
        if not project or not location:
            raise ConfigurationError(
                "the cloudtasks transport needs CLOUDTASKS['PROJECT'] and ['LOCATION'] "
                "(or TASKAPP_GCP_PROJECT and TASKAPP_GCP_LOCATION)"
            )
        return tasks_v2.CloudTasksClient.queue_path(project, location, queue or conf.QUEUE)

    def task_path(self, dispatch: Dispatch) -> str:
        """The full Cloud Tasks name of ``dispatch`` (on its queue's shard)."""
        return f"{self.queue_path(shard_of(dispatch))}/tasks/{dispatch.cloud_task_id}"

    # -- sending -------------------------------------------------------------------------

    def build_task(self, dispatch: Dispatch) -> tasks_v2.Task:
        """The Cloud Task that delivers ``dispatch``."""
        return tasks_v2.Task.wrap(self._task_pb(dispatch, _TASK_PB()))

    def _task_pb(self, dispatch: Dispatch, task: Any) -> Any:
        # Filled as a plain protobuf: proto-plus costs several times more per field,
        # for every task of a fan-out.
        base = conf.run_url_base
        if not base:
            raise ConfigurationError(
                "the cloudtasks transport needs CLOUDTASKS['BASE_URL'] (TASKAPP_CLOUD_RUN_URL)"
            )
        task.name = self.task_path(dispatch)
        _http(task, f"{base}/cloudtasks/run/{dispatch.task_name}/", dispatch.body(), base)
        if dispatch.traceparent:
            task.http_request.headers["traceparent"] = dispatch.traceparent
        if dispatch.eta is not None:
            task.schedule_time.FromDatetime(dispatch.eta.astimezone(UTC))
        deadline = dispatch.dispatch_deadline or conf.DISPATCH_DEADLINE
        if deadline:
            low, high = DEADLINE_RANGE
            seconds = min(max(float(deadline), low), high)
            task.dispatch_deadline.seconds = int(seconds)
            task.dispatch_deadline.nanos = int((seconds % 1) * 1e9)
        return task

    def send(self, dispatches: Sequence[Dispatch]) -> None:
        """Create a Cloud Task per dispatch, concurrently; ALREADY_EXISTS is success.

        More than :data:`~.fanout.DIRECT_LIMIT` are created by spawner tasks instead,
        paced (see :mod:`.fanout`).

        Raises:
            EnqueueError: listing the dispatches that could not be created (or whose
                spawner could not be).
        """
        if len(dispatches) <= DIRECT_LIMIT:
            self._run_all(dispatches, self._create_one, "create")
            return
        now = datetime.now(UTC)
        spawns = spawners(dispatches)
        errors = self._run_all(spawns, lambda s: self._spawn_one(s, now), "create", raises=False)
        if errors:
            unsent = [d for s, _ in errors for d in s.dispatches]
            self._raise(errors, len(spawns), unsent, "create", what="spawner Cloud Tasks")

    def _spawn_one(self, spawn: Spawn, now: datetime) -> None:
        base = conf.run_url_base
        if not base:
            raise ConfigurationError(
                "the cloudtasks transport needs CLOUDTASKS['BASE_URL'] (TASKAPP_CLOUD_RUN_URL)"
            )
        request = _CREATE_PB(parent=self.queue_path(spawn.queue))
        task = request.task
        task.name = f"{request.parent}/tasks/{spawn.task_id}"
        _http(task, f"{base}/cloudtasks/spawn/", spawn.body(), base)
        if spawn.offset > 0:
            task.schedule_time.FromDatetime(now + timedelta(seconds=spawn.offset))
        task.dispatch_deadline.seconds = int(DEADLINE_RANGE[0]) * 4
        try:
            self.client.create_task(
                request=tasks_v2.CreateTaskRequest.wrap(request), retry=self.retry, timeout=30
            )
        except gexc.AlreadyExists:
            logger.debug("spawner %s already exists", spawn.task_id)

    def cancel(self, dispatches: Sequence[Dispatch]) -> None:
        """Delete the Cloud Tasks of ``dispatches``; NOT_FOUND means already gone."""
        self._run_all(dispatches, self._delete_one, "delete")

    def _create_one(self, dispatch: Dispatch) -> None:
        request = _CREATE_PB(parent=self.queue_path(shard_of(dispatch)))
        self._task_pb(dispatch, request.task)
        try:
            self.client.create_task(
                request=tasks_v2.CreateTaskRequest.wrap(request), retry=self.retry, timeout=30
            )
        except gexc.AlreadyExists:
            logger.debug("task %s already exists", dispatch.cloud_task_id)

    def _delete_one(self, dispatch: Dispatch) -> None:
        with contextlib.suppress(gexc.NotFound):
            self.client.delete_task(name=self.task_path(dispatch), retry=self.retry, timeout=30)

    def describe(self, dispatch: Dispatch) -> str:
        """Cloud Tasks' record of the delivery: its attempts and the last answer."""
        try:
            found = self.client.get_task(name=self.task_path(dispatch), retry=None, timeout=2)
        except gexc.NotFound:
            return "Cloud Tasks no longer has its task (it was answered, or deleted)"
        except Exception:  # a description is best effort: never hide the real error
            return ""
        if not found.dispatch_count:
            due = found.schedule_time
            return f"Cloud Tasks has not sent it yet (due {due:%H:%M:%S} UTC)" if due else ""
        last = found.last_attempt.response_status
        answer = (last.message or f"code {last.code}") if last.code else "no answer yet"
        return f"Cloud Tasks sent it {found.dispatch_count} times; the last attempt: {answer}"

    def _run_all(
        self,
        dispatches: Sequence[Any],
        action: Callable[[Any], None],
        verb: str,
        *,
        raises: bool = True,
    ) -> list[tuple[Any, BaseException]]:
        if not dispatches:
            return []
        errors: list[tuple[Any, BaseException]] = []
        if len(dispatches) == 1:
            try:
                action(dispatches[0])
            except Exception as exc:
                errors.append((dispatches[0], exc))
        else:
            futures = [(d, self._executor().submit(action, d)) for d in dispatches]
            for dispatch, future in futures:
                problem = future.exception()
                if problem is not None:
                    errors.append((dispatch, problem))
        if errors and raises:
            self._raise(errors, len(dispatches), [d for d, _ in errors], verb)
        return errors

    def _raise(
        self,
        errors: list[tuple[Any, BaseException]],
        total: int,
        unsent_dispatches: Sequence[Dispatch],
        verb: str,
        what: str = "Cloud Tasks",
    ) -> None:
        if errors:
            first = errors[0][1]
            summary = f"could not {verb} {len(errors)} of {total} {what}"
            unsent = [d.node_id for d in unsent_dispatches]
            host = conf.EMULATOR_HOST
            cause = first.cause if isinstance(first, gexc.RetryError) else first
            if host and isinstance(cause, gexc.ServiceUnavailable):
                raise EnqueueError(
                    f"{summary}: the Cloud Tasks emulator at {host} (the EMULATOR_HOST "
                    "setting) does not answer; start it with `manage.py cloudtasks_emulator`. "
                    "The workflow is saved and `manage.py cloudtasks_sweep` will resend it. "
                    f"({first})",
                    unsent,
                ) from first
            raise EnqueueError(f"{summary}: {first}", unsent) from first

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="cloudtasks-send"
                )
            return self._pool


def _http(task: Any, url: str, body: Any, base: str) -> None:
    """Make ``task`` a POST of ``body`` (JSON) to ``url``, with the configured credentials."""
    request = task.http_request
    request.http_method = tasks_v2.HttpMethod.POST
    request.url = url
    request.headers["Content-Type"] = "application/json"
    request.body = json.dumps(body).encode()
    account = conf.OIDC_SERVICE_ACCOUNT
    if account:
        request.oidc_token.service_account_email = str(account)
        request.oidc_token.audience = str(conf.OIDC_AUDIENCE or base)
    elif conf.AUTH_TOKEN:
        request.headers["Authorization"] = f"Bearer {conf.AUTH_TOKEN}"


_TASK_PB = tasks_v2.Task.pb()
_CREATE_PB = tasks_v2.CreateTaskRequest.pb()
