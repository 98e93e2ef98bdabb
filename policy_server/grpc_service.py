"""gRPC servicer for policy.v1.PolicyService: maps InferenceCore results and errors onto gRPC status codes.

Unary calls report bad input as INVALID_ARGUMENT with the field in the status message and in the trailing
metadata key `x-error-field`; the stream reports it in-band (`StreamInferResponse.error`) so a persistent
session survives one bad observation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from policy_server.batching import BatcherClosed, BatchQueueFull
from policy_server.core import InferenceCore
from policy_server.policy import PolicyError
from protos import policy_pb2 as pb
from protos import policy_pb2_grpc as pb_grpc
from protos.codec import WireError

log = logging.getLogger(__name__)
ERROR_FIELD_KEY = "x-error-field"


@dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request whose bytes are not a valid message, so the servicer can answer
    INVALID_ARGUMENT (gRPC itself would answer an opaque INTERNAL "Exception deserializing request")."""

    message_type: str
    error: str

    def as_wire_error(self) -> WireError:
        return WireError("request", f"not a valid {self.message_type} message ({self.error})")


def lenient_parser(message_cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_cls.FromString(data)
        except (DecodeError, RuntimeWarning, ValueError) as exc:
            return UndecodableRequest(message_cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)

    return parse


def classify(exc: Exception) -> tuple[grpc.StatusCode, str, str]:
    """(status, field, message) for an exception raised while answering a request."""
    if isinstance(exc, WireError):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.field, str(exc)
    if isinstance(exc, PolicyError):
        return grpc.StatusCode.INTERNAL, "", str(exc)
    if isinstance(exc, BatcherClosed):  # shutting down: clients retry (another replica)
        return grpc.StatusCode.UNAVAILABLE, "", str(exc)
    if isinstance(exc, BatchQueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "", str(exc)
    return grpc.StatusCode.INTERNAL, "", f"internal error in policy server: {type(exc).__name__}: {exc}"


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    def _abort(self, context: grpc.ServicerContext, exc: Exception) -> NoReturn:
        code, field, message = classify(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("Infer failed: %s", message, exc_info=not isinstance(exc, PolicyError))
        else:
            log.warning("rejected request: %s", message)
        if field:
            context.set_trailing_metadata(((ERROR_FIELD_KEY, field),))
        context.abort(code, message)

    def GetMetadata(self, request: pb.GetMetadataRequest, context: grpc.ServicerContext) -> pb.PolicyMetadata:
        return self.core.metadata

    def Infer(self, request: pb.InferRequest, context: grpc.ServicerContext) -> pb.InferResponse:
        try:
            if isinstance(request, UndecodableRequest):
                raise request.as_wire_error()
            return self.core.infer(request)
        except Exception as exc:  # every failure becomes a status; the server keeps serving
            self._abort(context, exc)

    def InferStream(
        self, request_iterator: Iterator[pb.InferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StreamInferResponse]:
        for request in request_iterator:
            request_id = 0 if isinstance(request, UndecodableRequest) else request.request_id
            try:
                if isinstance(request, UndecodableRequest):
                    raise request.as_wire_error()
                response = self.core.infer(request)
            except Exception as exc:
                code, field, message = classify(exc)
                log.warning("stream request %d rejected: %s", request_id, message)
                yield pb.StreamInferResponse(
                    request_id=request_id,
                    error=pb.RequestError(code=code.name, field=field, message=message),
                )
                continue
            yield pb.StreamInferResponse(request_id=request.request_id, response=response)

    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.ResetResponse:
        try:
            if isinstance(request, UndecodableRequest):
                raise request.as_wire_error()
            self.core.reset(int(request.episode_index))
        except Exception as exc:
            self._abort(context, exc)
        return pb.ResetResponse()


def add_policy_service(servicer: PolicyServicer, server: grpc.Server) -> None:
    """Register the service like the generated helper does, but with parsers that never raise."""
    handlers = {
        "GetMetadata": grpc.unary_unary_rpc_method_handler(
            servicer.GetMetadata,
            request_deserializer=lenient_parser(pb.GetMetadataRequest),
            response_serializer=pb.PolicyMetadata.SerializeToString,
        ),
        "Infer": grpc.unary_unary_rpc_method_handler(
            servicer.Infer,
            request_deserializer=lenient_parser(pb.InferRequest),
            response_serializer=pb.InferResponse.SerializeToString,
        ),
        "InferStream": grpc.stream_stream_rpc_method_handler(
            servicer.InferStream,
            request_deserializer=lenient_parser(pb.InferRequest),
            response_serializer=pb.StreamInferResponse.SerializeToString,
        ),
        "Reset": grpc.unary_unary_rpc_method_handler(
            servicer.Reset,
            request_deserializer=lenient_parser(pb.ResetRequest),
            response_serializer=pb.ResetResponse.SerializeToString,
        ),
    }
    service = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
