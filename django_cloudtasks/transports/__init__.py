"""Transports: how ready nodes reach the run endpoint. One instance per process.

``CLOUDTASKS["TRANSPORT"]`` is the dotted path of a :class:`Transport` subclass, or
one of the short names of :data:`~django_cloudtasks.conf.TRANSPORTS`. A transport
that runs deliveries in this process (eager, memory) is built with the function
that delivers a node, installed by the app (:func:`install_delivery`), so that no
transport imports the runner.
"""

from __future__ import annotations

import threading
from typing import Any

from django.utils.module_loading import import_string

from django_cloudtasks.conf import TRANSPORTS, conf
from django_cloudtasks.exceptions import ConfigurationError
from django_cloudtasks.transports.base import (
    Deliver,
    Dispatch,
    Transport,
    install_delivery,
    installed_delivery,
)

__all__ = [
    "Deliver",
    "Dispatch",
    "Transport",
    "get_transport",
    "install_delivery",
    "reset_transport",
    "transport_class",
]

_lock = threading.Lock()
_instances: dict[str, Transport] = {}


def get_transport() -> Transport:
    """The process-wide transport named by the ``TRANSPORT`` setting.

    Raises:
        ConfigurationError: for a name that is neither a short name nor the dotted
            path of a transport class.
    """
    name = str(conf.TRANSPORT)
    transport = _instances.get(name)
    if transport is not None:
        return transport
    with _lock:
        if name not in _instances:
            _instances[name] = _build(name)
        return _instances[name]


def transport_class(name: Any) -> type[Transport]:
    """The transport class ``name`` (a short name or a dotted path) stands for.

    Raises:
        ConfigurationError: when ``name`` names no transport class.
    """
    path = TRANSPORTS.get(name, name) if isinstance(name, str) else None
    found: Any = None
    if path:
        try:
            found = import_string(path)
        except ImportError:
            found = None
    if not (isinstance(found, type) and issubclass(found, Transport)):
        raise ConfigurationError(
            f"CLOUDTASKS['TRANSPORT'] is {name!r}; use one of {', '.join(TRANSPORTS)}, "
            "or the dotted path of a django_cloudtasks.transports.Transport subclass"
        )
    return found


def _build(name: str) -> Transport:
    cls = transport_class(name)
    if cls.delivers_in_process:
        return cls(deliver=installed_delivery())  # type: ignore[call-arg]
    return cls()


def reset_transport(**_: Any) -> None:
    """Close and forget the transports (after a settings change, and in tests)."""
    with _lock:
        for transport in _instances.values():
            transport.close()
        _instances.clear()
