"""gRPC servicer for policy.v1.PolicyService: maps InferenceCore results and errors onto gRPC status codes.

Unary calls report bad input as INVALID_ARGUMENT with the field in the status message and in the trailing
metadata key `x-error-field`; the stream reports it in-band (`StreamInferResponse.error`) so a persistent
session survives one bad observation.

The servicer runs on the asyncio server's event loop: an open stream waiting for its robot's next observation
holds no thread. Only the model work (validation, inference, reset: synchronous and CPU/GPU bound) goes to a
small executor, so however many streams are open, health checks and metadata are answered by the loop at once.
Admission limits (`policy_server.admission`) refuse streams and unary calls beyond what the server should hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from policy_server.admission import Admission, LimitExceeded
from policy_server.auth import bearer_token
from policy_server.batching import BatcherClosed, BatchQueueFull
from policy_server.core import InferenceCore
from policy_server.policy import PolicyError
from protos import policy_pb2 as pb
from protos.codec import WireError

log = logging.getLogger(__name__)
ERROR_FIELD_KEY = "x-error-field"
T = TypeVar("T")
# How long a refused stream waits for its first request before the refusal is sent (see _take_first_request).
REFUSAL_READ_S = 1.0
Context = grpc.aio.ServicerContext[Any, Any]


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
    if isinstance(exc, BatchQueueFull | LimitExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "", str(exc)
    return grpc.StatusCode.INTERNAL, "", f"internal error in policy server: {type(exc).__name__}: {exc}"


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7", "ipv6:[::1]:5" ->
    "ipv6:[::1]"): one robot host reconnecting gets a new port but stays the same client."""
    if peer.startswith("ipv6:["):
        return peer[: peer.index("]") + 1] if "]" in peer else peer
    if peer.startswith("ipv4:"):
        return peer.rpartition(":")[0]
    return peer


def client_identity(context: Context, token_auth: bool) -> str:
    """Who holds a stream, for the per-client limit: the bearer token when auth is on (several machines of one
    deployment share a budget), else the peer's address without its port. The token is kept only as a hash."""
    if token_auth:
        token = bearer_token(context.invocation_metadata()) or ""
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return peer_host(context.peer())


async def _take_first_request(request_iterator: AsyncIterator[Any]) -> None:
    """Read (and drop) a refused stream's first request before answering the refusal. A client that opens a stream
    and writes at once would otherwise have its write cut short by the refusal, and asyncio clients then report
    INTERNAL "Internal error from Core" instead of the status and message the server sent."""
    with contextlib.suppress(Exception):  # no request within the wait, or the client is gone: refuse anyway
        await asyncio.wait_for(anext(request_iterator), REFUSAL_READ_S)


class PolicyServicer:
    """policy.v1.PolicyService on the asyncio server (registered by `add_policy_service`)."""

    def __init__(self, core: InferenceCore, executor: Executor, admission: Admission, *,
                 token_auth: bool = False) -> None:
        self.core = core
        self.admission = admission
        self._executor = executor
        self._token_auth = token_auth

    async def _on_model_executor(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _abort(self, context: Context, exc: Exception) -> NoReturn:
        code, field, message = classify(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("Infer failed: %s", message, exc_info=not isinstance(exc, PolicyError))
        else:
            log.warning("rejected request: %s", message)
        if field:
            context.set_trailing_metadata(((ERROR_FIELD_KEY, field),))
        await context.abort(code, message)

    async def GetMetadata(self, request: pb.GetMetadataRequest, context: Context) -> pb.PolicyMetadata:
        return self.core.metadata  # answered on the loop: never waits behind the model

    async def Infer(self, request: pb.InferRequest, context: Context) -> pb.InferResponse:
        # `context.abort` raises; it is called outside the `try` so its exception is not classified again.
        try:
            if isinstance(request, UndecodableRequest):
                raise request.as_wire_error()
            with self.admission.unary():
                return await self._on_model_executor(self.core.infer, request)
        except Exception as exc:  # every failure becomes a status; the server keeps serving
            error = exc
        await self._abort(context, error)

    async def InferStream(self, request_iterator: AsyncIterator[pb.InferRequest], context: Context) -> None:
        # Served with context.write rather than as an async generator, so that a cancelled call (client gone,
        # deadline) leaves the `with` and frees its stream slot at once, not when a generator is collected.
        try:
            with self.admission.stream(client_identity(context, self._token_auth)):
                await self._serve_stream(request_iterator, context)
            return
        except LimitExceeded as exc:  # raised on entry only: requests on the stream answer errors in-band
            error = exc
        await _take_first_request(request_iterator)
        await self._abort(context, error)

    async def _serve_stream(self, request_iterator: AsyncIterator[pb.InferRequest], context: Context) -> None:
        async for request in request_iterator:
            request_id = 0 if isinstance(request, UndecodableRequest) else request.request_id
            try:
                if isinstance(request, UndecodableRequest):
                    raise request.as_wire_error()
                response = await self._on_model_executor(self.core.infer, request)
            except Exception as exc:
                code, field, message = classify(exc)
                log.warning("stream request %d rejected: %s", request_id, message)
                await context.write(pb.StreamInferResponse(
                    request_id=request_id,
                    error=pb.RequestError(code=code.name, field=field, message=message),
                ))
                continue
            await context.write(pb.StreamInferResponse(request_id=request.request_id, response=response))

    async def Reset(self, request: pb.ResetRequest, context: Context) -> pb.ResetResponse:
        try:
            if isinstance(request, UndecodableRequest):
                raise request.as_wire_error()
            with self.admission.unary():
                await self._on_model_executor(self.core.reset, int(request.episode_index))
            return pb.ResetResponse()
        except Exception as exc:
            error = exc
        await self._abort(context, error)


def add_policy_service(servicer: PolicyServicer, server: grpc.aio.Server) -> None:
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
