"""The scheduler thread and the pool of workers that deliver tasks over HTTP.

The scheduler waits on the state's condition variable until a task is due (a heap per
queue, no polling), takes as many attempts as the queues' token buckets, concurrency
limits and the pool allow, and hands them to workers. A worker sends the request with
``dispatch_deadline`` as timeout and reports the outcome, which completes the task or
schedules its retry by the queue's RetryConfig.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import logging
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable

from .records import AttemptRecord, Dispatch
from .state import EmulatorState
from .task_requests import set_header

logger = logging.getLogger("django_cloudtasks.emulator")

# google.rpc.Code for an HTTP status, as the service reports it in Attempt.response_status.
_RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    409: 10,  # ABORTED
    412: 9,  # FAILED_PRECONDITION
    429: 8,  # RESOURCE_EXHAUSTED
    499: 1,  # CANCELLED
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
_RPC_OK, _RPC_UNKNOWN, _RPC_DEADLINE_EXCEEDED, _RPC_UNAVAILABLE = 0, 2, 4, 14


def record_succeeded(status_code: int | None) -> bool:
    """Whether an HTTP status completes a task (2xx)."""
    return status_code is not None and 200 <= status_code < 300


def rpc_code_for(status_code: int | None, error: str | None) -> int:
    """The google.rpc code recorded for an HTTP status or a transport error."""
    if status_code is None:
        return _RPC_DEADLINE_EXCEEDED if error == "DEADLINE_EXCEEDED" else _RPC_UNAVAILABLE
    if 200 <= status_code < 300:
        return _RPC_OK
    return _RPC_CODES.get(status_code, _RPC_UNKNOWN)


class WorkerPool:
    """Daemon threads running submitted callables, started lazily up to ``max_workers``.

    The caller never has more than ``max_workers`` jobs outstanding, so a job never
    waits for a thread.
    """

    def __init__(self, max_workers: int, name: str = "cloudtasks-emulator-worker") -> None:
        self.max_workers = max_workers
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a worker thread."""
        with self._lock:
            if self._idle == 0 and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                logger.exception("emulator worker failed")
            with self._lock:
                self._idle += 1

    def shutdown(self, timeout: float) -> None:
        """Ask every thread to stop and join them, waiting at most ``timeout`` in all.

        A thread still blocked in a slow HTTP request is left behind (it is a daemon).
        """
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


#: The in-flight bound when none is given: above any sum of queue limits a local run has.
UNBOUNDED_IN_FLIGHT = 100_000
#: How much of a failed answer's body is kept and logged.
BODY_START = 1024


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from now that a ``Retry-After`` value asks for (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class Dispatcher:
    """Runs the scheduler loop and the HTTP workers for one :class:`EmulatorState`.

    ``mint_token(audience, email)`` provides the ``Authorization`` bearer token of tasks
    that ask for an OIDC token. ``max_in_flight`` bounds the attempts in flight over all
    queues (None: only the queues' own limits); ``deadline_cap`` shortens every
    attempt's timeout (a testing option); ``log_failures`` logs each failed delivery.
    """

    def __init__(
        self,
        state: EmulatorState,
        mint_token: Callable[[str, str], str],
        max_in_flight: int | None = None,
        *,
        deadline_cap: float | None = None,
        log_failures: bool = True,
    ) -> None:
        self.state = state
        self.max_workers = max_in_flight or UNBOUNDED_IN_FLIGHT
        self.deadline_cap = deadline_cap
        self.log_failures = log_failures
        self._mint_token = mint_token
        self._pool = WorkerPool(self.max_workers)
        self._busy = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread = threading.Thread(
            target=self._run, name="cloudtasks-emulator-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop scheduling, then join the scheduler and the workers (bounded by timeout)."""
        with self.state.cond:
            self._stopping = True
            self.state.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(timeout)

    def idle(self) -> bool:
        """Whether no attempt is in flight (call with the state lock held)."""
        return self._busy == 0

    def _run(self) -> None:
        cond = self.state.cond
        with cond:
            while not self._stopping:
                jobs, wake_at = self.state.take_ready(self.max_workers - self._busy)
                for job in jobs:
                    self._busy += 1
                    self._pool.submit(functools.partial(self._attempt, job))
                timeout = None if wake_at is None else max(0.0, wake_at - self.state.clock())
                cond.wait(timeout)

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        """This worker thread's kept-alive connection to ``host``."""
        connections: dict[tuple[str, str, int | None], http.client.HTTPConnection]
        connections = self._local.__dict__.setdefault("connections", {})
        key = (scheme, host, port)
        conn = connections.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = connections[key] = cls(host, port)
        return conn

    def _post(self, job: Dispatch, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        """Send one attempt; return the status, ``Retry-After`` and start of the body.

        Reconnects once if a kept-alive connection had gone stale.
        """
        parts = urllib.parse.urlsplit(job.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(parts.scheme, parts.hostname or "127.0.0.1", parts.port)
        timeout = job.timeout
        if self.deadline_cap is not None:
            timeout = min(timeout, self.deadline_cap)
        for reused in (conn.sock is not None, False):
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request(job.method, path, body=job.body or None, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.will_close:
                    conn.close()
                return int(response.status), response.getheader("Retry-After"), body[:BODY_START]
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if not reused:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, job: Dispatch) -> None:
        headers = dict(job.headers)
        if job.oidc_email is not None:
            token = self._mint_token(job.oidc_audience or job.url, job.oidc_email)
            set_header(headers, "Authorization", f"Bearer {token}")
        elif job.oauth_email is not None:
            # An access token only Google APIs would accept: the emulator cannot mint one.
            set_header(headers, "Authorization", f"Bearer emulator-oauth-token.{job.oauth_email}")
        status_code: int | None = None
        error: str | None = None
        retry_after: str | None = None
        body = b""
        started = self.state.clock()
        try:
            status_code, retry_after, body = self._post(job, headers)
        except TimeoutError:
            error = "DEADLINE_EXCEEDED"
        except (OSError, http.client.HTTPException) as exc:
            error = f"UNAVAILABLE: {exc.__class__.__name__}"
        finished = self.state.clock()
        record = AttemptRecord(
            task_name=job.task.name,
            queue_name=job.queue.name,
            url=job.url,
            method=job.method,
            attempt=job.attempt,
            status_code=status_code,
            error=error,
            started_at=started,
            finished_at=finished,
            headers=headers,
            retry_after=parse_retry_after(retry_after, finished),
            response_body=b"" if record_succeeded(status_code) else body,
        )
        outcome = status_code if status_code is not None else error
        if self.log_failures and not record.succeeded:
            logger.warning(
                "delivery failed: %s %s -> %s (attempt %d of %s): %s",
                job.method,
                job.url,
                outcome,
                job.attempt,
                job.task.name,
                body[:200].decode("utf-8", "replace") or "(no body)",
            )
        else:
            logger.info(
                "attempt %d of %s -> %s (%.3fs)",
                job.attempt,
                job.task.name,
                outcome,
                finished - started,
            )
        with self.state.cond:
            self._busy -= 1
            self.state.finish(job, record, rpc_code_for(status_code, error))
            self.state.cond.notify_all()
