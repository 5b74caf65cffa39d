"""The gRPC face of the emulator: ``google.cloud.tasks.v2.CloudTasks`` over proto-plus types.

Methods the emulator does not serve (IAM, batch, CMEK) answer UNIMPLEMENTED, which
gRPC does by itself for unregistered methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.cloud import tasks_v2
from google.protobuf import empty_pb2

from .errors import EmulatorError
from .state import EmulatorState

SERVICE_NAME = "google.cloud.tasks.v2.CloudTasks"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def _translate_errors(
    method: Callable[[Any, _Request], _Response],
) -> Callable[[Any, _Request, grpc.ServicerContext], _Response]:
    """Run ``method(self, request)``; an EmulatorError aborts the call with its code."""

    @functools.wraps(method)
    def wrapper(self: Any, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request)
        except EmulatorError as exc:
            context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    return wrapper


class CloudTasksService:
    """The RPC handlers, each a thin translation onto :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    @_translate_errors
    def create_queue(self, request: tasks_v2.CreateQueueRequest) -> tasks_v2.Queue:
        """CreateQueue."""
        return self.state.create_queue(request.parent, request.queue)

    @_translate_errors
    def get_queue(self, request: tasks_v2.GetQueueRequest) -> tasks_v2.Queue:
        """GetQueue."""
        return self.state.get_queue(request.name)

    @_translate_errors
    def list_queues(self, request: tasks_v2.ListQueuesRequest) -> tasks_v2.ListQueuesResponse:
        """ListQueues, with the ``state`` and ``name`` filters."""
        queues, token = self.state.list_queues(
            request.parent, request.page_size, request.page_token, request.filter
        )
        return tasks_v2.ListQueuesResponse(queues=queues, next_page_token=token)

    @_translate_errors
    def update_queue(self, request: tasks_v2.UpdateQueueRequest) -> tasks_v2.Queue:
        """UpdateQueue, honouring ``update_mask``."""
        paths = list(request.update_mask.paths) if "update_mask" in request else []
        return self.state.update_queue(request.queue, paths)

    @_translate_errors
    def delete_queue(self, request: tasks_v2.DeleteQueueRequest) -> empty_pb2.Empty:
        """DeleteQueue."""
        self.state.delete_queue(request.name)
        return empty_pb2.Empty()

    @_translate_errors
    def purge_queue(self, request: tasks_v2.PurgeQueueRequest) -> tasks_v2.Queue:
        """PurgeQueue."""
        return self.state.purge_queue(request.name)

    @_translate_errors
    def pause_queue(self, request: tasks_v2.PauseQueueRequest) -> tasks_v2.Queue:
        """PauseQueue."""
        return self.state.set_queue_state(request.name, tasks_v2.Queue.State.PAUSED)

    @_translate_errors
    def resume_queue(self, request: tasks_v2.ResumeQueueRequest) -> tasks_v2.Queue:
        """ResumeQueue."""
        return self.state.set_queue_state(request.name, tasks_v2.Queue.State.RUNNING)

    @_translate_errors
    def create_task(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:
        """CreateTask."""
        return self.state.create_task(request.parent, request.task, request.response_view)

    @_translate_errors
    def get_task(self, request: tasks_v2.GetTaskRequest) -> tasks_v2.Task:
        """GetTask."""
        return self.state.get_task(request.name, request.response_view)

    @_translate_errors
    def list_tasks(self, request: tasks_v2.ListTasksRequest) -> tasks_v2.ListTasksResponse:
        """ListTasks."""
        tasks, token = self.state.list_tasks(
            request.parent, request.response_view, request.page_size, request.page_token
        )
        return tasks_v2.ListTasksResponse(tasks=tasks, next_page_token=token)

    @_translate_errors
    def delete_task(self, request: tasks_v2.DeleteTaskRequest) -> empty_pb2.Empty:
        """DeleteTask."""
        self.state.delete_task(request.name)
        return empty_pb2.Empty()

    @_translate_errors
    def run_task(self, request: tasks_v2.RunTaskRequest) -> tasks_v2.Task:
        """RunTask."""
        return self.state.run_task(request.name, request.response_view)


def _handler(
    method: Callable[..., Any], request_type: Any, response_serializer: Callable[[Any], bytes]
) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request_type.deserialize,
        response_serializer=response_serializer,
    )


def build_handler(state: EmulatorState) -> grpc.GenericRpcHandler:
    """The generic handler serving the Cloud Tasks v2 service on ``state``."""
    service = CloudTasksService(state)
    queue_out = tasks_v2.Queue.serialize
    task_out = tasks_v2.Task.serialize
    empty_out = empty_pb2.Empty.SerializeToString
    handlers = {
        "CreateQueue": _handler(service.create_queue, tasks_v2.CreateQueueRequest, queue_out),
        "GetQueue": _handler(service.get_queue, tasks_v2.GetQueueRequest, queue_out),
        "ListQueues": _handler(
            service.list_queues, tasks_v2.ListQueuesRequest, tasks_v2.ListQueuesResponse.serialize
        ),
        "UpdateQueue": _handler(service.update_queue, tasks_v2.UpdateQueueRequest, queue_out),
        "DeleteQueue": _handler(service.delete_queue, tasks_v2.DeleteQueueRequest, empty_out),
        "PurgeQueue": _handler(service.purge_queue, tasks_v2.PurgeQueueRequest, queue_out),
        "PauseQueue": _handler(service.pause_queue, tasks_v2.PauseQueueRequest, queue_out),
        "ResumeQueue": _handler(service.resume_queue, tasks_v2.ResumeQueueRequest, queue_out),
        "CreateTask": _handler(service.create_task, tasks_v2.CreateTaskRequest, task_out),
        "GetTask": _handler(service.get_task, tasks_v2.GetTaskRequest, task_out),
        "ListTasks": _handler(
            service.list_tasks, tasks_v2.ListTasksRequest, tasks_v2.ListTasksResponse.serialize
        ),
        "DeleteTask": _handler(service.delete_task, tasks_v2.DeleteTaskRequest, empty_out),
        "RunTask": _handler(service.run_task, tasks_v2.RunTaskRequest, task_out),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
