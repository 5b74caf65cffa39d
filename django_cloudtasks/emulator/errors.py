"""The error the emulator's state raises; the gRPC layer turns it into a status."""

from __future__ import annotations

import grpc


class EmulatorError(Exception):
    """A request the real service would refuse, with the gRPC status code it would use."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> EmulatorError:
    """An INVALID_ARGUMENT error."""
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> EmulatorError:
    """A NOT_FOUND error."""
    return EmulatorError(grpc.StatusCode.NOT_FOUND, message)
