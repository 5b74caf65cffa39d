"""The emulator's options: one frozen value, read from a command line or passed in Python.

:class:`EmulatorOptions` is the documented options API. ``add_arguments`` puts the
options on any ``argparse`` parser (the emulator's own command line, or a Django
management command), and :meth:`EmulatorOptions.from_arguments` reads them back from
the parsed values, so neither side depends on the other's parser.

Options marked *testing* loosen or shorten what Cloud Tasks does, to keep test suites
fast; they are off by default, so a plain run behaves like the service.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .names import is_queue_name

DEFAULT_PORT = 8123
#: The command line's cap on attempts in flight: what ``manage.py runserver`` (a listen
#: backlog of 10) takes without resetting connections. 0 lifts it.
LOCAL_MAX_IN_FLIGHT = 10
#: How long a finished or deleted task's name stays taken (the reference: up to 24 h).
DEFAULT_TOMBSTONE_SECONDS = 24 * 3600.0
#: How long a deleted queue's name stays taken (the reference: up to 3 days).
DEFAULT_QUEUE_TOMBSTONE_SECONDS = 3 * 24 * 3600.0


@dataclass(frozen=True)
class EmulatorOptions:
    """Everything that configures one emulator run.

    Attributes:
        host: address to bind (loopback by default).
        port: gRPC port; 0 picks a free one.
        queues: full queue names created at start.
        auto_create_queues: CreateTask on an unknown queue creates it (Cloud Tasks
            answers NOT_FOUND; off by default).
        oidc_issuer: ``iss`` of minted ID tokens (None: ``https://accounts.google.com``).
        oidc_port: port of the OIDC certificates server (0: a free one).
        tombstone_seconds: how long a finished or deleted task's name stays taken.
        queue_tombstone_seconds: how long a deleted queue's name cannot be re-created.
        max_in_flight: attempts in flight over all queues (None or 0: only each queue's
            ``max_concurrent_dispatches`` limits them; the command line defaults to
            :data:`LOCAL_MAX_IN_FLIGHT` and says so when it starts).
        dispatch_deadline_cap: *testing*: every attempt times out after at most this
            many seconds, whatever its task's ``dispatch_deadline`` (None: no cap).
        subsecond_backoffs: *testing*: keep sub-second ``min_backoff``/``max_backoff``
            (Cloud Tasks truncates them to whole seconds).
        log_failures: log every failed delivery (URL, status, start of the body).
        scheduler_time_scale: run the Cloud Scheduler clock this many times faster
            (60: an hourly job fires every minute).
        verbose: log every attempt.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    queues: tuple[str, ...] = ()
    auto_create_queues: bool = False
    oidc_issuer: str | None = None
    oidc_port: int = 0
    tombstone_seconds: float = DEFAULT_TOMBSTONE_SECONDS
    queue_tombstone_seconds: float = DEFAULT_QUEUE_TOMBSTONE_SECONDS
    max_in_flight: int | None = None
    dispatch_deadline_cap: float | None = None
    subsecond_backoffs: bool = False
    log_failures: bool = True
    scheduler_time_scale: float = 1.0
    verbose: bool = False

    @classmethod
    def from_arguments(cls, values: Mapping[str, Any] | argparse.Namespace) -> EmulatorOptions:
        """The options from values parsed by a parser :func:`add_arguments` prepared.

        Keys the options do not know are ignored; a missing or None value keeps the
        default.
        """
        if isinstance(values, argparse.Namespace):
            values = vars(values)
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in values.items() if k in known and v is not None}
        if "queues" in given:
            given["queues"] = tuple(given["queues"])
        if given.get("max_in_flight") == 0:
            given["max_in_flight"] = None
        return cls(**given)


def _queue_name(value: str) -> str:
    if not is_queue_name(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not projects/PROJECT/locations/LOCATION/queues/QUEUE"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser, *, port_help: str | None = None) -> None:
    """Add the emulator's options to ``parser`` (``--verbose`` is left to the caller).

    Every option defaults to None on the parser, so :meth:`EmulatorOptions.from_arguments`
    keeps the defaults of :class:`EmulatorOptions` for options not given.
    """
    defaults = EmulatorOptions()
    parser.add_argument("--host", help=f"address to bind (default {defaults.host})")
    parser.add_argument(
        "--port",
        type=int,
        help=port_help or f"gRPC port, 0 picks a free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--queue",
        dest="queues",
        action="append",
        type=_queue_name,
        metavar="projects/P/locations/L/queues/Q",
        help="create this queue at start (repeatable)",
    )
    parser.add_argument(
        "--auto-create-queues",
        action="store_true",
        default=None,
        help="create unknown queues on CreateTask (Cloud Tasks answers NOT_FOUND)",
    )
    parser.add_argument("--oidc-issuer", help="iss claim of minted OIDC tokens")
    parser.add_argument(
        "--oidc-port",
        type=int,
        help="port of the OIDC certificates server (default: a free one)",
    )
    parser.add_argument(
        "--tombstone-seconds",
        type=float,
        help="how long finished or deleted task names stay taken "
        f"(default {defaults.tombstone_seconds:g})",
    )
    parser.add_argument(
        "--queue-tombstone-seconds",
        type=float,
        help="how long a deleted queue's name cannot be re-created "
        f"(default {defaults.queue_tombstone_seconds:g}, 3 days)",
    )
    parser.add_argument(
        "--time-scale",
        dest="scheduler_time_scale",
        type=float,
        help="run the Cloud Scheduler clock this many times faster (60: an hourly job "
        "fires every minute)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=LOCAL_MAX_IN_FLIGHT,
        help=f"attempts in flight over all queues (default {LOCAL_MAX_IN_FLIGHT}, what "
        "runserver takes without resetting connections; 0: only each queue's "
        "max_concurrent_dispatches, as on Cloud Tasks)",
    )
    parser.add_argument(
        "--dispatch-deadline-cap",
        type=float,
        help="testing: time every attempt out after at most this many seconds",
    )
    parser.add_argument(
        "--subsecond-backoffs",
        action="store_true",
        default=None,
        help="testing: keep sub-second backoffs (Cloud Tasks truncates them to seconds)",
    )
    parser.add_argument(
        "--quiet-failures",
        dest="log_failures",
        action="store_false",
        default=None,
        help="do not log failed deliveries",
    )
