"""Transports: how ready nodes reach the run endpoint. One instance per process."""

from __future__ import annotations

import threading
from typing import Any

from django_cloudtasks.conf import TRANSPORTS, conf
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.transports.base import Dispatch, Transport

__all__ = ["Dispatch", "Transport", "get_transport", "reset_transport"]

_lock = threading.Lock()
_instances: dict[str, Transport] = {}


def get_transport() -> Transport:
    """The process-wide transport named by the ``TRANSPORT`` setting.

    Raises:
        ConfigurationError: for an unknown transport name.
    """
    name = str(conf.TRANSPORT)
    transport = _instances.get(name)
    if transport is not None:
        return transport
    with _lock:
        if name not in _instances:
            _instances[name] = _build(name)
        return _instances[name]


def _build(name: str) -> Transport:
    if name == "eager":
        from django_cloudtasks.transports.eager import EagerTransport

        return EagerTransport()
    if name == "memory":
        from django_cloudtasks.transports.memory import MemoryTransport

        return MemoryTransport()
    if name == "cloudtasks":
        from django_cloudtasks.transports.cloudtasks import CloudTasksTransport

        return CloudTasksTransport()
    raise ConfigurationError(
        f"CLOUDTASKS['TRANSPORT'] is {name!r}; use one of {', '.join(TRANSPORTS)}"
    )


def reset_transport(**_: Any) -> None:
    """Close and forget the transports (after a settings change, and in tests)."""
    with _lock:
        for transport in _instances.values():
            transport.close()
        _instances.clear()
