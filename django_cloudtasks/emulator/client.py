"""A ``CloudTasksClient`` talking to an emulator over an insecure gRPC channel."""

from __future__ import annotations

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport


def emulator_client(address: str) -> tasks_v2.CloudTasksClient:
    """The real Cloud Tasks client, connected to ``address`` (``host:port``) without TLS.

    No credentials are looked up: a transport built on an explicit channel ignores
    them. Close it with ``client.transport.close()``.
    """
    channel = grpc.insecure_channel(address)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
