"""A local Cloud Tasks v2 emulator: gRPC API, HTTP dispatch, retries, rate limits, OIDC.

Importable without Django::

    from django_cloudtasks.emulator import CloudTasksEmulator, emulator_client

    with CloudTasksEmulator() as emu:
        client = emulator_client(emu.address)
        ...
"""

from __future__ import annotations

from .cli import main
from .client import emulator_client
from .emulator import CloudTasksEmulator
from .errors import EmulatorError
from .options import EmulatorOptions
from .records import AttemptRecord

__all__ = [
    "AttemptRecord",
    "CloudTasksEmulator",
    "EmulatorError",
    "EmulatorOptions",
    "emulator_client",
    "main",
]
