"""The Cloud Scheduler v1 API of the emulator: jobs over gRPC, fired on time over HTTP.

It serves ``google.cloud.scheduler.v1.CloudScheduler`` to the real
``google-cloud-scheduler`` client (create, get, list, update with a mask, delete,
pause, resume, run) onto a :class:`SchedulerEmulator`, which keeps the jobs and fires
each on its schedule (:mod:`.scheduler_jobs`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)
from google.protobuf import empty_pb2

from .errors import EmulatorError
from .scheduler_jobs import (
    DEFAULT_DEADLINE,
    Execution,
    SchedulerClock,
    SchedulerEmulator,
    next_fire,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "SERVICE_NAME",
    "CloudSchedulerService",
    "Execution",
    "SchedulerClock",
    "SchedulerEmulator",
    "build_scheduler_handler",
    "next_fire",
    "scheduler_client",
]

SERVICE_NAME = "google.cloud.scheduler.v1.CloudScheduler"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def _translate_errors(
    method: Callable[[Any, _Request], _Response],
) -> Callable[[Any, _Request, grpc.ServicerContext], _Response]:
    @functools.wraps(method)
    def wrapper(self: Any, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request)
        except EmulatorError as exc:
            context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    return wrapper


class CloudSchedulerService:
    """The RPC handlers, each a thin translation onto :class:`SchedulerEmulator`."""

    def __init__(self, scheduler: SchedulerEmulator) -> None:
        self.scheduler = scheduler

    @_translate_errors
    def create_job(self, request: scheduler_v1.CreateJobRequest) -> scheduler_v1.Job:
        """CreateJob."""
        return self.scheduler.create_job(request.parent, request.job)

    @_translate_errors
    def get_job(self, request: scheduler_v1.GetJobRequest) -> scheduler_v1.Job:
        """GetJob."""
        return self.scheduler.get_job(request.name)

    @_translate_errors
    def list_jobs(self, request: scheduler_v1.ListJobsRequest) -> scheduler_v1.ListJobsResponse:
        """ListJobs."""
        jobs, token = self.scheduler.list_jobs(
            request.parent, request.page_size, request.page_token
        )
        return scheduler_v1.ListJobsResponse(jobs=jobs, next_page_token=token)

    @_translate_errors
    def update_job(self, request: scheduler_v1.UpdateJobRequest) -> scheduler_v1.Job:
        """UpdateJob, honouring ``update_mask``."""
        paths = list(request.update_mask.paths) if "update_mask" in request else []
        return self.scheduler.update_job(request.job, paths)

    @_translate_errors
    def delete_job(self, request: scheduler_v1.DeleteJobRequest) -> empty_pb2.Empty:
        """DeleteJob."""
        self.scheduler.delete_job(request.name)
        return empty_pb2.Empty()

    @_translate_errors
    def pause_job(self, request: scheduler_v1.PauseJobRequest) -> scheduler_v1.Job:
        """PauseJob."""
        return self.scheduler.set_state(request.name, scheduler_v1.Job.State.PAUSED)

    @_translate_errors
    def resume_job(self, request: scheduler_v1.ResumeJobRequest) -> scheduler_v1.Job:
        """ResumeJob."""
        return self.scheduler.set_state(request.name, scheduler_v1.Job.State.ENABLED)

    @_translate_errors
    def run_job(self, request: scheduler_v1.RunJobRequest) -> scheduler_v1.Job:
        """RunJob."""
        return self.scheduler.run_job(request.name)


def build_scheduler_handler(scheduler: SchedulerEmulator) -> grpc.GenericRpcHandler:
    """The generic handler serving the Cloud Scheduler v1 service on ``scheduler``."""
    service = CloudSchedulerService(scheduler)
    job_out = scheduler_v1.Job.serialize

    def handler(method: Callable[..., Any], request_type: Any, out: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request_type.deserialize, response_serializer=out
        )

    handlers = {
        "CreateJob": handler(service.create_job, scheduler_v1.CreateJobRequest, job_out),
        "GetJob": handler(service.get_job, scheduler_v1.GetJobRequest, job_out),
        "ListJobs": handler(
            service.list_jobs,
            scheduler_v1.ListJobsRequest,
            scheduler_v1.ListJobsResponse.serialize,
        ),
        "UpdateJob": handler(service.update_job, scheduler_v1.UpdateJobRequest, job_out),
        "DeleteJob": handler(
            service.delete_job, scheduler_v1.DeleteJobRequest, empty_pb2.Empty.SerializeToString
        ),
        "PauseJob": handler(service.pause_job, scheduler_v1.PauseJobRequest, job_out),
        "ResumeJob": handler(service.resume_job, scheduler_v1.ResumeJobRequest, job_out),
        "RunJob": handler(service.run_job, scheduler_v1.RunJobRequest, job_out),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def scheduler_client(address: str) -> scheduler_v1.CloudSchedulerClient:
    """The real Cloud Scheduler client, connected to ``address`` (``host:port``) without TLS.

    Close it with ``client.transport.close()``.
    """
    channel = grpc.insecure_channel(address)
    return scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
