"""``CloudTasksEmulator``: the gRPC server, the dispatcher and the OIDC certs endpoint."""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc

from .dispatcher import Dispatcher
from .oidc import CertsServer, TokenMinter
from .options import EmulatorOptions
from .records import AttemptRecord
from .scheduler import SchedulerEmulator, build_scheduler_handler
from .server import build_handler
from .state import EmulatorState

logger = logging.getLogger("django_cloudtasks.emulator")


class CloudTasksEmulator:
    """A local Cloud Tasks v2 service that delivers HTTP tasks to real endpoints.

    Configure it with an :class:`~.options.EmulatorOptions` (``options=``), with its
    fields as keywords (``CloudTasksEmulator(auto_create_queues=True)``), or both (the
    keywords win). In Python the port defaults to 0 (a free one). ``history_limit``
    bounds :attr:`history` (None: unbounded). The same server speaks the Cloud
    Scheduler v1 API (:attr:`scheduler`), whose clock runs
    ``options.scheduler_time_scale`` times faster than real time.

    Use ``start()``/``stop()`` or ``with CloudTasksEmulator() as emu: ...``.

    Raises:
        TypeError: for a keyword that is not an option.
    """

    def __init__(
        self,
        options: EmulatorOptions | None = None,
        *,
        history_limit: int | None = 100_000,
        **overrides: Any,
    ) -> None:
        base = options if options is not None else EmulatorOptions(port=0)
        if "queues" in overrides:
            overrides["queues"] = tuple(overrides["queues"])
        self.options = options = dataclasses.replace(base, **overrides)
        self.host = options.host
        self._port: int | None = None
        self.state = EmulatorState(options, history_limit=history_limit)
        self.minter = TokenMinter(options.oidc_issuer)
        self._dispatcher = Dispatcher(
            self.state,
            self.minter.mint,
            max_in_flight=options.max_in_flight,
            deadline_cap=options.dispatch_deadline_cap,
            log_failures=options.log_failures,
        )
        self.scheduler = SchedulerEmulator(
            self.minter.mint, time_scale=options.scheduler_time_scale
        )
        self._server: grpc.Server | None = None
        self._certs: CertsServer | None = None
        self._started = False
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> CloudTasksEmulator:
        """Bind and serve in background threads; return self.

        Raises:
            RuntimeError: when started twice or after :meth:`stop`.
            OSError: when the port cannot be bound.
            EmulatorError: for a malformed name in ``queues``.
        """
        if self._started or self._stopped.is_set():
            raise RuntimeError("an emulator starts once; create a new one")
        self._started = True
        for name in self.options.queues:
            self.state.ensure_queue(name)
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=32, thread_name_prefix="cloudtasks-emulator-rpc"
            ),
            # Without this a second emulator would silently share the port.
            options=[("grpc.so_reuseport", 0)],
        )
        server.add_generic_rpc_handlers(
            (build_handler(self.state), build_scheduler_handler(self.scheduler))
        )
        try:
            port = server.add_insecure_port(f"{_bracket(self.host)}:{self.options.port}")
        except RuntimeError as exc:
            raise OSError(f"cannot bind {self.host}:{self.options.port}: {exc}") from exc
        if not port:
            raise OSError(f"cannot bind {self.host}:{self.options.port}")
        self._port = port
        self._certs = CertsServer(self.minter, host=self.host, port=self.options.oidc_port)
        self._certs.start()
        self._dispatcher.start()
        self.scheduler.start()
        server.start()
        self._server = server
        logger.info("Cloud Tasks emulator listening on %s", self.address)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving and dispatching and join the threads. Idempotent.

        Attempts still in flight after ``grace`` seconds are abandoned.
        """
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self._server is not None:
                self._server.stop(grace).wait()
            self._dispatcher.stop(timeout=max(grace, 1.0))
            self.scheduler.stop(timeout=max(grace, 1.0))
            if self._certs is not None:
                self._certs.stop()
            self._stopped.set()
            logger.info("Cloud Tasks emulator stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has run (or ``timeout``); return whether it stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> CloudTasksEmulator:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound gRPC port. Raises RuntimeError before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server, for ``grpc.insecure_channel``."""
        return f"{_bracket(self.host)}:{self.port}"

    @property
    def oidc_certs_url(self) -> str:
        """URL serving ``{kid: PEM certificate}`` for the tokens this emulator mints."""
        if self._certs is None:
            raise RuntimeError("the emulator is not started")
        return self._certs.pem_url

    # -- inspection and helpers ---------------------------------------------------------

    @property
    def history(self) -> list[AttemptRecord]:
        """A snapshot of all delivery attempts so far, oldest first."""
        return self.state.history()

    def clear_history(self) -> None:
        """Forget the recorded attempts."""
        self.state.clear_history()

    def mint_token(self, audience: str, email: str, **claim_overrides: Any) -> str:
        """An RS256 ID token signed by the emulator's key, verifiable at oidc_certs_url."""
        return self.minter.mint(audience, email, **claim_overrides)

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block until no task is scheduled or in flight; False if ``timeout`` ran out.

        Tasks scheduled in the future and tasks of paused queues keep it waiting.
        """
        cond = self.state.cond
        with cond:
            return cond.wait_for(
                lambda: self.state.live_task_count() == 0 and self._dispatcher.idle(), timeout
            )


def _bracket(host: str) -> str:
    """``host`` as it goes before ``:port`` (IPv6 literals need brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
