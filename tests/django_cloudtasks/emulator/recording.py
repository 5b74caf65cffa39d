"""A recording HTTP handler and small builders shared by the emulator tests."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.cloud import tasks_v2

LOCATION = "projects/test-project/locations/europe-west1"
_queue_numbers = itertools.count(1)


@dataclass
class Received:
    """A request the handler received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    started: float
    finished: float = 0.0

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Reply:
    """What the handler answers: a status, headers and body after an optional delay.

    With ``until_in_flight``, the answer waits until that many requests are in flight
    at once (at most ``delay`` seconds), so that a concurrency check does not depend
    on how fast a loaded machine starts them.
    """

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    until_in_flight: int = 0


@dataclass
class RecordingHandler:
    """A real HTTP server on 127.0.0.1 that records requests and answers by a script.

    ``script[path]`` is a list of replies used in order (the last one repeats);
    ``default`` answers the other paths.
    """

    server: ThreadingHTTPServer
    script: dict[str, list[Reply]] = field(default_factory=dict)
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "/task") -> str:
        """The URL of ``path`` on this server."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def reply_for(self, path: str) -> Reply:
        """The next scripted reply for ``path``."""
        with self.cond:
            replies = self.script.get(path)
            if not replies:
                return self.default
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def requests_for(self, path: str) -> list[Received]:
        """The requests received on ``path``, in arrival order."""
        with self.cond:
            return [r for r in self.received if r.path == path]

    def wait_for(
        self, count: int, path: str | None = None, timeout: float = 10.0
    ) -> list[Received]:
        """Wait until ``count`` requests (on ``path``, if given) have been answered."""

        def done() -> list[Received]:
            return [r for r in self.received if r.finished and (path is None or r.path == path)]

        with self.cond:
            self.cond.wait_for(lambda: len(done()) >= count, timeout)
            return done()


def handler_class(recorder: Callable[[], RecordingHandler]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            handler = recorder()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            received = Received(
                method=self.command,
                path=self.path,
                headers=dict(self.headers.items()),
                body=body,
                started=time.time(),
            )
            with handler.cond:
                handler.received.append(received)
                handler.in_flight += 1
                handler.max_in_flight = max(handler.max_in_flight, handler.in_flight)
                handler.cond.notify_all()
            reply = handler.reply_for(self.path)
            try:
                if reply.until_in_flight:
                    with handler.cond:
                        handler.cond.wait_for(
                            lambda: handler.max_in_flight >= reply.until_in_flight, reply.delay
                        )
                elif reply.delay:
                    time.sleep(reply.delay)
                with handler.cond:
                    handler.in_flight -= 1
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the emulator gave up waiting (dispatch deadline)
            finally:
                with handler.cond:
                    received.finished = time.time()
                    handler.cond.notify_all()

        do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class HandlerServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def make_queue(
    tasks_client: tasks_v2.CloudTasksClient,
    name: str,
    *,
    rate: float = 0,
    concurrent: int = 0,
    max_attempts: int = 0,
    min_backoff: float | None = None,
    max_backoff: float | None = None,
    max_doublings: int = 0,
) -> tasks_v2.Queue:
    """Create queue ``name`` with the given limits (0/None: service defaults)."""
    retry: dict[str, Any] = {"max_attempts": max_attempts, "max_doublings": max_doublings}
    if min_backoff is not None:
        retry["min_backoff"] = {"seconds": int(min_backoff), "nanos": _nanos(min_backoff)}
    if max_backoff is not None:
        retry["max_backoff"] = {"seconds": int(max_backoff), "nanos": _nanos(max_backoff)}
    return tasks_client.create_queue(
        parent=LOCATION,
        queue={
            "name": name,
            "rate_limits": {
                "max_dispatches_per_second": rate,
                "max_concurrent_dispatches": concurrent,
            },
            "retry_config": retry,
        },
    )


def _nanos(seconds: float) -> int:
    return round((seconds - int(seconds)) * 1e9)


def http_task(url: str, name: str = "", **http: Any) -> dict[str, Any]:
    """A task dict with an HTTP target."""
    task: dict[str, Any] = {"http_request": {"url": url, **http}}
    if name:
        task["name"] = name
    return task


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def new_queue_name() -> str:
    """A queue name no other test uses."""
    return f"{LOCATION}/queues/q-{next(_queue_numbers)}"
